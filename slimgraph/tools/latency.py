"""Measure inference latency of a torch model or an ONNX file, on the CPU.

>>> import torch, slimgraph as sg
>>> report = sg.measure_latency(torch.nn.Linear(8, 4), (torch.randn(1, 8),), runs=5, warmup=1)
>>> report.backend, report.runs, report.threads, report.median_ms > 0
('torch', 5, 1, True)
"""

from __future__ import annotations

import math
import os
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from slimgraph._core.inputs import preserve_modes, split_inputs
from slimgraph._core.progress import counted
from slimgraph.errors import SlimGraphError
from slimgraph.export.onnx import export_onnx

__all__ = ["LatencyReport", "interleaved_ms", "measure_latency", "runner"]


class LatencyReport(BaseModel):
    """Wall-clock latency of one forward pass, after warm-up, with a fixed thread count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["torch", "onnxruntime"]
    threads: int
    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float


def measure_latency(
    model_or_path: torch.nn.Module | str | os.PathLike,
    example_inputs: Any,
    *,
    threads: int = 1,
    warmup: int = 5,
    runs: int = 20,
) -> LatencyReport:
    """Median (and 90th percentile) latency of ``runs`` forward passes after ``warmup``.

    A ``torch.nn.Module`` runs eagerly in eval mode under ``torch.no_grad`` with
    ``torch.set_num_threads(threads)`` (restored afterwards), on the device its inputs
    are on (a run on a GPU counts until its kernels finish); a path to an ``.onnx`` file
    runs in ONNX Runtime's CPU provider with ``intra_op_num_threads=threads``. Inputs are
    given as for :func:`slimgraph.trace`; ONNX inputs are fed in the file's input order.
    """
    if threads < 1 or runs < 1 or warmup < 0:
        raise SlimGraphError(
            f"need threads >= 1, runs >= 1, warmup >= 0; got {threads}, {runs}, {warmup}"
        )
    args, kwargs = split_inputs(example_inputs)
    if isinstance(model_or_path, torch.nn.Module):
        return _measure(
            "torch", _torch_call(model_or_path, args, kwargs, threads), threads, warmup, runs
        )
    path = Path(model_or_path)
    if not path.is_file():
        raise SlimGraphError(
            f"no ONNX file at {path}; pass a torch.nn.Module or an exported .onnx path"
        )
    return _measure(
        "onnxruntime", _onnx_call(path, [*args, *kwargs.values()], threads), threads, warmup, runs
    )


def runner(
    model: torch.nn.Module, example_inputs: Any, runtime: str, path: Path
) -> torch.nn.Module | Path:
    """What :func:`measure_latency` times on ``runtime``: ``"torch"``, the model itself;
    ``"onnxruntime"``, its ONNX file, exported to ``path``."""
    if runtime == "torch":
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, example_inputs, path, check=False, progress=False)
    return path


ROUNDS = 5  # the runners take turns this many times; a runner's latency is its median round
MIN_SECONDS = 0.25  # a round's median spans at least this long: a 5 ms network gets 50 runs
MAX_RUNS = 1000
WARMUP = 3  # each round warms a fresh session up


def interleaved_ms(
    runners: Mapping[str, torch.nn.Module | Path],
    example_inputs: Any,
    threads: int,
    runs: int,
    *,
    progress: bool = False,
) -> dict[str, float]:
    """Each runner's latency (see :func:`runner`): the median of :data:`ROUNDS` medians,
    the runners taking turns, so that a change in the machine's load between them does not
    read as a difference between them. A load episode of a few seconds skews one or two
    rounds of five, where it skewed both of two: timed while the load came and went, the
    lower of two medians put a MobileNetV2 slim's share of the original's latency anywhere
    in 0.50-0.69 (sd 9 %, 12 times), the median of six rounds in 0.50-0.52 (4 times). A
    round's median is of at least ``runs`` runs and of at least :data:`MIN_SECONDS` (as a
    first short measurement of the runner estimates), so that a network of a few
    milliseconds is not timed over a twentieth of a second, where the machine's hiccups
    decide the median."""
    counts = {k: _runs_for(r, example_inputs, threads, runs) for k, r in runners.items()}
    rounds = [
        {
            k: measure_latency(
                r, example_inputs, threads=threads, warmup=WARMUP, runs=counts[k]
            ).median_ms
            for k, r in runners.items()
        }
        for _ in counted(range(ROUNDS), "whole-model latency", progress)
    ]
    return {k: statistics.median(r[k] for r in rounds) for k in runners}


def _runs_for(runner: torch.nn.Module | Path, example_inputs: Any, threads: int, runs: int) -> int:
    """``runs``, or as many more as :data:`MIN_SECONDS` takes (at most :data:`MAX_RUNS`)."""
    ms = measure_latency(runner, example_inputs, threads=threads, warmup=1, runs=1).median_ms
    return min(MAX_RUNS, max(runs, math.ceil(MIN_SECONDS * 1e3 / max(ms, 1e-3))))


def _torch_call(
    model: torch.nn.Module, args: tuple, kwargs: dict, threads: int
) -> Callable[[], Any]:
    def call() -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with preserve_modes(model), torch.no_grad():
                model.eval()
                out = model(*args, **kwargs)
            if torch.cuda.is_initialized():  # kernels run asynchronously: wait for them
                torch.cuda.synchronize()
            return out
        finally:
            torch.set_num_threads(before)

    return call


def _onnx_call(path: Path, inputs: list[torch.Tensor], threads: int) -> Callable[[], Any]:
    import onnxruntime as ort  # slow to import: only ONNX files are timed with it

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise SlimGraphError(
            f"{path.name} takes {len(names)} inputs ({', '.join(names)}); got {len(inputs)}"
        )
    feeds = {
        n: np.ascontiguousarray(t.detach().cpu().numpy())
        for n, t in zip(names, inputs, strict=True)
    }
    return lambda: session.run(None, feeds)


def _measure(
    backend: str, call: Callable[[], Any], threads: int, warmup: int, runs: int
) -> LatencyReport:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    ordered = sorted(times)
    return LatencyReport(
        backend=backend,
        threads=threads,
        runs=runs,
        median_ms=statistics.median(times),
        p90_ms=ordered[min(runs - 1, int(round(0.9 * (runs - 1))))],
        min_ms=ordered[0],
    )
