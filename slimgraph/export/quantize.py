"""The int8 copy of an exported model: ONNX Runtime's dynamic quantisation (int8 weights,
activations quantised on the fly), held to a coarse tolerance against PyTorch."""

from __future__ import annotations

from pathlib import Path

from slimgraph._core.files import staged_files
from slimgraph.errors import ExportError
from slimgraph.export._quiet import one_line, quiet_root_logger
from slimgraph.export.parity import parity
from slimgraph.export.reference import Case
from slimgraph.export.report import QuantizedReport
from slimgraph.export.save import file_size

__all__ = ["INT8_RTOL", "quantize_int8"]

INT8_RTOL = 0.1
"""Default tolerance of the int8 model: dynamic quantisation rounds every weight and
activation of the quantised ops, so only a coarse agreement with PyTorch is promised."""


def quantize_int8(
    path: Path, external: bool, cases: list[Case], output_names: list[str], rtol: float
) -> QuantizedReport:
    """Write ``<stem>.int8.onnx`` beside ``path`` and check it on ``cases`` (if any)."""
    # optional and slow to import: only quantize="int8" needs it
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.with_name(f"{path.stem}.int8.onnx")
    try:
        # written in a fresh folder and renamed into place: onnx appends to an existing
        # data file instead of replacing it, and an interruption keeps the previous file
        with quiet_root_logger(), staged_files(path.parent) as stage:
            quantize_dynamic(
                path,
                stage / target.name,
                weight_type=QuantType.QInt8,
                use_external_data_format=external,
            )
    except Exception as exc:
        raise ExportError(
            f"int8 quantization of {path} failed ({type(exc).__name__}: {one_line(exc)}); "
            f"the float model at {path} is valid, export it without quantize"
        ) from exc
    max_abs = max_rel = None
    if cases:
        max_abs, max_rel = parity(target, cases, output_names, rtol, "the int8 model")
    return QuantizedReport(
        path=target,
        file_size=file_size(target, external),
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
    )
