"""The ``slimgraph`` command: slim a model into a directory, inspect its groups, plan
and apply in two steps, compare plans, export to ONNX and benchmark.

Run ``slimgraph --help`` for the commands, ``slimgraph slim --help`` for one command.
Bad input exits with status 2 and one line on stderr that says what to fix; any other
refusal of slimgraph exits with status 1; ``--verbose`` adds the traceback.

>>> main(["slim", "--ratio", "1.5"])
2
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

import slimgraph as sg
from slimgraph.cli import render
from slimgraph.criteria.calibration import needs_of
from slimgraph.errors import ModelSpecError, SlimGraphError, UsageError
from slimgraph.io.specs import build, parse_shape
from slimgraph.io.weights import save_weights
from slimgraph.rewrite.fallback import plan_that_applies

__all__ = ["main", "build_parser"]

DEFAULT_SPEC = "torchvision:resnet18"
DEFAULT_OUT = "slim-out"
SPEC_HELP = (
    "SPEC is torchvision:NAME, timm:NAME, hf:DIRECTORY (a local Hugging Face model folder\n"
    "with config.json), PATH.pt2 (saved by torch.export.save) or package.module:factory\n"
    "(called with no arguments); torchvision and timm weights are random, nothing is\n"
    "downloaded."
)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# PruneConfig field -> (flag, what a valid value looks like), to word validation errors.
CONFIG_FLAGS = {
    "ratio": ("--ratio", "use a fraction in [0, 1), e.g. 0.5"),
    "importance": ("--importance", ""),
    "scope": ("--scope", "use local, global or isomorphic"),
    "round_to": ("--round-to", "use a positive integer, e.g. 8"),
    "min_keep": ("--min-keep", "use a positive integer"),
    "ignore": ("--ignore", ""),
    "overrides": ("--override", "use GLOB=RATIO with RATIO in [0, 1)"),
    "seed": ("--seed", "use an integer"),
    "target_macs": ("--target-macs", "use a fraction in (0, 1], e.g. 0.5"),
    "target_params": ("--target-params", "use a fraction in (0, 1], e.g. 0.5"),
    "max_ratio": ("--max-ratio", "use a fraction in (0, 1), at least --ratio"),
}


class _Parser(argparse.ArgumentParser):
    """argparse prints the usage and exits on error; here the error is one line we raise."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# -- command line ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``slimgraph`` argument parser, with one subcommand per job.

    >>> build_parser().parse_args(["slim", "--ratio", "0.3"]).spec
    'torchvision:resnet18'
    """
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="slimgraph",
        description="Structured pruning of PyTorch models by graph rewriting.",
        epilog=(
            "examples:\n"
            "  slimgraph slim                                  # resnet18 at ratio 0.5 into slim-out/\n"
            "  slimgraph inspect torchvision:mobilenet_v3_small --all\n"
            "  slimgraph plan timm:resnet50 --ratio 0.3 --out r50-plan.json --show\n"
            "  slimgraph apply timm:resnet50 --plan r50-plan.json --out r50-slim\n"
            "  slimgraph diff r50-plan.json slim-out/plan.json\n"
            "  slimgraph export torchvision:resnet18 --plan slim-out/plan.json --out r18.onnx\n"
            "  slimgraph bench torchvision:mobilenet_v2 --ratio 0.5 --round-to 16\n\n"
            f"{SPEC_HELP}"
        ),
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"slimgraph {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show warnings and tracebacks")
    # -v and --json, which every command takes.
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show warnings and tracebacks",
    )
    output.add_argument("--json", action="store_true", help="print JSON instead of tables")
    # The model, for every command but diff.
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument(
        "spec",
        nargs="?",
        default=DEFAULT_SPEC,
        metavar="SPEC",
        help=f"model to build (default: {DEFAULT_SPEC}): torchvision:NAME, timm:NAME, "
        "hf:DIRECTORY, PATH.pt2 or package.module:factory",
    )
    # Its example input, for every command that traces it at a shape of the user's choice.
    shaped = argparse.ArgumentParser(add_help=False)
    shaped.add_argument(
        "--input-shape",
        type=_shape_arg,
        metavar="N,C,H,W",
        help="shape of the random example input (default: what the model expects, "
        "e.g. 1,3,224,224; 1,3,299,299 for inception_v3; BATCH,LENGTH of the token ids "
        "of an hf: text model)",
    )
    common = [output, shaped, model]
    # The planning flags slim and bench share.
    planning = argparse.ArgumentParser(add_help=False)
    planning.add_argument(
        "--ratio", type=float, default=0.5, help="fraction of channels dropped per group"
    )
    planning.add_argument(
        "--importance", default="l2", help="criterion: l1, l2, bn_scale, random (default l2)"
    )
    planning.add_argument(
        "--scope",
        choices=["local", "global", "isomorphic"],
        default="local",
        help="rank units per group (local), across groups (global) or across groups of the "
        "same structure (isomorphic)",
    )
    planning.add_argument(
        "--round-to",
        type=int,
        default=1,
        metavar="N",
        help="kept units per group are a multiple of N",
    )
    planning.add_argument(
        "--min-keep",
        type=int,
        default=1,
        metavar="N",
        help="never keep fewer than N units in a group",
    )
    planning.add_argument(
        "--ignore",
        nargs="+",
        action="extend",
        default=[],
        metavar="GLOB",
        help="leave modules matching these globs alone, e.g. 'layer4.*' (put SPEC first)",
    )
    planning.add_argument(
        "--override",
        type=_override_arg,
        action="append",
        default=[],
        metavar="GLOB=RATIO",
        help="another ratio for matching modules",
    )
    planning.add_argument(
        "--target-macs",
        type=float,
        metavar="FRACTION",
        help="keep this fraction of the MACs (e.g. 0.5); the ratio is searched for",
    )
    planning.add_argument(
        "--target-params",
        type=float,
        metavar="FRACTION",
        help="keep this fraction of the parameters; the ratio is searched for",
    )
    planning.add_argument(
        "--max-ratio",
        type=float,
        metavar="FRACTION",
        help="global/isomorphic scope: no group drops more than this fraction",
    )
    planning.add_argument(
        "--keep-residual",
        action="store_true",
        help="leave residual-stream widths alone (prune_residual=False)",
    )
    planning.add_argument("--seed", type=int, default=0, help="seed of the input and of 'random'")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    slim = commands.add_parser(
        "slim",
        parents=[*common, planning],
        formatter_class=fmt,
        help="trace, plan and apply; write plan.json and model.safetensors",
        description="Trace a model, plan which units to drop, apply the plan, and write\n"
        "OUT/plan.json and OUT/model.safetensors. Prints params, MACs and stage widths\n"
        "before and after.",
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
    slim.set_defaults(run=_run_slim)

    inspect = commands.add_parser(
        "inspect",
        parents=common,
        formatter_class=fmt,
        help="list the coupled groups of a model and why some are frozen",
        description="Trace a model and list its groups: id, prunable units, parameter dims,\n"
        "modules, prunable or frozen (and why), exact or not.",
        epilog=(
            "examples:\n"
            "  slimgraph inspect torchvision:resnet18\n"
            "  slimgraph inspect timm:vit_tiny_patch16_224 --all\n"
            "  slimgraph inspect my_package.models:build --input-shape 1,3,64,64 --json"
        ),
    )
    inspect.add_argument(
        "--all",
        action="store_true",
        help="show every group (default: groups with more than one unit, or frozen for a "
        "reason other than kernel sizes)",
    )
    inspect.set_defaults(run=_run_inspect)

    export = commands.add_parser(
        "export",
        parents=common,
        formatter_class=fmt,
        help="write simplified, checked ONNX of a model or of its slimmed copy",
        description="Build a model (slimmed by --plan, with --weights if given), export it to\n"
        "ONNX with a dynamic batch dim, simplify it, and check it in ONNX Runtime against\n"
        "PyTorch at two batch sizes.",
        epilog=(
            "examples:\n"
            "  slimgraph export torchvision:resnet18 --out r18.onnx   # the original model\n"
            "  slimgraph slim torchvision:resnet18 --out slim-out\n"
            "  slimgraph export torchvision:resnet18 --plan slim-out/plan.json \\\n"
            "      --weights slim-out/model.safetensors --out slim-out/model.onnx --int8"
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
    export.set_defaults(run=_run_export)

    bench = commands.add_parser(
        "bench",
        parents=[*common, planning],
        formatter_class=fmt,
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
    bench.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    bench.add_argument("--runs", type=int, default=20, help="timed runs after warm-up (default 20)")
    bench.add_argument(
        "--keep-onnx",
        type=Path,
        metavar="DIR",
        help="write original.onnx and slim.onnx here (default: a temporary directory)",
    )
    bench.set_defaults(run=_run_bench)

    plan = commands.add_parser(
        "plan",
        parents=[*common, planning],
        formatter_class=fmt,
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
    plan.add_argument(
        "--show", action="store_true", help="also list every group: units kept/total, modules"
    )
    plan.set_defaults(run=_run_plan)

    apply = commands.add_parser(
        "apply",
        parents=[output, model],
        formatter_class=fmt,
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
    apply.set_defaults(run=_run_apply)

    diff = commands.add_parser(
        "diff",
        parents=[output],
        formatter_class=fmt,
        help="compare two plans: config, and units dropped per group",
        description="Compare two plan files: whether they were made for the same model\n"
        "(fingerprint), the config fields that differ, and per group the units each drops\n"
        "and how many only one of them drops.",
        epilog=(
            "examples:\n"
            "  slimgraph diff plan-l1.json plan-l2.json\n"
            "  slimgraph diff slim-out/plan.json plan.json --json"
        ),
    )
    diff.add_argument("a", type=Path, metavar="A.json", help="the first plan")
    diff.add_argument("b", type=Path, metavar="B.json", help="the second plan")
    diff.set_defaults(run=_run_diff)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status (0 ok, 1 refused, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        args = build_parser().parse_args(argv)
        verbose = args.verbose
        with warnings.catch_warnings():
            if not verbose:  # model zoos warn about their own defaults; not the user's concern
                warnings.simplefilter("ignore")
            return args.run(args)
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else EXIT_OK
    except BrokenPipeError:  # `slimgraph ... | head`: stop quietly, as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (UsageError, ModelSpecError) as err:
        return _fail(str(err), EXIT_USAGE, verbose)
    except SlimGraphError as err:
        return _fail(str(err), EXIT_FAILED, verbose)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, verbose=False)
    except Exception as err:
        hint = "" if verbose else " (rerun with --verbose for the traceback)"
        return _fail(f"unexpected {type(err).__name__}: {err}{hint}", EXIT_FAILED, verbose)


def _fail(message: str, code: int, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"slimgraph: error: {message}", file=sys.stderr)
    return code


def _shape_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_shape(text)
    except ModelSpecError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _override_arg(text: str) -> tuple[str, float]:
    pattern, sep, ratio = text.rpartition("=")
    try:
        if not sep or not pattern:
            raise ValueError
        return pattern, float(ratio)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not GLOB=RATIO; write it like 'layer4.*=0.25'"
        ) from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slimgraph")
    except PackageNotFoundError:
        return "unknown"


def _config(args: argparse.Namespace) -> sg.PruneConfig:
    """Validate the flags as a PruneConfig before any model is built."""
    try:
        config = sg.PruneConfig(
            ratio=args.ratio,
            importance=args.importance,
            scope=args.scope,
            round_to=args.round_to,
            min_keep=args.min_keep,
            ignore=tuple(args.ignore),
            overrides=dict(args.override),
            prune_residual=not args.keep_residual,
            target_macs=args.target_macs,
            target_params=args.target_params,
            max_ratio=args.max_ratio,
            seed=args.seed,
        )
    except ValidationError as err:
        raise UsageError(_config_message(err)) from None
    if needs_of(config):
        raise UsageError(
            f"--importance {config.importance} reads calibration data, which the command line "
            f"does not take; in Python: sg.slim(model, inputs, importance="
            f"{config.importance!r}, calibration=batches)"
        )
    return config


def _config_message(err: ValidationError) -> str:
    """One line per field error: which flag, what value, what to use instead."""
    parts = []
    for e in err.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        flag, hint = CONFIG_FLAGS.get(field, (field, ""))
        value = e.get("input")
        shown = f" {value}" if isinstance(value, (int, float, str)) else ""
        msg = e["msg"].removeprefix("Value error, ")
        if not field:  # a rule across fields: its message names them
            parts.append(msg)
            continue
        parts.append(f"{flag}{shown}: {msg[:1].lower()}{msg[1:]}" + (f"; {hint}" if hint else ""))
    return "; ".join(parts)


def _emit(args: argparse.Namespace, result: dict, printer: Callable[[dict], None]) -> int:
    """A command's ending: its result as JSON (``--json``) or as ``printer`` renders it."""
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        printer(result)
    return EXIT_OK


