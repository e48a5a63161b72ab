"""The ``slimgraph`` argument parser: the top level, the arguments commands share (output,
model, input shape, the planning flags), and one subcommand per module of
:mod:`slimgraph.cli.commands`.

>>> build_parser().parse_args(["slim", "--ratio", "0.3"]).spec
'torchvision:resnet18'
"""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from slimgraph.cli.commands import COMMANDS, Parents
from slimgraph.cli.commands.latency import add_latency_flag
from slimgraph.cli.flags import add_config_flags
from slimgraph.errors import ModelSpecError, UsageError
from slimgraph.io.specs import parse_shape

__all__ = ["DEFAULT_SPEC", "SPEC_HELP", "build_parser"]

DEFAULT_SPEC = "torchvision:resnet18"
SPEC_HELP = (
    "SPEC is torchvision:NAME, timm:NAME, hf:DIRECTORY (a local Hugging Face model folder\n"
    "with config.json), PATH.pt2 (saved by torch.export.save) or package.module:factory\n"
    "(called with no arguments); torchvision and timm weights are random, nothing is\n"
    "downloaded."
)


class _Parser(argparse.ArgumentParser):
    """argparse prints the usage and exits on error; here the error is one line we raise."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The ``slimgraph`` argument parser, with one subcommand per job."""
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
            "  slimgraph bench torchvision:mobilenet_v2 --ratio 0.5 --round-to 16\n"
            "  slimgraph profile torchvision:resnet50 --out r50-latency.json\n\n"
            f"{SPEC_HELP}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"slimgraph {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show warnings and tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parents = _parents()
    for command in COMMANDS:
        command.register(commands, parents)
    return parser


def _parents() -> Parents:
    """The argument sets commands take as argparse parents."""
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
    # The planning flags slim, plan and bench share: one per PruneConfig field.
    planning = argparse.ArgumentParser(add_help=False)
    add_config_flags(planning)
    add_latency_flag(planning)
    return Parents(output=output, model=model, shaped=shaped, planning=planning)


def _shape_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_shape(text)
    except ModelSpecError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _version() -> str:
    try:
        return version("slimgraph")
    except PackageNotFoundError:
        return "unknown"
