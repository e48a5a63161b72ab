"""What :func:`slimgraph.export_onnx` returns: the file it wrote and what it checked.

>>> TensorInfo(name="image", shape=("batch", 3, 8, 8), dtype="float32").shape[0]
'batch'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["ExportReport", "QuantizedReport", "TensorInfo"]


class TensorInfo(BaseModel):
    """One graph input or output: ``shape`` holds ``"batch"`` where the dim is dynamic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: tuple[int | str, ...]
    dtype: str


class QuantizedReport(BaseModel):
    """The int8 copy: where it is, its size on disk and how far it is from PyTorch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    file_size: int
    max_abs_diff: float | None
    max_rel_diff: float | None


class ExportReport(BaseModel):
    """What ``export_onnx`` wrote and what it checked.

    - ``exporter``: ``"dynamo"``, or ``"legacy"`` when the dynamo exporter raised
      ``fallback_reason`` (its error and, in brackets, the root cause).
    - ``opset``: the default-domain opset of the file.
    - ``nodes_before`` / ``nodes_after``: top-level graph nodes before and after onnxsim;
      ``nodes_after`` is ``None`` unless ``simplified``, and ``simplify_skipped_reason``
      then says why not.
    - ``file_size``: bytes on disk, the model file plus its external data file, if any
      (``external_data``; the file is then ``<path>.data`` beside the model).
    - ``max_abs_diff`` / ``max_rel_diff``: the largest differences between ONNX Runtime and
      PyTorch over every output at every size in ``batch_sizes``; the relative one is
      measured against the output's scale (its largest magnitude). ``None`` and ``()``
      when ``check=False``.
    - ``past_lengths``: with ``with_past``, the past lengths of the decode steps checked at
      every batch size (0 for the prompt, then the prompt's length for the next token).
    - ``inputs`` / ``outputs``: the graph's tensors as (name, shape, dtype).
    - ``quantized``: the int8 copy, when ``quantize="int8"``.
    - ``stage_seconds``: how long each stage took: ``export`` (torch.onnx), ``save`` (onnxsim
      and writing), ``check`` (ONNX Runtime) and ``quantize``, those that ran.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    exporter: Literal["dynamo", "legacy"]
    fallback_reason: str | None
    opset: int
    nodes_before: int
    nodes_after: int | None
    simplified: bool
    simplify_skipped_reason: str | None
    file_size: int
    external_data: bool
    max_abs_diff: float | None
    max_rel_diff: float | None
    batch_sizes: tuple[int, ...]
    past_lengths: tuple[int, ...] = ()
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    quantized: QuantizedReport | None = None
    stage_seconds: dict[str, float] = {}
