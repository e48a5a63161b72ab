"""What the ``slimgraph`` command shows: progress on stderr, the slim report's numbers,
and the tables on stdout (``--json`` prints the same dicts as JSON instead).

>>> _state({"prunable": False, "frozen": {"conv1.weight dim 1": "model input"}})
'frozen by conv1.weight dim 1: model input'
>>> _percent(0.2614)
'26.1%'
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from slimgraph.depgraph import Group
from slimgraph.macs import count_macs, count_params
from slimgraph.rewrite import meta_copy

__all__ = [
    "Progress",
    "measure",
    "stage_widths",
    "worth_showing",
    "group_json",
    "print_slim",
    "print_inspect",
    "print_export",
    "print_bench",
]

# Frozen reasons every CNN has; `inspect` hides groups frozen only by these unless --all.
ROUTINE_REASONS = frozenset(
    {"convolution kernel size", "grouped convolution keeps its channels per group"}
)


class Progress:
    """Spinner lines on stderr for the slow steps, and how long each took."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, text: str) -> Iterator[None]:
        start = time.perf_counter()
        with self.console.status(text) if self.enabled else nullcontext():
            yield
        self.seconds[name] = time.perf_counter() - start
        if self.enabled:
            self.console.print(f"[green]✓[/] {text.rstrip('…')} ({self.seconds[name]:.1f} s)")


# -- the numbers of the slim report ----------------------------------------------------


