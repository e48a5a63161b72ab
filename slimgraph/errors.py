"""Errors raised by slimgraph. Every message says what went wrong and what to do."""

__all__ = [
    "SlimGraphError",
    "TraceError",
    "RuleTableError",
    "PlanError",
    "RewriteError",
    "ModelSpecError",
    "UsageError",
    "OutputError",
    "RecoverError",
    "ExportError",
    "ExportArgumentError",
    "ModelCallError",
    "ParityError",
    "BatchError",
    "WeightsError",
    "LoadError",
]


class SlimGraphError(Exception):
    """Base class of every error slimgraph raises on purpose."""


class TraceError(SlimGraphError):
    """The model could not be traced into an FX graph."""


class RuleTableError(SlimGraphError):
    """A table under ``rules/`` is malformed (unknown kind, typo'd key, duplicate op)."""


class PlanError(SlimGraphError):
    """A plan does not fit the graph it is applied to, or the config is inconsistent."""


class RewriteError(SlimGraphError):
    """A validated plan could not be applied; the model was left unchanged."""


class ModelSpecError(SlimGraphError):
    """A model spec such as ``torchvision:resnet50`` could not be resolved."""


class UsageError(SlimGraphError):
    """The command line asks for something impossible (a bad flag, value or path)."""


class OutputError(UsageError):
    """An output path slimgraph will not write: a symbolic link, or a directory that holds
    files when overwriting was not asked for."""


class RecoverError(SlimGraphError):
    """Fine-tuning cannot run: no data, or outputs that the distillation cannot compare."""


class ExportError(SlimGraphError):
    """The model could not be turned into a valid, checked ONNX file."""


class ExportArgumentError(ExportError):
    """An argument of ``export_onnx`` is unusable (path, inputs, quantize, opset, rtol)."""


class ModelCallError(ExportError):
    """The model raises on the example inputs, or returns something other than tensors."""


class ParityError(ExportError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerance."""


class BatchError(SlimGraphError):
    """A batch of calibration or training data does not fit the model's ``forward``."""


class WeightsError(SlimGraphError):
    """A weights file cannot be read, or does not fit the model it is loaded into."""


class LoadError(SlimGraphError):
    """A folder written by ``sg.save`` cannot be loaded back (missing or malformed files,
    weights that do not fit the saved config, transformers not installed)."""
