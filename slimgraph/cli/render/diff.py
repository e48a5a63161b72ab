"""The diff report: same model or not, the config fields that differ, a table of groups."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from slimgraph.cli.render.text import stdout, value

__all__ = ["print_diff"]


def print_diff(r: dict[str, Any]) -> None:
    """The diff report: same model or not, the config fields that differ, a table of groups."""

    console = stdout()
    fp = r["fingerprints"]
    console.print(
        Text(
            f"same model (fingerprint {fp['a']})"
            if r["same_model"]
            else f"{r['a']} and {r['b']} were made for different models (fingerprints "
            f"{fp['a']} and {fp['b']}); groups are matched by id only"
        ),
        soft_wrap=True,  # one line, whatever the terminal's width, for scripts that grep it
    )
    blocks = r["blocks"]
    if blocks["a"] != blocks["b"]:  # the width was planned on different models
        dropped = [", ".join(blocks[k]) or "none" for k in ("a", "b")]
        console.print(Text(f"blocks dropped: A {dropped[0]}; B {dropped[1]}"), soft_wrap=True)
    if r["config"]:
        config = Table(title="config")
        for col in ("field", f"A: {r['a']}", f"B: {r['b']}"):
            config.add_column(col)
        for c in r["config"]:
            config.add_row(Text(c["field"]), Text(value(c["a"])), Text(value(c["b"])))
        console.print(config)
    else:
        console.print(Text("same config"))
    groups = Table(title=f"units dropped per group, A: {r['a']}, B: {r['b']}")
    groups.add_column("group", no_wrap=True)
    for col in ("units", "dropped A", "dropped B", "only in A", "only in B"):
        groups.add_column(col, justify="right")
    for g in r["groups"]:
        ua, ub = g["units_a"], g["units_b"]
        shown = str(ua) if ua == ub else f"{value(ua)} / {value(ub)}"
        groups.add_row(
            Text(g["id"]),
            shown,
            value(g["dropped_a"]),
            value(g["dropped_b"]),
            str(g["only_a"]),
            str(g["only_b"]),
        )
    console.print(groups)
    t = r["totals"]
    console.print(
        Text(
            f"{t['groups_differ']} of {t['groups']} groups differ; units dropped "
            f"{t['dropped']['a']:,} (A) vs {t['dropped']['b']:,} (B); params after "
            f"{t['params_after']['a']:,} (A) vs {t['params_after']['b']:,} (B)"
        )
    )
