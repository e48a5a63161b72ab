"""``slimgraph export``: write simplified, checked ONNX of a model or of its slim copy."""

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
    build_model,
    check_out,
    load_weights_flag,
    read_plan,
)
from slimgraph.cli.render.onnx import print_export
from slimgraph.errors import UsageError
from slimgraph.export.past import cache_keyword

__all__ = ["register", "run"]


def register(commands: Any, parents: Parents) -> None:
    """Add ``export`` to the subparsers ``commands``."""
    export = commands.add_parser(
        "export",
        parents=parents.common(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write simplified, checked ONNX of a model or of its slimmed copy",
        description="Build a model (slimmed by --plan, with --weights if given), export it to\n"
        "ONNX with a dynamic batch dim, simplify it, and check it in ONNX Runtime against\n"
        "PyTorch at two batch sizes.",
        epilog=(
            "examples:\n"
            "  slimgraph export torchvision:resnet18 --out r18.onnx   # the original model\n"
            "  slimgraph slim torchvision:resnet18 --out slim-out\n"
            "  slimgraph export torchvision:resnet18 --plan slim-out/plan.json \\\n"
            "      --weights slim-out/model.safetensors --out slim-out/model.onnx --int8\n"
            "  slimgraph export hf:./my-llm --with-past --out step.onnx   # decoder with cache"
        ),
    )
    export.add_argument(
        "--plan", type=Path, metavar="PLAN.json", help="slim the model by this plan first"
    )
    export.add_argument(
        "--weights", type=Path, metavar="FILE", help="load these safetensors weights"
    )
    export.add_argument(
        "--out",
        type=Path,
        default=Path("model.onnx"),
        metavar="FILE.onnx",
        help="where to write (default: model.onnx)",
    )
    export.add_argument(
        "--int8", action="store_true", help="also write FILE.int8.onnx (dynamic int8 quantization)"
    )
    export.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    export.add_argument(
        "--with-past",
        action="store_true",
        help="causal LM: export one decoder step with the key/value cache as inputs "
        "past_key_values.N.key/value and outputs present.N.key/value (Optimum's layout), "
        "checked by a two-step decode",
    )
    add_overwrite(export, "an existing --out file (and its .int8.onnx)")
    export.set_defaults(run=run)


def run(args: argparse.Namespace) -> Outcome:
    """Export the model of ``args.spec`` (slimmed by ``args.plan``) to ``args.out``."""
    start = time.perf_counter()
    plan = read_plan(args.plan) if args.plan else None
    if args.weights and not args.weights.is_file():
        raise UsageError(f"--weights {args.weights}: no such file")
    check_out(args.out, file=True, overwrite=args.overwrite)
    if args.int8:
        int8 = args.out.with_name(f"{args.out.stem}.int8.onnx")
        check_out(int8, "--int8", file=True, overwrite=args.overwrite)
    progress = Progress(enabled=not args.json)
    model, example = build_model(args.spec, args.input_shape, 0, progress)
    if plan is not None:
        with progress.step("apply", "applying the plan…"):
            try:
                model = sg.apply(model, plan)
            except sg.PlanError as err:
                raise UsageError(f"--plan {args.plan}: {err}") from err
    if args.weights:
        load_weights_flag(model, args.weights)
    if args.with_past:
        try:  # a model without a cache is a wrong flag, found before the slow export
            cache_keyword(model)
        except sg.ExportArgumentError as err:
            raise UsageError(f"--with-past: {err}") from err
    with progress.step("export", f"exporting {args.out}…"):
        report = sg.export_onnx(
            model,
            example,
            args.out,
            simplify=not args.no_simplify,
            quantize="int8" if args.int8 else None,
            with_past=args.with_past,
            progress=False,  # the spinner above
        )
    result = {
        "spec": args.spec,
        "plan": str(args.plan) if args.plan else None,
        **report.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return result, print_export
