"""``sg.export_onnx``: an ONNX file that is simplified, checked and shown to match PyTorch.

The route: ``torch.onnx.export(dynamo=True)`` (the legacy TorchScript exporter only when
that one raises) -> onnxsim -> ``onnx.checker`` -> ONNX Runtime (CPU) against the PyTorch
model in eval mode, at the example batch size and, with a dynamic batch, at a second one.

>>> import pathlib, tempfile, torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten())
>>> path = pathlib.Path(tempfile.mkdtemp()) / "net.onnx"
>>> report = sg.export_onnx(net, (torch.randn(1, 3, 8, 8),), path)
>>> report.exporter, report.batch_sizes, report.inputs[0].shape, report.outputs[0].name
('dynamo', (1, 3), ('batch', 3, 8, 8), 'output_0')
>>> report.max_rel_diff <= 1e-4
True
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import onnx
import onnx_ir as ir
import torch
from torch import nn

from slimgraph._core.files import check_output_file
from slimgraph._core.inputs import preserve_modes, without_kv_cache
from slimgraph._core.progress import Progress
from slimgraph.errors import (
    ExportArgumentError,
    ExportError,
    ModelCallError,
    OutputError,
    ParityError,
)
from slimgraph.export._quiet import kept_random_state
from slimgraph.export.arguments import (
    batch_size,
    check_options,
    check_path,
    check_weights,
    checked_inputs,
    input_names,
)
from slimgraph.export.decode import decode_cases, export_step
from slimgraph.export.exporters import run_exporters
from slimgraph.export.parity import parity
from slimgraph.export.quantize import INT8_RTOL, quantize_int8
from slimgraph.export.reference import Call, Case, cases, run_torch
from slimgraph.export.report import ExportReport, QuantizedReport, TensorInfo
from slimgraph.export.save import EXTERNAL_DATA_BYTES, check_onnx, file_size, save

__all__ = [
    "EXTERNAL_DATA_BYTES",
    "INT8_RTOL",
    "ExportArgumentError",
    "ExportError",
    "ExportReport",
    "ModelCallError",
    "ParityError",
    "QuantizedReport",
    "TensorInfo",
    "export_onnx",
]


@kept_random_state()  # importing onnxsim or rich draws from ``random``
def export_onnx(
    model: nn.Module,
    example_inputs: tuple[Any, ...] | dict[str, Any] | torch.Tensor,
    path: str | os.PathLike[str],
    *,
    simplify: bool = True,
    dynamic_batch: bool = True,
    opset: int | None = None,
    check: bool = True,
    quantize: str | None = None,
    rtol: float = 1e-4,
    int8_rtol: float = INT8_RTOL,
    with_past: bool = False,
    progress: bool = True,
) -> ExportReport:
    """Export ``model`` to ONNX at ``path``, simplify it, check it and compare it to PyTorch.

    ``example_inputs`` is a tuple of positional tensors or a dict of keyword tensors; the
    ONNX inputs are named after ``forward``'s parameters (or the dict's keys) and the
    outputs ``output_0``, ``output_1``, ... in the order PyTorch flattens them. With
    ``dynamic_batch`` dim 0 of every input (and so of every output) is the symbol
    ``"batch"``. ``check`` runs ONNX Runtime on the CPU against the model in eval mode and
    raises :class:`ParityError` when an output differs by more than ``rtol`` of its
    largest magnitude. ``quantize="int8"`` also writes ``<stem>.int8.onnx`` by dynamic
    quantisation (int8 weights), held to ``int8_rtol`` (default :data:`INT8_RTOL`).
    Weights above :data:`EXTERNAL_DATA_BYTES` are saved to ``<file>.data`` and the graph
    is then not simplified. The model's train/eval flags are restored afterwards. A Hugging
    Face model's key/value cache is switched off for the export (``use_cache=False``), so
    a causal LM exports its logits. Files are written under a temporary name and renamed
    into place; a symbolic link at ``path`` is refused.

    ``with_past=True`` (a causal LM) exports one decoder step instead, with the cache as
    tensors in the layout of Optimum and ONNX Runtime GenAI: inputs ``input_ids``,
    ``attention_mask`` (past and new tokens), ``position_ids`` (when the model takes
    them) and ``past_key_values.{i}.key`` / ``.value`` of shape ``(batch, kv_heads,
    past_sequence, head_dim)``; outputs ``logits`` and ``present.{i}.key`` / ``.value``.
    ``example_inputs`` is then the prompt (``input_ids``, optionally ``attention_mask``),
    and the check is a two-step decode: the prompt with an empty past, then the greedy
    next token with the prompt's presents (``past_lengths`` in the report).

    ``progress`` shows each stage with a spinner on stderr when it is a terminal (a large
    model's export takes minutes); ``report.stage_seconds`` says how long each one took.
    """
    path = check_path(path)
    try:  # a link is refused before the export, not after it
        check_output_file(path)
    except OutputError as err:
        raise ExportArgumentError(str(err)) from err
    check_options(quantize, opset, rtol, int8_rtol)
    check_weights(model)
    steps = Progress(progress)
    with steps.step("export", "exporting with torch.onnx…"):
        call, checks, exporter, fallback_reason, onnx_model, past_lengths = _exported(
            model, example_inputs, dynamic_batch, opset, check, with_past
        )
    nodes_before = len(onnx_model.graph)
    with steps.step("save", "simplifying with onnxsim…" if simplify else "saving…"):
        saved = save(onnx_model, path, simplify, checks[0][0])
    del onnx_model
    check_onnx(path)
    written = onnx.load(path, load_external_data=False)
    if not check:
        checks = []
    max_abs = max_rel = None
    if checks:
        with steps.step("check", "checking in ONNX Runtime…"):
            max_abs, max_rel = parity(path, checks, call.output_names, rtol, "the ONNX model")
    quantized = None
    if quantize is not None:
        with steps.step("quantize", "quantizing to int8…"):
            quantized = quantize_int8(path, saved.external, checks, call.output_names, int8_rtol)
    return ExportReport(
        path=path,
        exporter=exporter,
        fallback_reason=fallback_reason,
        opset=_opset(written),
        nodes_before=nodes_before,
        nodes_after=saved.nodes_after,
        simplified=saved.nodes_after is not None,
        simplify_skipped_reason=saved.skipped_reason,
        file_size=file_size(path, saved.external),
        external_data=saved.external,
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        batch_sizes=tuple(dict.fromkeys(c[2] for c in checks)),
        past_lengths=past_lengths if checks else (),
        inputs=tuple(_describe(v) for v in written.graph.input),
        outputs=tuple(_describe(v) for v in written.graph.output),
        quantized=quantized,
        stage_seconds=steps.seconds,
    )


def _exported(
    model: nn.Module,
    example_inputs: Any,
    dynamic_batch: bool,
    opset: int | None,
    check: bool,
    with_past: bool,
) -> tuple[Call, list[Case], Literal["dynamo", "legacy"], str | None, ir.Model, tuple[int, ...]]:
    """The ONNX graph of ``model`` (or of one decoder step), with the cases to check it on."""
    if with_past:
        with preserve_modes(model):
            model.eval()
            decode = decode_cases(model, example_inputs, dynamic_batch, check)
            onnx_model = export_step(decode.step, decode.call, opset)
        return decode.call, decode.cases, "dynamo", None, onnx_model, decode.past_lengths
    return (*_export(model, example_inputs, dynamic_batch, opset, check), ())


def _export(
    model: nn.Module,
    example_inputs: Any,
    dynamic_batch: bool,
    opset: int | None,
    check: bool,
) -> tuple[Call, list[Case], Literal["dynamo", "legacy"], str | None, ir.Model]:
    """The model's forward (its key/value cache off) exported, with its parity cases."""
    args, kwargs = checked_inputs(model, example_inputs)
    names = input_names(model, args, kwargs)
    batch = batch_size([*args, *kwargs.values()])
    if dynamic_batch and batch is None:
        raise ExportArgumentError(
            "dynamic_batch=True needs an input with a batch dim (dim 0), but every example "
            "input is a scalar; pass dynamic_batch=False"
        )
    # a causal LM's key/value cache is inference state, not an output: logits alone
    with preserve_modes(model), without_kv_cache(model):
        model.eval()
        expected = run_torch(model, args, kwargs)
        call = Call.of(args, kwargs, names, expected, dynamic_batch, batch)
        # PyTorch's side of the parity check first: a model that cannot take a second
        # batch size should fail before the expensive export, not after it
        checks = cases(model, call, expected, batch, dynamic_batch and check)
        exporter, fallback_reason, onnx_model = run_exporters(model, call, batch, opset)
    return call, checks, exporter, fallback_reason, onnx_model


def _describe(value: onnx.ValueInfoProto) -> TensorInfo:
    tensor = value.type.tensor_type
    shape = tuple(
        d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else "?"
        for d in tensor.shape.dim
    )
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    return TensorInfo(name=value.name, shape=shape, dtype=str(np.dtype(dtype)))


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
