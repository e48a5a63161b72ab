"""``slimgraph diff``: compare two plan files (model, config, units dropped per group)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from slimgraph.cli.commands.common import Outcome, Parents, read_plan
from slimgraph.cli.render.diff import print_diff
from slimgraph.resolve.diff import diff_plans

__all__ = ["register", "run"]


def register(commands: Any, parents: Parents) -> None:
    """Add ``diff`` to the subparsers ``commands``."""
    diff = commands.add_parser(
        "diff",
        parents=[parents.output],
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    diff.set_defaults(run=run)


def run(args: argparse.Namespace) -> Outcome:
    """What differs between the plans ``args.a`` and ``args.b``."""
    a, b = read_plan(args.a, flag=""), read_plan(args.b, flag="")
    return {"a": str(args.a), "b": str(args.b), **diff_plans(a, b)}, print_diff
