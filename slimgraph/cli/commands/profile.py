"""``slimgraph profile``: measure the latency model that ``--target-latency`` plans
against, once, and write it as JSON for ``--latency-model`` (profiling takes minutes on
a large model; planning against the file takes seconds, for any number of budgets)."""

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
    add_overwrite,
    add_timing_flags,
    build_model,
    check_out,
    check_patterns,
    inputs_report,
    planning_config,
    write_json,
)
from slimgraph.cli.render.profile import print_profile
from slimgraph.errors import UsageError

__all__ = ["register", "run"]


def register(commands: Any, parents: Parents) -> None:
    """Add ``profile`` to the subparsers ``commands``."""
    profile = commands.add_parser(
        "profile",
        parents=[*parents.common(), parents.planning],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="measure the latency model --target-latency plans against; write its JSON",
        description="Time a model's layers at a few widths and whole uniform slims of it on\n"
        "the runtime it will run on (sg.profile_latency), and write the latency model as\n"
        "JSON: pass it to slim, plan or bench as --latency-model to plan latency budgets\n"
        "without profiling again. Give the planning flags you will slim with: the uniform\n"
        "slims cut the groups they cut (--keep-residual, --ignore, --override, --min-keep),\n"
        "and with --scope global or isomorphic, that config's own plans for 0.3-0.7 of the\n"
        "latency are timed as well and become the knots (they run unlike uniform slims);\n"
        "--latency-model FILE.json, a local profile of the same model, spares timing its\n"
        "uniform slims again.\n"
        "Layer timings are cached on disk (--cache), so a second profile of the same family\n"
        "times only what is new.",
        epilog=(
            "examples:\n"
            "  slimgraph profile torchvision:resnet50 --out r50-latency.json\n"
            "  slimgraph profile torchvision:mobilenet_v2 --out mbv2.json\n"
            "  slimgraph profile torchvision:mobilenet_v2 --scope global --latency-model "
            "mbv2.json --out mbv2-global.json\n"
            "  slimgraph slim torchvision:resnet50 --target-latency 0.5 "
            "--latency-model r50-latency.json\n"
            "  slimgraph profile hf:./tiny-llama --keep-residual --runtime torch --threads 4 "
            "--out llama-latency.json"
        ),
    )
    profile.add_argument(
        "--runtime",
        choices=("onnxruntime", "torch"),
        default="onnxruntime",
        help="ONNX Runtime on the CPU, or eager PyTorch on the CPU (default onnxruntime)",
    )
    add_timing_flags(profile, runs=10, what="timed runs per measurement, median")
    profile.add_argument(
        "--cache",
        type=Path,
        metavar="FILE.json",
        help="the disk cache of layer timings (default $SLIMGRAPH_CACHE/latency.json, "
        "else ~/.cache/slimgraph/latency.json)",
    )
    profile.add_argument(
        "--out",
        type=Path,
        default=Path("latency.json"),
        metavar="FILE.json",
        help="where to write the latency model (default: latency.json)",
    )
    add_overwrite(profile, "an existing --out file")
    profile.set_defaults(run=run)


def run(args: argparse.Namespace) -> Outcome:
    """Profile the model of ``args.spec`` and write its latency model to ``args.out``."""
    start = time.perf_counter()
    if args.latency_model is not None and args.scope == "local":
        raise UsageError(
            f"--latency-model {args.latency_model}: profile writes a latency model (--out); "
            "slim, plan and bench read one (and profile --scope global or isomorphic reuses "
            "a local one's layer timings and fit)"
        )
    config = planning_config(args)
    # the uniform profile the scope's own is built on, read and validated like a plan
    uniform = config.latency_model if args.latency_model is not None else None
    check_out(args.out, file=True, overwrite=args.overwrite)
    progress = Progress(enabled=not args.json)
    model, example = build_model(args.spec, args.input_shape, args.seed, progress)
    check_patterns(model, config)
    before = time.perf_counter()
    lm = sg.profile_latency(
        model,
        example,
        runtime=args.runtime,
        threads=args.threads,
        runs=args.runs,
        cache=args.cache,
        progress=progress.enabled,  # layer and round bars: this takes minutes
        config=config,
        uniform=uniform,
    )
    progress.seconds["profile"] = time.perf_counter() - before
    with progress.step("save", f"writing {args.out}…"):
        check_out(args.out, file=True, overwrite=args.overwrite)  # nothing appeared since
        write_json(args.out, lm)
    progress.seconds["total"] = time.perf_counter() - start
    result = {
        "spec": args.spec,
        **inputs_report(example),
        "runtime": lm.runtime,
        "version": lm.version,
        "machine": lm.machine,
        "threads": lm.threads,
        "layers": len(lm.layers),
        "dtypes": list(lm.dtypes),
        "round_to": lm.round_to,
        "original_ms": lm.measured_ms.get("knot: original"),
        "predicted_ms": lm.predict({}),
        "knots": len(lm.knots),
        "scope": lm.scope,
        "check_error": lm.check_error,
        "file": str(args.out),
        "seconds": {k: round(v, 3) for k, v in progress.seconds.items()},
    }
    return result, print_profile
