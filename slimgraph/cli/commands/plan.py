"""``slimgraph plan``: trace and plan only; write the plan JSON and say what it cuts."""

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
    build_traced,
    check_out,
    check_patterns,
    inputs_report,
    planning_config,
    write_json,
)
from slimgraph.cli.commands.depth import add_depth_flag, best_mix, blocks_first, check_auto
from slimgraph.cli.commands.latency import latency_report, with_latency_model
from slimgraph.cli.render.slim import print_plan
from slimgraph.planner.blocks import width_budget
from slimgraph.rewrite.fallback import plan_that_applies
from slimgraph.tools.measure import pair

__all__ = ["plan_groups", "register", "run"]


def register(commands: Any, parents: Parents) -> None:
    """Add ``plan`` to the subparsers ``commands``."""
    plan = commands.add_parser(
        "plan",
        parents=[*parents.common(), parents.planning],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="trace and plan only; write the plan JSON",
        description="Trace a model and plan which units to drop, leaving the model as it is:\n"
        "write the plan as JSON and print what it cuts and the params it leaves.\n"
        "Review or edit it, compare it with 'slimgraph diff', apply it with 'slimgraph apply'.",
        epilog=(
            "examples:\n"
            "  slimgraph plan torchvision:resnet18 --ratio 0.5 --out plan.json\n"
            "  slimgraph plan timm:resnet50 --scope global --round-to 8 --out r50.json --show\n"
            "  slimgraph plan hf:./tiny-llama --keep-residual --out llama-plan.json --json"
        ),
    )
    plan.add_argument(
        "--out",
        type=Path,
        default=Path("plan.json"),
        metavar="FILE.json",
        help="where to write the plan (default: plan.json)",
    )
    add_depth_flag(plan)
    add_overwrite(plan, "an existing --out file")
    plan.add_argument(
        "--show", action="store_true", help="also list every group: units kept/total, modules"
    )
    plan.set_defaults(run=run)


def run(args: argparse.Namespace) -> Outcome:
    """Plan the model of ``args.spec`` and write the plan to ``args.out``."""
    start = time.perf_counter()
    config = planning_config(args)
    check_auto(args, config)
    check_out(args.out, file=True, overwrite=args.overwrite)
    progress = Progress(enabled=not args.json)
    model, example, graph = build_traced(
        args.spec, args.input_shape, args.seed, progress, lambda m: check_patterns(m, config)
    )
    short, graph, depth = blocks_first(args, model, example, graph, progress)
    config = with_latency_model(config, model, example, progress)
    # the whole model's, before blocks pay part of the budget (the plan's is the shorter's)
    whole = config.latency_model
    if args.drop_blocks == "auto":
        mixed = best_mix(model, example, config, 0, progress)
        plan, graph = mixed.plan, mixed.graph
    else:
        if depth is not None:  # the blocks pay part of a latency budget, the width the rest
            config = width_budget(config, depth.renamed)
        with progress.step("plan", "planning…"):
            plan = plan_that_applies(short, graph, config)
            if depth is not None:
                plan = plan.with_blocks(depth.dropped, sg.count_params(model))
    with progress.step("save", f"writing {args.out}…"):
        check_out(args.out, file=True, overwrite=args.overwrite)  # nothing appeared since
        write_json(args.out, plan)
    progress.seconds["total"] = time.perf_counter() - start
    result = {
        "spec": args.spec,
        **inputs_report(example),
        "config": (plan.config or config).model_dump(mode="json"),  # with a searched ratio
        "fingerprint": plan.fingerprint,
        "groups_cut": sum(1 for c in plan.cuts if c.drop),
        "units_dropped": plan.dropped,
        "blocks": list(plan.blocks),
        "held": list(plan.held),
        "latency": latency_report(plan, whole),
        "params": pair(plan.params_before, plan.params_after),
        "groups": plan_groups(plan),
        "skipped": dict(plan.skipped),
        **(_review(graph, plan) if args.show else {}),
        "file": str(args.out),
        "seconds": {k: round(v, 3) for k, v in progress.seconds.items()},
    }
    return result, lambda r: print_plan(r, args.show)


def plan_groups(plan: sg.PruningPlan) -> list[dict[str, Any]]:
    """Every planned group (some may drop nothing): id, units kept of all, modules."""
    return [
        {"id": c.group, "kept": c.size - len(c.drop), "units": c.size, "modules": list(c.modules)}
        for c in plan.cuts
    ]


def _review(graph: sg.DependencyGraph, plan: sg.PruningPlan) -> dict[str, Any]:
    """``--show``: every layer whose shapes change, and the untouched groups by reason."""
    summary = plan.summary(graph)
    return {
        "layers": [r.model_dump(mode="json") for r in summary.changed()],
        "macs": pair(summary.macs_before, summary.macs_after),
        "untouched": summary.untouched_by_reason(),
    }
