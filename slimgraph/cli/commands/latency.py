"""``--target-latency`` and ``--latency-model``: a latency budget on the command line.

A budget needs a latency model of the runtime (:func:`slimgraph.profile_latency`). Given
``--latency-model FILE.json`` (what ``slimgraph profile`` or ``lm.model_dump_json()``
wrote), it is read and validated like a plan, before any model is built; without it, the
model is profiled once it is built, in ONNX Runtime (through the disk cache of layer
timings).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

import slimgraph as sg
from slimgraph._core.progress import Progress
from slimgraph.errors import SlimGraphError, UsageError

__all__ = [
    "TO_MEASURE",
    "add_latency_flag",
    "latency_fields",
    "latency_report",
    "with_latency_model",
]


def add_latency_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--latency-model",
        type=Path,
        metavar="FILE.json",
        help="the latency model --target-latency plans against, as 'slimgraph profile' "
        "writes it (or sg.profile_latency(...).model_dump_json()); default: profile the "
        "model now in ONNX Runtime",
    )


# Stands in for the latency model measured once the model is built, so that every other
# rule of the config (one budget only, ...) is checked before the build.
TO_MEASURE = sg.LatencyModel(
    runtime="onnxruntime", version="-", machine="to be measured", threads=1, layers={}
)


def latency_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ``latency_model`` the flags give before the model is built: the file's, or
    :data:`TO_MEASURE` for ``--target-latency`` alone."""
    path = getattr(args, "latency_model", None)
    if path is None:
        return {"latency_model": TO_MEASURE} if getattr(args, "target_latency", None) else {}
    try:
        return {"latency_model": sg.LatencyModel.model_validate_json(path.read_bytes())}
    except OSError as err:
        raise UsageError(f"--latency-model {path}: cannot read it ({err.strerror})") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "the file"
        raise UsageError(
            f"--latency-model {path} is not a latency model ({where}: {first['msg']}); write one "
            f"with 'slimgraph profile SPEC --out {path}'"
        ) from None


def with_latency_model(
    config: sg.PruneConfig,
    model: nn.Module,
    example: Any,
    progress: Progress,
    threads: int = 1,
) -> sg.PruneConfig:
    """``config`` with ``--target-latency`` and, when no ``--latency-model`` was given, the
    latency model of ``model`` measured now in ONNX Runtime with ``threads`` threads."""
    if config.latency_model != TO_MEASURE:
        return config
    start = time.perf_counter()
    try:  # minutes on a large model: its own bars (layers, then rounds), not a spinner
        measured = sg.profile_latency(
            model, example, threads=threads, progress=progress.enabled, config=config
        )
    except SlimGraphError as err:
        raise UsageError(
            f"--target-latency: {err}; then pass it as --latency-model FILE.json"
        ) from None
    progress.seconds["profile"] = time.perf_counter() - start
    return config.model_copy(update={"latency_model": measured})


def latency_report(plan: sg.PruningPlan, whole: sg.LatencyModel | None) -> dict[str, Any] | None:
    """What a latency plan predicted (and ``whole``, the latency model of the original
    with all its blocks, for the original; none where it is not known) and, with
    --latency-tries, what its tries measured."""
    if plan.predicted_latency_ms is None:
        return None
    return {
        "predicted_ms": plan.predicted_latency_ms,
        "original_predicted_ms": whole.predict({}) if whole else None,
        "measured_kept": plan.measured_latency_kept,
        "tries": list(plan.latency_tries),
    }
