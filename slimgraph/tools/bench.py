"""Original beside slim, in one run: params, MACs, ONNX size and ONNX Runtime latency.

*Latency efficiency* = speedup / (1 / MACs ratio) = speedup x MACs kept. 1.0 means the
runtime turns every MAC saved into time saved; below 1.0 the slim widths suit the hardware
less well than the original's (try ``round_to=8`` or ``16``).

>>> import torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
>>> x = (torch.randn(4, 64),)
>>> report = sg.compare(net, sg.slim(net, x, ratio=0.5).model, x, runs=3, warmup=1)
>>> report.original.params, report.slim.params
(18696, 9352)
>>> report.macs_ratio
0.5
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field
from torch import nn

from slimgraph.export.onnx import export_onnx
from slimgraph.resolve.cost import count_macs, count_params
from slimgraph.tools.latency import LatencyReport, measure_latency

__all__ = ["BenchReport", "ModelFigures", "compare", "figures"]


class ModelFigures(BaseModel):
    """One model's size and speed: ``onnx_bytes`` is the simplified ONNX file on disk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: int
    macs: int
    onnx_bytes: int
    latency: LatencyReport


class BenchReport(BaseModel):
    """The original and the slim model measured in the same run, with the same threads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    original: ModelFigures
    slim: ModelFigures

    @computed_field
    @property
    def macs_ratio(self) -> float:
        """Fraction of the original's MACs the slim model keeps."""
        return self.slim.macs / self.original.macs

    @computed_field
    @property
    def speedup(self) -> float:
        """Original median latency over slim median latency."""
        return self.original.latency.median_ms / self.slim.latency.median_ms

    @computed_field
    @property
    def latency_efficiency(self) -> float:
        """Speedup / (1 / MACs ratio): 1.0 when time saved matches MACs saved."""
        return self.speedup * self.macs_ratio


def figures(
    model: nn.Module,
    example_inputs: Any,
    onnx_path: str | Path,
    *,
    threads: int = 1,
    warmup: int = 5,
    runs: int = 20,
) -> ModelFigures:
    """Export ``model`` to ``onnx_path`` (checked, static batch) and time it in ONNX Runtime."""
    report = export_onnx(model, example_inputs, onnx_path, dynamic_batch=False, progress=False)
    return ModelFigures(
        params=count_params(model),
        macs=count_macs(model, example_inputs),
        onnx_bytes=report.file_size,
        latency=measure_latency(
            report.path, example_inputs, threads=threads, warmup=warmup, runs=runs
        ),
    )


def compare(
    original: nn.Module,
    slim: nn.Module,
    example_inputs: Any,
    *,
    threads: int = 1,
    warmup: int = 5,
    runs: int = 20,
    folder: str | Path | None = None,
) -> BenchReport:
    """Measure ``original`` and ``slim`` one after the other on the same inputs.

    Both are exported with :func:`slimgraph.export_onnx` (which checks them against
    PyTorch) into ``folder`` (a temporary directory when ``None``) and timed with
    :func:`slimgraph.measure_latency`: median of ``runs`` after ``warmup``, ``threads``
    intra-op threads.
    """
    timing = {"threads": threads, "warmup": warmup, "runs": runs}
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(folder) if folder is not None else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        return BenchReport(
            original=figures(original, example_inputs, where / "original.onnx", **timing),
            slim=figures(slim, example_inputs, where / "slim.onnx", **timing),
        )
