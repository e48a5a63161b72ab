"""What the ``slimgraph`` command shows: progress on stderr, the slim report's numbers,
and the tables on stdout (``--json`` prints the same dicts as JSON instead).

>>> _state({"prunable": False, "frozen": {"conv1.weight dim 1": "model input"}})
'frozen by conv1.weight dim 1: model input'
>>> _percent(0.2614)
'26.1%'
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from slimgraph._core.inputs import preserve_modes, split_inputs
from slimgraph.criteria.config import PruneConfig
from slimgraph.graph.depgraph import Group
from slimgraph.resolve.cost import count_macs, count_params
from slimgraph.resolve.plan import PruningPlan
from slimgraph.resolve.slicing import meta_copy

__all__ = [
    "Progress",
    "measure",
    "stage_widths",
    "pair",
    "inputs_json",
    "inputs_text",
    "diff_plans",
    "worth_showing",
    "group_json",
    "print_slim",
    "print_inspect",
    "print_export",
    "print_bench",
    "plan_groups",
    "print_plan",
    "print_diff",
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


def measure(model: nn.Module, slim: nn.Module, example_inputs: Any) -> dict[str, Any]:
    """Params, MACs and stage widths of ``model`` and its ``slim`` copy, before and after.

    ``example_inputs`` is what :func:`slimgraph.trace` takes: a tuple of positional
    tensors, a dict of keyword tensors, or one tensor.

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 2))
    >>> small = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    >>> report = measure(net, small, torch.randn(1, 4))
    >>> report["params"]
    {'before': 44, 'after': 23, 'ratio': 0.5227}
    >>> report["stages"][0]
    {'name': '0', 'type': 'Linear', 'before': 6, 'after': 3}
    """
    args, kwargs = split_inputs(example_inputs)
    inputs = kwargs or args
    params = count_params(model), count_params(slim)
    macs = count_macs(model, inputs), count_macs(slim, inputs)
    before, after = stage_widths(model, inputs), stage_widths(slim, inputs)
    types = {name: type(child).__name__ for name, child in model.named_children()}
    return {
        "params": pair(*params),
        "macs": pair(*macs),
        "stages": [
            {"name": name, "type": types[name], "before": width, "after": after.get(name)}
            for name, width in before.items()
        ],
    }


def pair(before: int, after: int) -> dict[str, Any]:
    """Before, after and their ratio (None when there was nothing before)."""
    return {"before": before, "after": after, "ratio": round(after / before, 4) if before else None}


def stage_widths(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """Output width of each top-level child, measured on a meta-device copy (no compute).

    The width is dim 1 of a 4-D output (channels), the last dim otherwise; a child that
    returns a tuple or a model output (a dict) is measured by its first tensor. Children
    that return no tensor, or are not called, are left out. ``example_inputs`` is one
    tensor, a tuple of positional tensors or a dict of keyword tensors. Code that reads
    values, which meta tensors do not have, runs on the real model once, in eval mode.

    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 36, 5))
    >>> stage_widths(net, torch.randn(1, 3, 8, 8))
    {'0': 8, '1': 288, '2': 5}
    """
    args, kwargs = split_inputs(example_inputs)
    to_meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t  # noqa: E731
    try:
        return _widths(
            meta_copy(model), [to_meta(a) for a in args], {k: to_meta(v) for k, v in kwargs.items()}
        )
    except RuntimeError as err:
        if "meta tensors" not in str(err) or any(p.is_meta for p in model.parameters()):
            raise
    with preserve_modes(model):
        return _widths(model.eval(), list(args), kwargs)


def _widths(model: nn.Module, args: list, kwargs: dict) -> dict[str, int]:
    found: dict[str, int] = {}

    def record(name: str, out: Any) -> None:  # must return None: a value replaces the output
        if isinstance(out, Mapping):
            out = next(iter(out.values()), None)
        elif isinstance(out, (tuple, list)):
            out = out[0] if out else None
        if name not in found and isinstance(out, torch.Tensor) and out.dim() > 0:
            found[name] = int(out.shape[1] if out.dim() == 4 else out.shape[-1])

    handles = [
        child.register_forward_hook(lambda _m, _i, out, n=name: record(n, out))
        for name, child in model.named_children()
    ]
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    order = [name for name, _ in model.named_children()]
    return {name: found[name] for name in order if name in found}


def inputs_json(example_inputs: Any) -> list[dict[str, Any]]:
    """Name (None for a positional input), shape and dtype of every example input.

    >>> inputs_json({"input_ids": torch.zeros(1, 16, dtype=torch.long)})
    [{'name': 'input_ids', 'shape': [1, 16], 'dtype': 'int64'}]
    """
    args, kwargs = split_inputs(example_inputs)
    named = [(None, t) for t in args] + list(kwargs.items())
    return [
        {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        for name, t in named
        if isinstance(t, torch.Tensor)
    ]


def inputs_text(inputs: list[dict[str, Any]]) -> str:
    """``1x3x224x224``, or ``input_ids 1x16`` for keyword inputs; commas between several.

    >>> inputs_text([{"name": None, "shape": [1, 3, 8, 8]}, {"name": "mask", "shape": [1, 8]}])
    '1x3x8x8, mask 1x8'
    """
    return ", ".join(
        ("" if i["name"] is None else f"{i['name']} ") + "x".join(map(str, i["shape"]))
        for i in inputs
    )


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
    """The slim (or apply) report: a title line, params and MACs before and after, stage
    widths (where the model has called top-level children), and what was written."""
    from rich.table import Table
    from rich.text import Text

    console = _stdout()
    console.print(Text(_title(r)))
    totals = Table(title="before / after")
    for col in ("", "before", "after", "after/before"):
        totals.add_column(col, justify="left" if not col else "right")
    for label, key in (("params", "params"), ("MACs", "macs")):
        p = r[key]
        totals.add_row(label, f"{p['before']:,}", f"{p['after']:,}", _percent(p["ratio"]))
    console.print(totals)
    if r["stages"]:  # an exported program's children are not called: it has none
        _print_stages(console, r["stages"])
    console.print(
        Text(
            f"{r['groups_cut']} groups cut, {r['units_dropped']} units dropped\n"
            f"wrote {', '.join(r['files'].values())}\n"
            f"{_elapsed(r['seconds'])}"
        )
    )


def _print_stages(console: Any, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    stages = Table(title="stage widths (output channels)")
    for col, justify in (
        ("stage", "left"),
        ("type", "left"),
        ("before", "right"),
        ("after", "right"),
    ):
        stages.add_column(col, justify=justify)
    for s in rows:
        after = "-" if s["after"] is None else str(s["after"])
        stages.add_row(Text(s["name"]), Text(s["type"]), str(s["before"]), after)
    console.print(stages)


def _title(r: dict[str, Any]) -> str:
    """``SPEC: ratio 0.5, l2, local scope, input 1x3x224x224`` (the plan's fingerprint
    where no config was recorded)."""
    cfg = r.get("config")
    how = (
        f"ratio {cfg['ratio']}, {cfg['importance']}, {cfg['scope']} scope"
        if cfg
        else f"plan {r['fingerprint']}"
    )
    return f"{r['spec']}: {how}, input {inputs_text(r['inputs'])}"


def _elapsed(seconds: dict[str, float]) -> str:
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items() if k != "total")
    return f"elapsed {seconds['total']:.1f} s ({steps})"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.1f}%"


def print_inspect(r: dict[str, Any], everything: bool) -> None:
    """The inspect report as a table of groups and a line of counts."""
    from rich.table import Table
    from rich.text import Text

    console = _stdout()
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
            Text(_modules(g["modules"])),
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


# -- plan and diff ----------------------------------------------------------------------


def plan_groups(plan: PruningPlan) -> list[dict[str, Any]]:
    """Every planned group (some may drop nothing): id, units kept of all, modules."""
    return [
        {"id": c.group, "kept": c.size - len(c.drop), "units": c.size, "modules": list(c.modules)}
        for c in plan.cuts
    ]


def print_plan(r: dict[str, Any], show: bool) -> None:
    """The plan report: what it cuts and the params it leaves; every group with ``show``."""
    from rich.table import Table
    from rich.text import Text

    console = _stdout()
    console.print(Text(_title(r)))
    p = r["params"]
    summary = Table(title="plan")
    summary.add_column("")
    summary.add_column("value", justify="right")
    summary.add_row("groups cut", f"{r['groups_cut']} of {len(r['groups'])}")
    summary.add_row("units dropped", f"{r['units_dropped']:,}")
    summary.add_row("params", f"{p['before']:,} → {p['after']:,} ({_percent(p['ratio'])})")
    console.print(summary)
    if show:
        groups = Table(title="groups")
        groups.add_column("group", no_wrap=True)
        groups.add_column("kept/units", justify="right")
        groups.add_column("modules")
        for g in r["groups"]:
            groups.add_row(Text(g["id"]), f"{g['kept']}/{g['units']}", Text(_modules(g["modules"])))
        console.print(groups)
        console.print(_layers_table(r["layers"], r["macs"]))
        for why, ids in r["untouched"].items():
            console.print(Text(f"left whole, {why}: {_modules(ids)} ({len(ids)} groups)"))
    lines = [f"{group}: skipped, {why}" for group, why in r["skipped"].items()]
    lines += [f"wrote {r['file']}", _elapsed(r["seconds"])]
    console.print(Text("\n".join(lines)))


def _layers_table(layers: list[dict[str, Any]], macs: dict[str, Any]) -> Any:
    """Per layer whose shapes change: shapes, params and MACs before → after."""
    from rich.table import Table
    from rich.text import Text

    dims = lambda shape: "×".join(map(str, shape)) or "scalar"  # noqa: E731
    table = Table(title=f"layers (MACs {macs['before']:,} → {macs['after']:,})")
    for col, justify in (("layer", "left"), ("type", "left"), ("shapes", "left"),
                         ("params", "right"), ("MACs", "right")):  # fmt: skip
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


def _modules(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", …" if len(names) > 3 else "")


def diff_plans(a: PruningPlan, b: PruningPlan) -> dict[str, Any]:
    """What differs between plans ``a`` and ``b``: the fingerprint, the config fields, and
    per group (present in either) the units each drops and how many only one of them drops.

    >>> from slimgraph.resolve.plan import GroupCut
    >>> cut = lambda *drop: (GroupCut(group="fc.weight:0", size=4, drop=drop),)
    >>> a = PruningPlan(fingerprint="0" * 16, criterion="l2", cuts=cut(0, 1))
    >>> b = PruningPlan(fingerprint="0" * 16, criterion="l2", cuts=cut(1, 2, 3))
    >>> d = diff_plans(a, b)
    >>> d["same_model"], d["config"], d["totals"]["groups_differ"]
    (True, [], 1)
    >>> {k: d["groups"][0][k] for k in ("dropped_a", "dropped_b", "only_a", "only_b")}
    {'dropped_a': 2, 'dropped_b': 3, 'only_a': 1, 'only_b': 2}
    """
    cuts_a, cuts_b = {c.group: c for c in a.cuts}, {c.group: c for c in b.cuts}
    groups = []
    for gid in [*cuts_a, *(g for g in cuts_b if g not in cuts_a)]:
        ca, cb = cuts_a.get(gid), cuts_b.get(gid)
        da, db = set(ca.drop if ca else ()), set(cb.drop if cb else ())
        groups.append(
            {
                "id": gid,
                "modules": list((ca or cb).modules),
                "units_a": ca.size if ca else None,
                "units_b": cb.size if cb else None,
                "dropped_a": len(da) if ca else None,
                "dropped_b": len(db) if cb else None,
                "only_a": len(da - db),
                "only_b": len(db - da),
            }
        )
    config_a = a.config.model_dump(mode="json") if a.config else {}
    config_b = b.config.model_dump(mode="json") if b.config else {}
    differ = [g for g in groups if g["only_a"] or g["only_b"] or g["units_a"] != g["units_b"]]
    return {
        "same_model": a.fingerprint == b.fingerprint,
        "fingerprints": {"a": a.fingerprint, "b": b.fingerprint},
        "config": [
            {"field": name, "a": config_a.get(name), "b": config_b.get(name)}
            for name in PruneConfig.model_fields
            if config_a.get(name) != config_b.get(name)
        ],
        "groups": groups,
        "totals": {
            "groups": len(groups),
            "groups_differ": len(differ),
            "dropped": {"a": a.dropped, "b": b.dropped},
            "params_after": {"a": a.params_after, "b": b.params_after},
        },
    }


def print_diff(r: dict[str, Any]) -> None:
    """The diff report: same model or not, the config fields that differ, a table of groups."""
    from rich.table import Table
    from rich.text import Text

    console = _stdout()
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
    if r["config"]:
        config = Table(title="config")
        for col in ("field", f"A: {r['a']}", f"B: {r['b']}"):
            config.add_column(col)
        for c in r["config"]:
            config.add_row(Text(c["field"]), Text(_value(c["a"])), Text(_value(c["b"])))
        console.print(config)
    else:
        console.print(Text("same config"))
    groups = Table(title=f"units dropped per group, A: {r['a']}, B: {r['b']}")
    groups.add_column("group", no_wrap=True)
    for col in ("units", "dropped A", "dropped B", "only in A", "only in B"):
        groups.add_column(col, justify="right")
    for g in r["groups"]:
        ua, ub = g["units_a"], g["units_b"]
        shown = str(ua) if ua == ub else f"{_value(ua)} / {_value(ub)}"
        groups.add_row(
            Text(g["id"]),
            shown,
            _value(g["dropped_a"]),
            _value(g["dropped_b"]),
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


def _value(value: Any) -> str:
    """A config value or count as the tables show it: ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)
