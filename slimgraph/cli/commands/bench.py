"""``slimgraph bench``: original beside slim, params, MACs, ONNX size and ONNX Runtime
latency, measured in the same run."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import slimgraph as sg
from slimgraph._core.progress import Progress
from slimgraph.cli.commands.common import (
    Outcome,
    Parents,
    add_timing_flags,
    build_traced,
    check_out,
    check_patterns,
    inputs_report,
    planning_config,
)
from slimgraph.cli.commands.latency import with_latency_model
from slimgraph.cli.render.onnx import print_bench
from slimgraph.rewrite.fallback import plan_that_applies

__all__ = ["register", "run"]


def register(commands: Any, parents: Parents) -> None:
    """Add ``bench`` to the subparsers ``commands``."""
    bench = commands.add_parser(
        "bench",
        parents=[*parents.common(), parents.planning],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="original vs slim: params, MACs, ONNX size, ONNX Runtime latency",
        description="Slim a model, export the original and the slim copy to ONNX, and time\n"
        "both in ONNX Runtime in the same run (median of --runs after warm-up, --threads\n"
        "intra-op threads). Latency efficiency = speedup x MACs kept: 1.0 means every MAC\n"
        "saved became time saved.",
        epilog=(
            "examples:\n"
            "  slimgraph bench torchvision:resnet50 --ratio 0.5\n"
            "  slimgraph bench torchvision:mobilenet_v2 --round-to 16 --threads 2 --runs 50\n"
            "  slimgraph bench timm:convnext_tiny --keep-onnx bench-out --json"
        ),
    )
    add_timing_flags(bench, runs=20, what="timed runs after warm-up")
    bench.add_argument(
        "--keep-onnx",
        type=Path,
        metavar="DIR",
        help="write original.onnx and slim.onnx here (default: a temporary directory)",
    )
    bench.set_defaults(run=run)


def run(args: argparse.Namespace) -> Outcome:
    """Slim the model of ``args.spec`` and time both copies in ONNX Runtime."""
    start = time.perf_counter()
    config = planning_config(args)
    if args.keep_onnx:
        check_out(args.keep_onnx, "--keep-onnx")
    progress = Progress(enabled=not args.json)
    model, example, graph = build_traced(
        args.spec, args.input_shape, args.seed, progress, lambda m: check_patterns(m, config)
    )
    config = with_latency_model(config, model, example, progress, threads=args.threads)
    with progress.step("slim", "planning and applying…"):
        slim = sg.apply(
            model, plan_that_applies(model, graph, config), graph=graph, example_inputs=example
        )
    with progress.step("bench", f"exporting and timing both ({args.runs} runs each)…"):
        report = sg.compare(
            model, slim, example, threads=args.threads, runs=args.runs, folder=args.keep_onnx
        )
    result = {
        "spec": args.spec,
        **inputs_report(example),
        "config": config.model_dump(mode="json"),
        **report.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return result, print_bench