def measure(model: nn.Module, slim: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """Params, MACs and stage widths of ``model`` and its ``slim`` copy, before and after.

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 2))
    >>> small = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    >>> report = measure(net, small, torch.randn(1, 4))
    >>> report["params"]
    {'before': 44, 'after': 23, 'ratio': 0.5227}
    >>> report["stages"][0]
    {'name': '0', 'type': 'Linear', 'before': 6, 'after': 3}
    """
    params = count_params(model), count_params(slim)
    macs = count_macs(model, (example,)), count_macs(slim, (example,))
    before, after = stage_widths(model, example), stage_widths(slim, example)
    types = {name: type(child).__name__ for name, child in model.named_children()}
    return {
        "params": _pair(*params),
        "macs": _pair(*macs),
        "stages": [
            {"name": name, "type": types[name], "before": width, "after": after.get(name)}
            for name, width in before.items()
        ],
    }


def _pair(before: int, after: int) -> dict[str, Any]:
    return {"before": before, "after": after, "ratio": round(after / before, 4) if before else None}


def stage_widths(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Output width of each top-level child, measured on a meta-device copy (no compute).

    The width is dim 1 of a 4-D output (channels), the last dim otherwise; children
    that return no tensor, or are not called, are left out.

    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 36, 5))
    >>> stage_widths(net, torch.randn(1, 3, 8, 8))
    {'0': 8, '1': 288, '2': 5}
    """
    meta = meta_copy(model)
    found: dict[str, int] = {}

    def record(name: str, out: Any) -> None:  # must return None: a value replaces the output
        if name not in found and isinstance(out, torch.Tensor) and out.dim() > 0:
            found[name] = int(out.shape[1] if out.dim() == 4 else out.shape[-1])

    handles = [
        child.register_forward_hook(lambda _m, _i, out, n=name: record(n, out))
        for name, child in meta.named_children()
    ]
    try:
        with torch.no_grad():
            meta(example.to("meta"))
    finally:
        for handle in handles:
            handle.remove()
    order = [name for name, _ in meta.named_children()]
    return {name: found[name] for name in order if name in found}


# -- the groups of the inspect report ---------------------------------------------------


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


# -- tables ---------------------------------------------------------------------------


def _stdout() -> Any:
    from rich.console import Console

    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=160 if wide else None)


def print_slim(r: dict[str, Any]) -> None:
    """The slim report as a title line, two tables and a summary of what was written."""
    from rich.table import Table
    from rich.text import Text

    console = _stdout()
    cfg = r["config"]
    console.print(
        Text(
            f"{r['spec']}: ratio {cfg['ratio']}, {cfg['importance']}, {cfg['scope']} scope, "
            f"input {'x'.join(map(str, r['input_shape']))}"
        )
    )
    totals = Table(title="before / after")
    for col in ("", "before", "after", "after/before"):
        totals.add_column(col, justify="left" if not col else "right")
    for label, key in (("params", "params"), ("MACs", "macs")):
        p = r[key]
        totals.add_row(label, f"{p['before']:,}", f"{p['after']:,}", _percent(p["ratio"]))
    console.print(totals)
    stages = Table(title="stage widths (output channels)")
    for col, justify in (
        ("stage", "left"),
        ("type", "left"),
        ("before", "right"),
        ("after", "right"),
    ):
        stages.add_column(col, justify=justify)
    for s in r["stages"]:
        after = "-" if s["after"] is None else str(s["after"])
        stages.add_row(Text(s["name"]), Text(s["type"]), str(s["before"]), after)
    console.print(stages)
    secs = r["seconds"]
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in secs.items() if k != "total")
    console.print(
        Text(
            f"{r['groups_cut']} groups cut, {r['units_dropped']} units dropped\n"
            f"wrote {', '.join(r['files'].values())}\n"
            f"elapsed {secs['total']:.1f} s ({steps})"
        )
    )


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.1f}%"


def print_inspect(r: dict[str, Any], everything: bool) -> None:
    """The inspect report as a table of groups and a line of counts."""
    from rich.table import Table
    from rich.text import Text

    console = _stdout()
    table = Table(title=f"groups of {r['spec']} (input {'x'.join(map(str, r['input_shape']))})")
    table.add_column("group", no_wrap=True)
    table.add_column("units", justify="right")
    table.add_column("dims", justify="right")
    table.add_column("modules")
    table.add_column("state")
    table.add_column("exact")
    for g in r["groups"]:
        modules = ", ".join(g["modules"][:3]) + (", …" if len(g["modules"]) > 3 else "")
        table.add_row(
            Text(g["id"]),
            str(g["units"]),
            str(len(g["params"])),
            Text(modules),
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


def print_export(r: dict[str, Any]) -> None:
    """What ``slimgraph export`` wrote and how close ONNX Runtime came to PyTorch."""
    from rich.table import Table

    table = Table(title=f"{r['spec']} -> {r['path']}")
    table.add_column("")
    table.add_column("value", justify="right")
    simplified = (
        f"{r['nodes_before']} -> {r['nodes_after']} nodes"
        if r["simplified"]
        else f"no ({r['simplify_skipped_reason']})"
    )
    rows = [
        (
            "exporter",
            r["exporter"]
            + (f" (fallback: {r['fallback_reason']})" if r["fallback_reason"] else ""),
        ),
        ("opset", str(r["opset"])),
        ("simplified", simplified),
        (
            "file size",
            f"{r['file_size']:,} bytes" + (" + external data" if r["external_data"] else ""),
        ),
        ("checked at batch", ", ".join(map(str, r["batch_sizes"])) or "not checked"),
        (
            "max relative difference",
            "-" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.2e}",
        ),
    ]
    if r["quantized"]:
        q = r["quantized"]
        rows.append(
            (
                "int8 copy",
                f"{q['path']}: {q['file_size']:,} bytes, rel diff {q['max_rel_diff']:.2e}",
            )
        )
    for name, value in rows:
        table.add_row(name, value)
    _stdout().print(table)


def print_bench(r: dict[str, Any]) -> None:
    """Original and slim side by side, then speedup and latency efficiency."""
    from rich.table import Table
    from rich.text import Text

    o, s = r["original"], r["slim"]
    lat = o["latency"]
    table = Table(
        title=f"{r['spec']} at ratio {r['config']['ratio']} "
        f"(ONNX Runtime CPU, {lat['threads']} thread(s), median of {lat['runs']})"
    )
    for col in ("", "original", "slim", "slim/original"):
        table.add_column(col, justify="left" if not col else "right")
    for label, key, fmt in (
        ("params", "params", "{:,}"),
        ("MACs", "macs", "{:,}"),
        ("ONNX bytes", "onnx_bytes", "{:,}"),
    ):
        table.add_row(label, fmt.format(o[key]), fmt.format(s[key]), _percent(s[key] / o[key]))
    table.add_row(
        "latency (ms)",
        f"{o['latency']['median_ms']:.2f}",
        f"{s['latency']['median_ms']:.2f}",
        _percent(s["latency"]["median_ms"] / o["latency"]["median_ms"]),
    )
    console = _stdout()
    console.print(table)
    console.print(
        Text(
            f"speedup {r['speedup']:.2f}x, latency efficiency {r['latency_efficiency']:.2f} "
            f"(speedup x MACs kept; 1.0 = every MAC saved became time saved)\n"
            f"elapsed {r['seconds']:.1f} s"
        )
    )