def _check_out(out: Path, flag: str = "--out", file: bool = False) -> None:
    """Refuse a ``flag`` path that cannot become a writable directory (or, with ``file``, a
    file in a writable directory), before any work."""
    if file and out.is_dir():
        raise UsageError(
            f"{flag} {out}: a directory is in the way; pass a file path, e.g. {out / 'plan.json'}"
        )
    if not file and out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out}: a file is in the way; pass a directory path")
    parent = out.parent if file else out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {out}: {parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag} {out}: {parent} is not writable; choose a directory you can write"
        )


def _check_patterns(model: nn.Module, config: sg.PruneConfig) -> None:
    """A glob that matches no module is a typo: say so instead of silently slimming it."""
    names = [name for name, _ in model.named_modules() if name]
    for flag, patterns in (("--ignore", config.ignore), ("--override", config.overrides)):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                raise UsageError(
                    f"{flag} {pattern!r} matches no module of this model; module names look "
                    f"like {', '.join(names[:3])} (see 'slimgraph inspect --all')"
                )


# -- running the commands -------------------------------------------------------------


def _build(
    spec: str,
    shape: tuple[int, ...] | None,
    seed: int,
    progress: render.Progress,
    check: Callable[[nn.Module], None] | None = None,
):
    """Build the model in eval mode and its example inputs, check it, then trace it.

    The example inputs are what ``sg.trace`` takes: a tuple of positional tensors, or a
    dict of keyword tensors (``hf:`` specs).
    """
    torch.manual_seed(seed)
    with progress.step("load", f"building {spec}…"):
        model, example = build(spec, shape)
        model.eval()  # deployment mode: dropout off, BatchNorm frozen
    if check is not None:
        check(model)
    with progress.step("trace", "tracing…"):
        graph = sg.trace(model, example)
    return model, example, graph


