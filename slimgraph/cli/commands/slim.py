"""``slimgraph slim``: trace, plan and apply; write plan.json and model.safetensors."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from torch import nn

import slimgraph as sg
from slimgraph._core.files import write_text_atomic
from slimgraph._core.inputs import synthesize
from slimgraph._core.progress import Progress
from slimgraph.cli.commands.common import (
    Outcome,
    Parents,
    add_overwrite,
    build_traced,
    check_out,
    check_patterns,
    inputs_report,
    planning_config,
    write_slim,
)
from slimgraph.cli.commands.depth import add_depth_flag, best_mix, blocks_first, check_auto
from slimgraph.cli.commands.latency import TO_MEASURE, latency_report, with_latency_model
from slimgraph.cli.render.slim import print_slim
from slimgraph.errors import UsageError
from slimgraph.io.checkpoint import is_sharded, skeleton
from slimgraph.io.shards import INDEX
from slimgraph.planner.blocks import width_budget
from slimgraph.rewrite.fallback import plan_that_applies
from slimgraph.tools.latency_fit import fit_latency
from slimgraph.tools.measure import measure

__all__ = ["DEFAULT_OUT", "register", "run", "slim_report"]

DEFAULT_OUT = "slim-out"


def register(commands: Any, parents: Parents) -> None:
    """Add ``slim`` to the subparsers ``commands``."""
    slim = commands.add_parser(
        "slim",
        parents=[*parents.common(), parents.planning],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="trace, plan and apply; write plan.json and model.safetensors",
        description="Trace a model, plan which units to drop, apply the plan, and write\n"
        "OUT/plan.json and OUT/model.safetensors (with config.json for a Hugging Face\n"
        "model: the folder reloads with sg.load). Prints params, MACs and stage widths\n"
        "before and after. A sharded Hugging Face checkpoint (model.safetensors.index.json)\n"
        "is slimmed without loading it: planned on the meta device from its weights read\n"
        "tensor by tensor, written shard by shard (about one shard in memory).",
        epilog=(
            "examples:\n"
            "  slimgraph slim torchvision:resnet18 --ratio 0.5 --out slim-out\n"
            "  slimgraph slim torchvision:mobilenet_v3_large --ratio 0.3 --round-to 8 "
            "--ignore 'classifier.*'\n"
            "  slimgraph slim timm:resnet50 --scope global --json > report.json\n"
            "  slimgraph slim my_package.models:build --input-shape 1,3,128,128\n\n"
            "reload: slim = sg.apply(fresh_model.eval(), sg.PruningPlan.model_validate_json(\n"
            "            open('OUT/plan.json').read()))\n"
            "        sg.load_weights(slim, 'OUT/model.safetensors')"
        ),
    )
    slim.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help=f"output directory (default: {DEFAULT_OUT})",
    )
    slim.add_argument(
        "--onnx",
        type=Path,
        metavar="FILE.onnx",
        help="also export the slim model to simplified, checked ONNX",
    )
    slim.add_argument(
        "--latency-tries",
        type=int,
        default=0,
        metavar="N",
        help="with --target-latency: time the slim model against the original on the latency "
        "model's runtime and plan again while it misses the target by more than 3%%, up to N "
        "slim models (default: 0, plan once by the latency model)",
    )
    add_depth_flag(slim)
    add_overwrite(slim, "the files an earlier run wrote in --out (and --onnx)")
    slim.set_defaults(run=run)


def run(args: argparse.Namespace) -> Outcome:
    """Slim the model of ``args.spec`` into ``args.out``."""
    start = time.perf_counter()
    config = planning_config(args)
    if args.latency_tries < 0 or (args.latency_tries and config.target_latency is None):
        raise UsageError(
            f"--latency-tries {args.latency_tries}: a count of slim models to time, for "
            "--target-latency (give it too)"
        )
    check_auto(args, config)
    check_out(args.out, overwrite=args.overwrite)
    if args.onnx:
        check_out(args.onnx, "--onnx", file=True, overwrite=args.overwrite)
    progress = Progress(enabled=not args.json)
    if args.spec.startswith("hf:") and is_sharded(Path(args.spec[3:]).expanduser()):
        return _run_streaming(args, config, progress, start)
    model, example, graph = build_traced(
        args.spec, args.input_shape, args.seed, progress, lambda m: check_patterns(m, config)
    )
    config = with_latency_model(config, model, example, progress)
    if args.drop_blocks == "auto":
        mixed = best_mix(model, example, config, args.latency_tries, progress)
        plan, slim = mixed.plan, mixed.model
    else:
        plan, slim = _slimmed(args, model, example, graph, config, progress)
    with progress.step("measure", "counting params and MACs…"):
        report = measure(model, slim, example)
    with progress.step("save", f"writing {args.out}…"):
        files = write_slim(args.out, plan, slim, args.overwrite)
    if args.onnx:
        with progress.step("export", f"exporting {args.onnx}…"):
            files["onnx"] = str(sg.export_onnx(slim, example, args.onnx, progress=False).path)
    progress.seconds["total"] = time.perf_counter() - start
    # the plan's config holds the ratio a --target-macs search settled on (and, after
    # dropped blocks, the latency model of the model without them: not the original's)
    whole = config.latency_model
    return slim_report(
        args, example, plan, plan.config or config, report, files, progress, whole=whole
    )


def _slimmed(
    args: argparse.Namespace,
    model: nn.Module,
    example: Any,
    graph: sg.DependencyGraph,
    config: sg.PruneConfig,
    progress: Progress,
) -> tuple[sg.PruningPlan, nn.Module]:
    """The plan (with any ``--drop-blocks N``) and the slim model, measured and planned
    again with ``--latency-tries``; ``config``'s latency model is measured or read."""
    short, graph, depth = blocks_first(args, model, example, graph, progress)
    asked = config
    if depth is not None:  # the blocks pay part of a latency budget, the width the rest
        config = width_budget(config, depth.renamed)
    params = sg.count_params(model)

    def whole(width: sg.PruningPlan) -> sg.PruningPlan:
        return width if depth is None else width.with_blocks(depth.dropped, params)

    def slim_once(c: sg.PruneConfig) -> tuple[sg.PruningPlan, nn.Module]:
        width = plan_that_applies(short, graph, c)
        return width, sg.apply(model, whole(width), graph=graph, example_inputs=example)

    if args.latency_tries:
        tries = f"up to {args.latency_tries} slim models"
        with progress.step("plan", f"planning, applying and timing {tries}…"):
            plan, slim = fit_latency(
                model, example, graph, config, asked, slim_once, args.latency_tries
            )
    else:
        with progress.step("plan", "planning…"):
            plan = plan_that_applies(short, graph, config)
        with progress.step("apply", "applying…"):
            slim = sg.apply(model, whole(plan), graph=graph, example_inputs=example)
    return whole(plan), slim


