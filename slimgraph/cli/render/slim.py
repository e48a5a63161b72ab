"""The slim (and apply) report and the plan report, as tables on stdout."""

from __future__ import annotations

from typing import Any

from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

from slimgraph.cli.render.text import elapsed, modules, percent, stdout, title
from slimgraph.resolve.summary import held_note

__all__ = ["print_plan", "print_slim"]


def print_slim(r: dict[str, Any]) -> None:
    """The slim (or apply) report: a title line, params and MACs before and after, stage
    widths (where the model has called top-level children), and what was written."""

    console = stdout()
    console.print(Text(title(r)))
    totals = Table(title="before / after")
    for col in ("", "before", "after", "after/before"):
        totals.add_column(col, justify="left" if not col else "right")
    for label, key in (("params", "params"), ("MACs", "macs")):
        p = r[key]
        totals.add_row(label, f"{p['before']:,}", f"{p['after']:,}", percent(p["ratio"]))
    console.print(totals)
    if r["stages"]:  # an exported program's children are not called: it has none
        _print_stages(console, r["stages"])
    console.print(
        Text(
            f"{r['groups_cut']} groups cut, {r['units_dropped']} units dropped\n"
            + _blocks_line(r)
            + _held_line(r)
            + _latency_line(r)
            + f"wrote {', '.join(r['files'].values())}\n"
            f"{elapsed(r['seconds'])}"
        )
    )


def _blocks_line(r: dict[str, Any]) -> str:
    return f"blocks dropped: {', '.join(r['blocks'])}\n" if r.get("blocks") else ""


def _held_line(r: dict[str, Any]) -> str:
    if not r.get("held"):
        return ""
    return held_note(r["held"], (r.get("config") or {}).get("ratio")) + "\n"


def _latency_line(r: dict[str, Any]) -> str:
    latency = r.get("latency")
    if not latency:
        return ""
    line = f"latency: predicted {latency['predicted_ms']:.2f} ms"
    if latency.get("original_predicted_ms"):
        original = latency["original_predicted_ms"]
        share = latency["predicted_ms"] / original
        line += f", {share:.3f} of the original's {original:.2f} ms"
    if latency["measured_kept"] is not None:
        tries = ", ".join(f"{t:.3f}" for t in latency["tries"])
        line += f"; measured {latency['measured_kept']:.3f} of the original's (tries: {tries})"
    return line + "\n"


def _print_stages(console: Any, rows: list[dict[str, Any]]) -> None:

    stages = Table(title="stage widths (output channels)")
    columns: list[tuple[str, JustifyMethod]] = [
        ("stage", "left"),
        ("type", "left"),
        ("before", "right"),
        ("after", "right"),
    ]
    for col, justify in columns:
        stages.add_column(col, justify=justify)
    for s in rows:
        after = "-" if s["after"] is None else str(s["after"])
        stages.add_row(Text(s["name"]), Text(s["type"]), str(s["before"]), after)
    console.print(stages)


def print_plan(r: dict[str, Any], show: bool) -> None:
    """The plan report: what it cuts and the params it leaves; every group with ``show``."""

    console = stdout()
    console.print(Text(title(r)))
    p = r["params"]
    summary = Table(title="plan")
    summary.add_column("")
    summary.add_column("value", justify="right")
    summary.add_row("groups cut", f"{r['groups_cut']} of {len(r['groups'])}")
    summary.add_row("units dropped", f"{r['units_dropped']:,}")
    if r.get("blocks"):
        summary.add_row("blocks dropped", ", ".join(r["blocks"]))
    summary.add_row("params", f"{p['before']:,} → {p['after']:,} ({percent(p['ratio'])})")
    console.print(summary)
    if show:
        groups = Table(title="groups")
        groups.add_column("group", no_wrap=True)
        groups.add_column("kept/units", justify="right")
        groups.add_column("modules")
        for g in r["groups"]:
            groups.add_row(Text(g["id"]), f"{g['kept']}/{g['units']}", Text(modules(g["modules"])))
        console.print(groups)
        console.print(_layers_table(r["layers"], r["macs"]))
        for why, ids in r["untouched"].items():
            console.print(Text(f"left whole, {why}: {modules(ids)} ({len(ids)} groups)"))
    lines = [f"{group}: skipped, {why}" for group, why in r["skipped"].items()]
    lines += [f"wrote {r['file']}", elapsed(r["seconds"])]
    console.print(Text(_held_line(r) + _latency_line(r) + "\n".join(lines)))


def _layers_table(layers: list[dict[str, Any]], macs: dict[str, Any]) -> Any:
    """Per layer whose shapes change: shapes, params and MACs before → after."""

    dims = lambda shape: "×".join(map(str, shape)) or "scalar"  # noqa: E731
    table = Table(title=f"layers (MACs {macs['before']:,} → {macs['after']:,})")
    columns: list[tuple[str, JustifyMethod]] = [
        ("layer", "left"), ("type", "left"), ("shapes", "left"), ("params", "right"),
        ("MACs", "right"),
    ]  # fmt: skip
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for r in layers:
        shapes = "; ".join(f"{dims(a)} → {dims(b)}" for a, b in r["shapes"].values() if a != b)
        table.add_row(
            Text(r["layer"]),
            r["kind"],
            shapes,
            f"{r['params_before']:,} → {r['params_after']:,}",
            f"{r['macs_before']:,} → {r['macs_after']:,}",
        )
    return table
