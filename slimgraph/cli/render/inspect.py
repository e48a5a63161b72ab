"""The inspect report: a table of groups and a line of counts.

>>> _state({"prunable": False, "frozen": {"conv1.weight dim 1": "model input"}})
'frozen by conv1.weight dim 1: model input'
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from slimgraph.cli.render.text import inputs_text, modules, stdout

__all__ = ["print_inspect"]


def print_inspect(r: dict[str, Any], everything: bool) -> None:
    """The inspect report as a table of groups and a line of counts."""

    console = stdout()
    table = Table(title=f"groups of {r['spec']} (input {inputs_text(r['inputs'])})")
    table.add_column("group", no_wrap=True)
    table.add_column("units", justify="right")
    table.add_column("dims", justify="right")
    table.add_column("modules")
    table.add_column("state")
    table.add_column("exact")
    for g in r["groups"]:
        table.add_row(
            Text(g["id"]),
            str(g["units"]),
            str(len(g["params"])),
            Text(modules(g["modules"])),
            Text(_state(g)),
            "yes" if g["exact"] else "no",
        )
    console.print(table)
    c = r["counts"]
    hidden = "" if everything else " (--all shows every group)"
    console.print(
        Text(
            f"{c['groups']} groups: {c['prunable']} prunable ({c['exact']} exact), "
            f"{c['frozen']} frozen; {c['shown']} shown{hidden}"
        )
    )


def _state(g: dict[str, Any]) -> str:
    """'prunable', or 'frozen by <where>: <why>' (the first reason, worded as explain() does)."""
    reason = next((f"by {where}: {why}" for where, why in g["frozen"].items()), "")
    if g["prunable"]:
        return f"prunable, some units frozen {reason}" if reason else "prunable"
    return f"frozen {reason or 'as a single unit'}"
