"""ONNX Runtime against PyTorch: run the file on every parity case and measure how far its
outputs are from the model's, relative to each output's scale.

>>> import numpy as np, torch
>>> difference(np.array([1.0, 2.5]), torch.tensor([1.0, 2.0]), "output_0", 1)
(0.5, 0.25)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimgraph.errors import ExportError, ParityError
from slimgraph.export._quiet import one_line
from slimgraph.export.reference import Case

__all__ = ["difference", "parity", "session"]


def session(path: Path) -> Any:
    """An ONNX Runtime CPU session on ``path``, quiet, on as many threads as torch uses."""
    import onnxruntime as ort  # slow to import: only a checked export needs it

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot load {path}: {one_line(exc)}") from exc


def parity(
    path: Path, cases: list[Case], output_names: list[str], rtol: float, what: str
) -> tuple[float, float]:
    """Run ``path`` on every case; the largest absolute and scale-relative differences.

    Raises :class:`~slimgraph.ParityError` naming ``what`` (``"the ONNX model"``) when an
    output differs from PyTorch's by more than ``rtol`` of its scale.
    """
    runner = session(path)
    wanted = [v.name for v in runner.get_inputs()]
    unknown = [n for n in wanted if n not in cases[0][0]]
    if unknown:
        raise ExportError(f"{path} wants inputs {unknown} that the example inputs do not name")
    produced = [v.name for v in runner.get_outputs()]
    if produced != output_names:
        raise ExportError(f"{path} has outputs {produced}, expected {output_names}")
    max_abs = max_rel = 0.0
    for feeds, expected, size in cases:
        try:
            got = runner.run(output_names, {n: feeds[n] for n in wanted})
        except Exception as exc:
            raise ParityError(
                f"ONNX Runtime failed to run {what} at batch {size}: {one_line(exc)}. If the "
                "model fixes its batch size, export with dynamic_batch=False"
            ) from exc
        for name, onnx_out, torch_out in zip(output_names, got, expected):
            abs_diff, rel_diff = difference(np.asarray(onnx_out), torch_out, name, size)
            if rel_diff > rtol:
                raise ParityError(
                    f"{what} ({path}) disagrees with PyTorch on {name} at batch {size}: max "
                    f"abs diff {abs_diff:.3g}, max rel diff {rel_diff:.3g} > rtol {rtol:g}. "
                    "Try another opset or simplify=False, or raise rtol if the difference "
                    "is acceptable"
                )
            max_abs, max_rel = max(max_abs, abs_diff), max(max_rel, rel_diff)
    return max_abs, max_rel


def difference(
    got: np.ndarray, expected: torch.Tensor, name: str, size: int
) -> tuple[float, float]:
    """Max absolute difference, and that over the output's largest magnitude."""
    want = expected.detach().cpu().to(torch.float64).numpy()
    if got.shape != want.shape:
        raise ParityError(
            f"{name} at batch {size} has shape {got.shape} in ONNX Runtime but "
            f"{tuple(want.shape)} in PyTorch"
        )
    if not want.size:
        return 0.0, 0.0
    have = got.astype(np.float64)
    same = (have == want) | (np.isnan(have) & np.isnan(want))
    diff = np.where(same, 0.0, np.abs(have - want))
    abs_diff = float(diff.max())
    if math.isnan(abs_diff):
        return math.inf, math.inf
    finite = np.abs(want[np.isfinite(want)])
    scale = float(finite.max()) if finite.size else 0.0
    return abs_diff, abs_diff / scale if scale > 0 else abs_diff
