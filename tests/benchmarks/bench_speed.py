"""Wall time of slimgraph's trace + plan + apply against Torch-Pruning's MetaPruner.

Run from the repository root::

    python tests/benchmarks/bench_speed.py [--model resnet50] [--repeats 5] [--json] [--profile 25]

Every run gets a freshly built model with random weights in eval mode (the build is not
timed) and a 1x3x224x224 input; medians are reported, and the first run apart (it pays
one-time imports and warm-ups). Torch-Pruning's time is its
constructor (which builds its DependencyGraph) plus ``step()``; ours is ``sg.trace``,
``sg.plan`` (local L2, ratio 0.5) and ``sg.apply(..., graph=graph)``.

Torch-Pruning runs first: after ``torch.export`` eager PyTorch work in the same process
has been seen running slower (DESIGN.md, "Traps"), so the peer is timed in a clean process
state and cannot be slowed by our tracer. ``--profile N`` adds a cProfile of one
``sg.slim`` call, top N functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import slimgraph as sg  # noqa: E402
from tests.peer import meta_pruner  # noqa: E402

RATIO = 0.5


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    return model, torch.randn(1, 3, 224, 224)


def time_ours(name: str) -> dict[str, float]:
    model, x = build(name)
    t0 = time.perf_counter()
    graph = sg.trace(model, (x,))
    t1 = time.perf_counter()
    plan = sg.plan(graph, sg.PruneConfig(ratio=RATIO, importance="l2", scope="local"))
    t2 = time.perf_counter()
    sg.apply(model, plan, graph=graph)
    t3 = time.perf_counter()
    return {"trace": t1 - t0, "plan": t2 - t1, "apply": t3 - t2, "total": t3 - t0}


def time_theirs(name: str) -> dict[str, float]:
    model, x = build(name)
    t0 = time.perf_counter()
    pruner = meta_pruner(model, x, RATIO)
    t1 = time.perf_counter()
    pruner.step()
    t2 = time.perf_counter()
    return {"build": t1 - t0, "step": t2 - t1, "total": t2 - t0}


def medians(fn: Callable[[str], dict[str, float]], name: str, repeats: int) -> dict[str, float]:
    """Median of each stage over ``repeats`` runs, and the first (cold) run's total."""
    runs = [fn(name) for _ in range(repeats)]
    result = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    result["first"] = runs[0]["total"]
    return result


def profile(name: str, top: int) -> str:
    model, x = build(name)
    prof = cProfile.Profile()
    prof.runcall(sg.slim, model, (x,), ratio=RATIO)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def table(name: str, repeats: int, ours: dict[str, float], theirs: dict[str, float]) -> str:
    ratio = ours["total"] / theirs["total"]
    rows = [
        f"{name}, ratio {RATIO}, 1x3x224x224, CPU, median of {repeats} (seconds)",
        "",
        "| tool | graph | plan / step | apply | total |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| slimgraph | {ours['trace']:.2f} | {ours['plan']:.2f} | {ours['apply']:.2f} | {ours['total']:.2f} |",
        f"| torch-pruning | {theirs['build']:.2f} | {theirs['step']:.2f} | - | {theirs['total']:.2f} |",
        f"| ours / theirs | | | | {ratio:.2f}x |",
        "",
        f"First (cold) run: slimgraph {ours['first']:.2f} s, torch-pruning {theirs['first']:.2f} s "
        "(one-time imports and torch.export warm-up are not in the medians).",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="torchvision model name")
    parser.add_argument("--repeats", type=int, default=5, help="runs per tool (median reported)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="cProfile sg.slim, top N"
    )
    args = parser.parse_args(argv)

    theirs = medians(time_theirs, args.model, args.repeats)
    ours = medians(time_ours, args.model, args.repeats)
    if args.json:
        result = {
            "model": args.model,
            "repeats": args.repeats,
            "ratio": RATIO,
            "threads": torch.get_num_threads(),
            "slimgraph": ours,
            "torch_pruning": theirs,
            "ours_over_theirs": ours["total"] / theirs["total"],
        }
        print(json.dumps(result, indent=2))
    else:
        print(table(args.model, args.repeats, ours, theirs))
    if args.profile:
        print(profile(args.model, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
