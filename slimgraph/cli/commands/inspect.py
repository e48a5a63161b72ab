"""``slimgraph inspect``: list the coupled groups of a model and why some are frozen.

>>> "convolution kernel size" in ROUTINE_REASONS
True
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from slimgraph._core.progress import Progress
from slimgraph.cli.commands.common import Outcome, Parents, build_traced, inputs_report
from slimgraph.cli.render.inspect import print_inspect
from slimgraph.graph.depgraph import Group

__all__ = ["ROUTINE_REASONS", "group_json", "register", "run", "worth_showing"]

# Frozen reasons every CNN has; `inspect` hides groups frozen only by these unless --all.
ROUTINE_REASONS = frozenset(
    {"convolution kernel size", "grouped convolution keeps its channels per group"}
)


def register(commands: Any, parents: Parents) -> None:
    """Add ``inspect`` to the subparsers ``commands``."""
    inspect = commands.add_parser(
        "inspect",
        parents=parents.common(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    inspect.set_defaults(run=run)


def run(args: argparse.Namespace) -> Outcome:
    """The groups of the model of ``args.spec``, with counts."""
    start = time.perf_counter()
    progress = Progress(enabled=not args.json)
    _, example, graph = build_traced(args.spec, args.input_shape, 0, progress)
    shown = [g for g in graph.groups if args.all or worth_showing(g)]
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
        **inputs_report(example),
        "fingerprint": graph.fingerprint,
        "counts": counts,
        "groups": [group_json(g) for g in shown],
        "seconds": round(time.perf_counter() - start, 3),
    }
    return result, lambda r: print_inspect(r, args.all)


def worth_showing(group: Group) -> bool:
    """More than one unit, or frozen for a reason other than the routine ones of a CNN."""
    return group.size > 1 or any(why not in ROUTINE_REASONS for why in group.frozen.values())


def group_json(g: Group) -> dict[str, Any]:
    """One group of the inspect report, as plain JSON data."""
    return {
        "id": g.id,
        "units": g.size,
        "params": [[p, d] for p, d in g.params],
        "modules": g.modules,
        "prunable": g.prunable,
        "frozen": dict(g.frozen),
        "exact": g.exact,
        "inexact": dict(g.inexact),
    }