def _inputs(example: Any) -> dict[str, Any]:
    """The example inputs in a report: the first one's shape, and every one's name,
    shape and dtype."""
    inputs = render.inputs_json(example)
    return {"input_shape": inputs[0]["shape"] if inputs else [], "inputs": inputs}


def _run_slim(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    config = _config(args)
    _check_out(args.out)
    if args.onnx:
        _check_out(args.onnx.parent, "--onnx")
    progress = render.Progress(enabled=not args.json)
    model, example, graph = _build(
        args.spec, args.input_shape, args.seed, progress, lambda m: _check_patterns(m, config)
    )
    with progress.step("plan", "planning…"):
        plan = plan_that_applies(model, graph, config)
    with progress.step("apply", "applying…"):
        slim = sg.apply(model, plan, graph=graph, example_inputs=example)
    with progress.step("measure", "counting params and MACs…"):
        report = render.measure(model, slim, example)
    with progress.step("save", f"writing {args.out}…"):
        files = _write(args.out, plan, slim)
    if args.onnx:
        with progress.step("export", f"exporting {args.onnx}…"):
            files["onnx"] = str(sg.export_onnx(slim, example, args.onnx).path)
    progress.seconds["total"] = time.perf_counter() - start
    # the plan's config holds the ratio a --target-macs search settled on
    return _slim_report(args, example, plan, plan.config or config, report, files, progress)


def _slim_report(
    args: argparse.Namespace,
    example: Any,
    plan: sg.PruningPlan,
    config: sg.PruneConfig | None,
    report: dict[str, Any],
    files: dict[str, str],
    progress: render.Progress,
    source: dict[str, Any] | None = None,
) -> int:
    """The report ``slim`` and ``apply`` print: a table, or the same data as JSON;
    ``source`` (apply's plan file) follows the spec."""
    result = {
        "spec": args.spec,
        **(source or {}),
        **_inputs(example),
        "config": config.model_dump(mode="json") if config else None,
        "fingerprint": plan.fingerprint,
        "groups_cut": sum(1 for c in plan.cuts if c.drop),
        "units_dropped": plan.dropped,
        **report,
        "files": files,
        "seconds": {k: round(v, 3) for k, v in progress.seconds.items()},
    }
    return _emit(args, result, render.print_slim)


def _write(out: Path, plan: sg.PruningPlan, slim: nn.Module) -> dict[str, str]:
    files = {"plan": out / "plan.json", "weights": out / "model.safetensors"}
    try:
        out.mkdir(parents=True, exist_ok=True)
        files["plan"].write_text(plan.model_dump_json(indent=2))
        save_weights(slim, files["weights"], {"slimgraph.fingerprint": plan.fingerprint})
    except OSError as err:
        raise UsageError(
            f"--out {out}: cannot write ({err.strerror or err}); choose another directory"
        ) from err
    return {k: str(v) for k, v in files.items()}


def _read_plan(path: Path, flag: str = "--plan") -> sg.PruningPlan:
    """The validated plan in ``path``; a bad file is one line naming ``flag`` and the path."""
    named = f"{flag} {path}" if flag else str(path)
    try:
        return sg.PruningPlan.model_validate_json(path.read_text())
    except OSError as err:
        raise UsageError(f"{named}: cannot read it ({err.strerror or err})") from err
    except (ValidationError, ValueError) as err:
        if not isinstance(err, ValidationError):  # not text: bytes that are not UTF-8
            raise UsageError(f"{named}: not a valid plan (not UTF-8 text)") from err
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "the file"
        raise UsageError(f"{named}: not a valid plan ({where}: {first['msg']})") from err


def _run_export(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    plan = _read_plan(args.plan) if args.plan else None
    if args.weights and not args.weights.is_file():
        raise UsageError(f"--weights {args.weights}: no such file")
    progress = render.Progress(enabled=not args.json)
    torch.manual_seed(0)
    with progress.step("load", f"building {args.spec}…"):
        model, example = build(args.spec, args.input_shape)
        model.eval()
    if plan is not None:
        with progress.step("apply", "applying the plan…"):
            try:
                model = sg.apply(model, plan)
            except sg.PlanError as err:
                raise UsageError(f"--plan {args.plan}: {err}") from err
    if args.weights:
        try:
            sg.load_weights(model, args.weights)
        except (RuntimeError, OSError) as err:
            raise UsageError(f"--weights {args.weights}: {str(err).splitlines()[0]}") from err
    with progress.step("export", f"exporting {args.out}…"):
        report = sg.export_onnx(
            model,
            example,
            args.out,
            simplify=not args.no_simplify,
            quantize="int8" if args.int8 else None,
        )
    result = {
        "spec": args.spec,
        "plan": str(args.plan) if args.plan else None,
        **report.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return _emit(args, result, render.print_export)


def _run_bench(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    config = _config(args)
    if args.threads < 1 or args.runs < 1:
        raise UsageError("--threads and --runs must be positive integers, e.g. --threads 1")
    if args.keep_onnx:
        _check_out(args.keep_onnx, "--keep-onnx")
    progress = render.Progress(enabled=not args.json)
    model, example, graph = _build(
        args.spec, args.input_shape, args.seed, progress, lambda m: _check_patterns(m, config)
    )
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
        **_inputs(example),
        "config": config.model_dump(mode="json"),
        **report.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return _emit(args, result, render.print_bench)


def _run_inspect(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    progress = render.Progress(enabled=not args.json)
    _, example, graph = _build(args.spec, args.input_shape, 0, progress)
    shown = [g for g in graph.groups if args.all or render.worth_showing(g)]
    prunable = graph.prunable_groups()
    counts = {
        "groups": len(graph.groups),
        "prunable": len(prunable),
        "exact": sum(g.exact for g in prunable),
        "frozen": len(graph.groups) - len(prunable),
        "shown": len(shown),
    }
    result = {
        "spec": args.spec,
        **_inputs(example),
        "fingerprint": graph.fingerprint,
        "counts": counts,
        "groups": [render.group_json(g) for g in shown],
        "seconds": round(time.perf_counter() - start, 3),
    }
    return _emit(args, result, lambda r: render.print_inspect(r, args.all))


def _run_plan(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    config = _config(args)
    _check_out(args.out, file=True)
    progress = render.Progress(enabled=not args.json)
    model, example, graph = _build(
        args.spec, args.input_shape, args.seed, progress, lambda m: _check_patterns(m, config)
    )
    with progress.step("plan", "planning…"):
        plan = plan_that_applies(model, graph, config)
    with progress.step("save", f"writing {args.out}…"):
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(plan.model_dump_json(indent=2))
        except OSError as err:
            raise UsageError(
                f"--out {args.out}: cannot write ({err.strerror or err}); choose another path"
            ) from err
    progress.seconds["total"] = time.perf_counter() - start
    result = {
        "spec": args.spec,
        **_inputs(example),
        "config": (plan.config or config).model_dump(mode="json"),  # with a searched ratio
        "fingerprint": plan.fingerprint,
        "groups_cut": sum(1 for c in plan.cuts if c.drop),
        "units_dropped": plan.dropped,
        "params": render.pair(plan.params_before, plan.params_after),
        "groups": render.plan_groups(plan),
        "skipped": dict(plan.skipped),
        **(_review(graph, plan) if args.show else {}),
        "file": str(args.out),
        "seconds": {k: round(v, 3) for k, v in progress.seconds.items()},
    }
    return _emit(args, result, lambda r: render.print_plan(r, args.show))


def _review(graph: sg.DependencyGraph, plan: sg.PruningPlan) -> dict[str, Any]:
    """``--show``: every layer whose shapes change, and the untouched groups by reason."""
    summary = plan.summary(graph)
    return {
        "layers": [r.model_dump(mode="json") for r in summary.changed()],
        "macs": render.pair(summary.macs_before, summary.macs_after),
        "untouched": summary.untouched_by_reason(),
    }


def _run_apply(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    plan = _read_plan(args.plan)
    if args.weights and not args.weights.is_file():
        raise UsageError(f"--weights {args.weights}: no such file")
    _check_out(args.out)
    progress = render.Progress(enabled=not args.json)
    model, example, graph = _build_for_plan(args, plan, progress)
    with progress.step("apply", "applying…"):
        try:
            slim = sg.apply(model, plan, graph=graph, example_inputs=example)
        except sg.PlanError as err:
            raise UsageError(f"--plan {args.plan}: {err}") from err
    with progress.step("measure", "counting params and MACs…"):
        report = render.measure(model, slim, example)
    with progress.step("save", f"writing {args.out}…"):
        files = _write(args.out, plan, slim)
    progress.seconds["total"] = time.perf_counter() - start
    source = {"plan": str(args.plan)}
    return _slim_report(args, example, plan, plan.config, report, files, progress, source)


def _build_for_plan(args: argparse.Namespace, plan: sg.PruningPlan, progress: render.Progress):
    """Build the model (with ``--weights``), trace it at the plan's input shapes, and
    refuse a plan that was made for another model."""
    torch.manual_seed(plan.config.seed if plan.config else 0)
    with progress.step("load", f"building {args.spec}…"):
        model, own = build(args.spec)
        model.train(plan.training)
        example = _plan_inputs(plan, own, args)
    if args.weights:
        try:
            sg.load_weights(model, args.weights)
        except (RuntimeError, OSError) as err:
            raise UsageError(
                f"--weights {args.weights}: {str(err).splitlines()[0]} (pass the weights of "
                "the model before slimming)"
            ) from err
    with progress.step("trace", "tracing…"):
        try:
            graph = sg.trace(model, example, head_dims=plan.head_dims, query_heads=plan.query_heads)
        except sg.TraceError as err:
            if own is example:  # the model's own inputs: not the plan's fault
                raise
            shapes = render.inputs_text(render.inputs_json(example))
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
    built = render.inputs_json(example)
    if not recorded or built == recorded:
        return example
    kinds = [[(i["name"], i["dtype"]) for i in inputs] for inputs in (recorded, built)]
    if kinds[0] != kinds[1]:
        raise _another_model(
            args,
            f"it records input {render.inputs_text(recorded)}, {args.spec} takes "
            f"{render.inputs_text(built)}",
        )
    named = {s.name: _random(s.shape, s.dtype) for s in plan.inputs if s.name}
    return named or tuple(_random(s.shape, s.dtype) for s in plan.inputs)


def _another_model(args: argparse.Namespace, detail: str) -> UsageError:
    return UsageError(
        f"--plan {args.plan} was made for another model ({detail}); make a plan for this "
        f"model with 'slimgraph plan {args.spec} --out plan.json'"
    )


def _random(shape: tuple[int, ...], dtype_name: str) -> torch.Tensor:
    dtype = getattr(torch, dtype_name)
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype)
    return torch.zeros(shape, dtype=dtype)


def _run_diff(args: argparse.Namespace) -> int:
    a, b = _read_plan(args.a, flag=""), _read_plan(args.b, flag="")
    result = {"a": str(args.a), "b": str(args.b), **render.diff_plans(a, b)}
    return _emit(args, result, render.print_diff)


if __name__ == "__main__":
    raise SystemExit(main())