def _run_streaming(
    args: argparse.Namespace, config: sg.PruneConfig, progress: Progress, start: float
) -> Outcome:
    """A sharded Hugging Face checkpoint: planned on the meta device from weights read
    tensor by tensor, and written shard by shard (:mod:`slimgraph.io.checkpoint`)."""
    if args.onnx:
        raise UsageError(
            f"--onnx: {args.spec} is a sharded checkpoint, slimmed without loading it; "
            f"export the slim folder afterwards: slimgraph export hf:{args.out} OUT.onnx"
        )
    if args.latency_tries:
        raise UsageError(
            f"--latency-tries: {args.spec} is a sharded checkpoint, slimmed without loading it, "
            "so no slim model runs here to be timed"
        )
    if args.drop_blocks is not None:
        raise UsageError(
            f"--drop-blocks: {args.spec} is a sharded checkpoint, slimmed without loading it, "
            "and streaming does not drop blocks yet; load the model in Python and use "
            "sg.slim(model, inputs, drop_blocks=N)"
        )
    if config.latency_model == TO_MEASURE:
        raise UsageError(
            f"--target-latency: {args.spec} is a sharded checkpoint, slimmed without loading it, "
            "so it cannot be profiled here; profile it where it fits in memory (slimgraph "
            f"profile {args.spec} --out FILE.json) and pass --latency-model FILE.json"
        )
    src = Path(args.spec[3:]).expanduser()
    seq_len = args.input_shape[-1] if args.input_shape else 16
    with progress.step("plan", "planning from the checkpoint, tensor by tensor…"):
        plan = sg.plan_checkpoint(src, config, seq_len=seq_len)
    before = time.perf_counter()
    out = sg.apply_checkpoint(
        src, plan, args.out, overwrite=args.overwrite, progress=progress.enabled
    )
    progress.seconds["apply"] = time.perf_counter() - before
    with progress.step("measure", "counting params and MACs (meta device)…"):
        model = skeleton(src)
        example = synthesize(plan.inputs, "meta")
        report = measure(model, sg.apply(model, plan), example)
    files = {"plan": out / "plan.json", "weights": out / INDEX, "config": out / "config.json"}
    write_text_atomic(files["plan"], plan.model_dump_json(indent=2))
    progress.seconds["total"] = time.perf_counter() - start
    paths = {k: str(v) for k, v in files.items()}
    return slim_report(args, example, plan, plan.config or config, report, paths, progress)


def slim_report(
    args: argparse.Namespace,
    example: Any,
    plan: sg.PruningPlan,
    config: sg.PruneConfig | None,
    report: dict[str, Any],
    files: dict[str, str],
    progress: Progress,
    source: dict[str, Any] | None = None,
    whole: sg.LatencyModel | None = None,
) -> Outcome:
    """The report ``slim`` and ``apply`` print: a table, or the same data as JSON;
    ``source`` (apply's plan file) follows the spec; ``whole``, the latency model of the
    original with all its blocks (see :func:`latency_report`)."""
    result = {
        "spec": args.spec,
        **(source or {}),
        **inputs_report(example),
        "config": config.model_dump(mode="json") if config else None,
        "fingerprint": plan.fingerprint,
        "groups_cut": sum(1 for c in plan.cuts if c.drop),
        "units_dropped": plan.dropped,
        "blocks": list(plan.blocks),
        "held": list(plan.held),
        "latency": latency_report(plan, whole),
        **report,
        "files": files,
        "seconds": {k: round(v, 3) for k, v in progress.seconds.items()},
    }
    return result, print_slim
