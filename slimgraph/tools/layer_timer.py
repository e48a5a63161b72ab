"""Timing one layer at one input shape on a runtime, through a disk cache of plain JSON
numbers keyed by the runtime and its version, the machine, the thread count and the
layer's exact shapes (see :func:`slimgraph.tools.profile.profile_latency`)."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from slimgraph._core.files import write_text_atomic
from slimgraph._core.inputs import dtype_name
from slimgraph.tools.latency import measure_latency

__all__ = ["LayerTimer", "Runtime", "cache_path"]

Runtime = Literal["torch", "onnxruntime"]


class LayerTimer:
    """Median milliseconds of one layer on one input shape, through the disk cache at
    ``cache`` (``None``: none; :func:`cache_path` gives the default one)."""

    def __init__(
        self, runtime: Runtime, threads: int, runs: int, cache: Path | None, device: torch.device
    ) -> None:
        self.runtime, self.threads, self.runs, self.cache = runtime, threads, runs, cache
        self.device = device
        if runtime == "onnxruntime":
            import onnxruntime

            self.version = f"onnxruntime {onnxruntime.__version__}"
        else:
            self.version = f"torch {torch.__version__}"
        self.machine = f"{platform.machine()} {_cpu_name()} x{os.cpu_count()}"
        if device.type == "cuda":
            self.machine = f"{torch.cuda.get_device_name(device)} ({self.machine})"
        self.known = _read_cache(cache)
        self.added = 0

    def time(self, layer: nn.Module, shape: tuple[int, ...]) -> float:
        """Milliseconds of ``layer`` on an input of ``shape``, in the layer's dtype."""
        dtype = next(layer.parameters()).dtype
        key = f"{self.version}|{self.machine}|{self.threads}|{layer!r}|{list(shape)}"
        if dtype != torch.float32:  # the keys of float32 layers came first, without it
            key += f"|{dtype_name(dtype)}"
        if key not in self.known:
            x = torch.randn(shape, device=self.device, dtype=dtype)
            if self.runtime == "torch":
                layer = layer.to(self.device)
                ms = measure_latency(layer, (x,), threads=self.threads, warmup=2, runs=self.runs)
            else:
                ms = self._onnx(layer.eval(), x)
            self.known[key] = ms.median_ms
            self.added += 1
        return self.known[key]

    def _onnx(self, layer: nn.Module, x: torch.Tensor) -> Any:
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(folder) / "layer.onnx"
            torch.onnx.export(layer, (x,), str(path), dynamo=False, opset_version=17)
            return measure_latency(path, (x,), threads=self.threads, warmup=2, runs=self.runs)

    def save(self) -> None:
        if self.cache is not None and self.added:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.cache, json.dumps(self.known, indent=0, sort_keys=True))


def cache_path(cache: str | os.PathLike | None) -> Path:
    """``cache``, or ``$SLIMGRAPH_CACHE/latency.json``, or ``~/.cache/slimgraph/latency.json``."""
    if cache is not None:
        return Path(cache)
    root = os.environ.get("SLIMGRAPH_CACHE") or Path.home() / ".cache" / "slimgraph"
    return Path(root) / "latency.json"


def _read_cache(path: Path | None) -> dict[str, float]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        warnings.warn(f"latency cache {path} is unreadable ({err}); measuring afresh", stacklevel=4)
        return {}
    if not isinstance(data, dict):
        warnings.warn(f"latency cache {path} is not a JSON object; measuring afresh", stacklevel=4)
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and v > 0}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
