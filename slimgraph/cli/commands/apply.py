"""``slimgraph apply``: apply a plan file to a model built from its spec, after checking
that the plan was made for that model; write model.safetensors and the plan."""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import torch

import slimgraph as sg
from slimgraph._core.inputs import MAX_INPUT_BYTES, check_input_bytes, synthesize
from slimgraph._core.progress import Progress
from slimgraph.cli.commands.common import (
    Outcome,
    Parents,
    add_overwrite,
    check_out,
    inputs_json,
    load_weights_flag,
    read_plan,
    write_slim,
)
from slimgraph.cli.commands.slim import DEFAULT_OUT, slim_report
from slimgraph.cli.render.text import inputs_text
from slimgraph.errors import SlimGraphError, UsageError
from slimgraph.io.specs import build
from slimgraph.rewrite.apply import without_blocks
from slimgraph.tools.measure import measure

__all__ = ["register", "run"]


def register(commands: Any, parents: Parents) -> None:
    """Add ``apply`` to the subparsers ``commands``."""
    apply = commands.add_parser(
        "apply",
        parents=[parents.output, parents.model],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="apply a plan to a model; write model.safetensors and the plan",
        description="Build a model, check that the plan was made for it, apply the plan,\n"
        "and write OUT/model.safetensors and OUT/plan.json. The model is traced at the\n"
        "input shapes the plan records. Prints params, MACs and stage widths before and\n"
        "after.",
        epilog=(
            "examples:\n"
            "  slimgraph apply torchvision:resnet18 --plan plan.json --out slim-out\n"
            "  slimgraph apply torchvision:resnet18 --plan plan.json --weights trained.safetensors "
            "--out slim-out\n"
            "  slimgraph apply hf:./tiny-llama --plan llama-plan.json --out llama-slim --json\n\n"
            "make the plan with: slimgraph plan torchvision:resnet18 --out plan.json"
        ),
    )
    apply.add_argument(
        "--plan", type=Path, required=True, metavar="PLAN.json", help="the plan to apply"
    )
    apply.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="load these safetensors weights into the model before it is slimmed",
    )
    apply.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help=f"output directory (default: {DEFAULT_OUT})",
    )
    add_overwrite(apply)
    apply.add_argument(
        "--max-input-bytes",
        type=int,
        default=MAX_INPUT_BYTES,
        metavar="N",
        help="largest total size of the inputs made at the plan's recorded shapes "
        f"(default: {MAX_INPUT_BYTES})",
    )
    apply.set_defaults(run=run)


def run(args: argparse.Namespace) -> Outcome:
    """Apply ``args.plan`` to the model of ``args.spec``; write the result to ``args.out``."""
    start = time.perf_counter()
    plan = read_plan(args.plan)
    if args.weights and not args.weights.is_file():
        raise UsageError(f"--weights {args.weights}: no such file")
    check_out(args.out, overwrite=args.overwrite)
    try:  # before anything is built: a recorded shape is data from a file
        check_input_bytes(plan.inputs, args.max_input_bytes)
    except SlimGraphError as err:
        raise UsageError(f"--plan {args.plan}: {err}") from err
    progress = Progress(enabled=not args.json)
    model, example, graph = _build_for_plan(args, plan, progress)
    with progress.step("apply", "applying…"):
        try:
            slim = sg.apply(model, plan, graph=graph, example_inputs=example)
        except sg.PlanError as err:
            raise UsageError(f"--plan {args.plan}: {err}") from err
    with progress.step("measure", "counting params and MACs…"):
        report = measure(model, slim, example)
    with progress.step("save", f"writing {args.out}…"):
        files = write_slim(args.out, plan, slim, args.overwrite)
    progress.seconds["total"] = time.perf_counter() - start
    source = {"plan": str(args.plan)}
    # after dropped blocks the plan's latency model is the shorter model's: no original's
    whole = plan.config.latency_model if plan.config and not plan.blocks else None
    return slim_report(args, example, plan, plan.config, report, files, progress, source, whole)


def _build_for_plan(args: argparse.Namespace, plan: sg.PruningPlan, progress: Progress):
    """Build the model (with ``--weights``), trace it at the plan's input shapes, and
    refuse a plan that was made for another model."""
    torch.manual_seed(plan.config.seed if plan.config else 0)
    with progress.step("load", f"building {args.spec}…"):
        model, own = build(args.spec)
        model.train(plan.training)
        example = _plan_inputs(plan, own, args)
    if args.weights:
        load_weights_flag(model, args.weights, " (pass the weights of the model before slimming)")
    traced = model
    if plan.blocks:  # the plan's graph is of the model without them
        traced = copy.deepcopy(model)
        try:
            without_blocks(traced, plan)
        except SlimGraphError as err:
            raise _another_model(args, str(err).splitlines()[0]) from err
    with progress.step("trace", "tracing…"):
        try:
            graph = sg.trace(
                traced, example, head_dims=plan.head_dims, query_heads=plan.query_heads
            )
        except sg.TraceError as err:
            if own is example:  # the model's own inputs: not the plan's fault
                raise
            shapes = inputs_text(inputs_json(example))
            raise _another_model(
                args, f"it records input {shapes}, at which {args.spec} does not trace"
            ) from err
    if plan.fingerprint != graph.fingerprint:
        raise _another_model(
            args, f"fingerprint {plan.fingerprint}; {args.spec} has {graph.fingerprint}"
        )
    return model, example, graph


def _plan_inputs(plan: sg.PruningPlan, example: Any, args: argparse.Namespace) -> Any:
    """``example`` if it has the names, shapes and dtypes the plan records, else random
    inputs of those (floats normal, integers zero): the model is traced as planned.
    Inputs of other names or dtypes mean the plan was made for another model."""
    recorded = [s.model_dump(mode="json") for s in plan.inputs]
    built = inputs_json(example)
    if not recorded or built == recorded:
        return example
    kinds = [[(i["name"], i["dtype"]) for i in inputs] for inputs in (recorded, built)]
    if kinds[0] != kinds[1]:
        raise _another_model(
            args,
            f"it records input {inputs_text(recorded)}, {args.spec} takes {inputs_text(built)}",
        )
    return synthesize(plan.inputs, max_input_bytes=args.max_input_bytes)


def _another_model(args: argparse.Namespace, detail: str) -> UsageError:
    return UsageError(
        f"--plan {args.plan} was made for another model ({detail}); make a plan for this "
        f"model with 'slimgraph plan {args.spec} --out plan.json'"
    )
