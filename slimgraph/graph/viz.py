"""See a dependency graph: a group in words (``explain``), a layer-level coupling graph,
drawn, as DOT or GraphML, and as an HTML table of groups for notebooks.

The *layer graph* contracts the slot graph to modules: a node is a module (a layer with
parameters, or the block whose code adds, concatenates or reshapes), an edge says that an
op couples a dim of one with a dim of the other, and carries the group it belongs to.

>>> import torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1))
>>> graph = sg.trace(net, (torch.randn(1, 3, 8, 8),))
>>> sorted(layer_graph(graph).edges(data="group"))
[('0', '1', '0.weight:0'), ('0', '<input>', '0.weight:1'), ('1', '2', '0.weight:0')]
>>> print(graph.to_dot().splitlines()[0])
graph slimgraph {
"""

from __future__ import annotations

import html
import io
from typing import TYPE_CHECKING, Any

import networkx as nx

if TYPE_CHECKING:
    from slimgraph.graph.depgraph import DependencyGraph, Group

__all__ = [
    "Drawable",
    "draw",
    "explain_group",
    "groups_html",
    "layer_graph",
    "to_dot",
    "to_graphml",
    "unit_kind",
]

# 20 distinguishable colours (matplotlib's tab20), one per group, in order.
PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
    "#393b79",
    "#637939",
]
FROZEN = "#bbbbbb"


def owner(graph: DependencyGraph, slot: int) -> str:
    """The module a slot belongs to: a parameter's module, or the module whose forward
    made the tensor (``""``: the model's top level, or a reshape factor of it)."""
    s = graph.slots[slot]
    if s.role in ("param", "buffer") and s.target:
        return s.target.rpartition(".")[0]
    if s.role == "input":
        return "<input>"
    return s.module


def layer_graph(graph: DependencyGraph, focus: str | None = None) -> nx.Graph:
    """Modules as nodes, couplings as edges (attribute ``group``), for the groups in
    ``focus`` (a group id, a member ``"param:dim"`` or a module name; all groups when
    ``None``).

    Node attributes: ``groups`` (ids, comma-separated), ``prunable`` (any of them is),
    ``order`` (first appearance in the traced graph).
    """
    groups = list(graph.groups) if focus is None else graph.select(focus)
    slot_group = {s: g for g in groups for s in g.slots}
    g = nx.Graph()
    # traced order: where a module first computes something (parameters, which the
    # exported graph lists up front, only place a module that computes nothing itself)
    order: dict[str, int] = {}
    for i, s in enumerate(graph.slots):
        if s.role not in ("param", "buffer"):
            order.setdefault(owner(graph, i) or "<model>", i)
    for i in range(len(graph.slots)):
        order.setdefault(owner(graph, i) or "<model>", len(graph.slots) + i)
    for a, b, data in graph.nx.edges(data=True):
        group = slot_group.get(a)
        if group is None:
            continue
        ma, mb = owner(graph, a) or "<model>", owner(graph, b) or "<model>"
        for m in (ma, mb):
            if m not in g:
                g.add_node(m, groups=[], prunable=False, order=order[m])
            if group.id not in g.nodes[m]["groups"]:
                g.nodes[m]["groups"].append(group.id)
            g.nodes[m]["prunable"] |= group.prunable
        if ma != mb:
            g.add_edge(ma, mb, group=group.id, op=data.get("op", ""))
    for _, attrs in g.nodes(data=True):
        attrs["groups"] = ",".join(attrs["groups"])
    return g


def _colours(graph: DependencyGraph, lg: nx.Graph) -> dict[str, str]:
    """A colour per group shown in ``lg``: the palette in group order, grey when frozen."""
    wanted = {gid for _, _, gid in lg.edges(data="group")}
    wanted |= {gid for _, gs in lg.nodes(data="groups") for gid in gs.split(",")}
    ordered = [g.id for g in graph.groups if g.id in wanted]
    frozen = {g.id for g in graph.groups if not g.prunable}
    colours, k = {}, 0
    for gid in ordered:
        if gid in frozen:
            colours[gid] = FROZEN
        else:
            colours[gid] = PALETTE[k % len(PALETTE)]
            k += 1
    return colours


def to_dot(graph: DependencyGraph, focus: str | None = None) -> str:
    """The layer graph in Graphviz DOT: nodes coloured by their first group, edges by
    theirs; frozen groups grey and dashed."""
    lg = layer_graph(graph, focus)
    colours = _colours(graph, lg)
    lines = ["graph slimgraph {", "  node [shape=box, style=filled, fontname=Helvetica];"]
    for node, attrs in sorted(lg.nodes(data=True), key=lambda n: n[1]["order"]):
        first = attrs["groups"].split(",")[0]
        lines.append(
            f'  "{node}" [fillcolor="{colours[first]}", tooltip="{attrs["groups"]}"'
            + ("" if attrs["prunable"] else ', style="filled,dashed"')
            + "];"
        )
    for a, b, gid in lg.edges(data="group"):
        style = "dashed" if colours[gid] == FROZEN else "solid"
        lines.append(f'  "{a}" -- "{b}" [color="{colours[gid]}", style={style}, label="{gid}"];')
    lines.append("}")
    return "\n".join(lines)


def to_graphml(graph: DependencyGraph, path: Any = None, focus: str | None = None) -> str | None:
    """Write the layer graph as GraphML to ``path``, or return it as text when ``None``."""
    lg = layer_graph(graph, focus)
    if path is not None:
        nx.write_graphml(lg, path)
        return None
    buffer = io.BytesIO()
    nx.write_graphml(lg, buffer)
    return buffer.getvalue().decode()


def _layout(lg: nx.Graph) -> dict[str, tuple[float, float]]:
    """Left to right in traced order, one row per group (a layer's first group): an arc
    diagram, where the arcs that skip layers are the couplings a plain chain lacks."""
    lanes: dict[str, int] = {}
    pos = {}
    for rank, (node, attrs) in enumerate(sorted(lg.nodes(data=True), key=lambda n: n[1]["order"])):
        lane = lanes.setdefault(attrs["groups"].split(",")[0], len(lanes))
        pos[node] = (float(rank), -2.0 * lane)
    return pos


def draw(
    graph: DependencyGraph,
    focus: str | None = None,
    ax: Any = None,
    labels: bool = True,
    max_nodes: int = 60,
) -> Any:
    """Draw the layer graph with matplotlib as an arc diagram and return the axes.

    Layers sit left to right in traced order, one row per group; an arc joins two layers
    an op couples (a residual add joins layers far apart). ``focus`` (a group id, a member
    ``"param:dim"`` or a module name) keeps a 50-block model readable by showing only the
    groups involved; larger selections are cut to the first ``max_nodes`` layers. Colours:
    one per group; frozen groups grey, with dashed arcs and hatched layers.
    """
    # slow to import (about a second): only drawing needs it
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    lg = layer_graph(graph, focus)
    ordered = sorted(lg.nodes(data="order"), key=lambda n: n[1])
    lg = lg.subgraph([n for n, _ in ordered[:max_nodes]]).copy()
    pos = _layout(lg)
    colours = _colours(graph, lg)
    if ax is None:
        rows = len({y for _, y in pos.values()})
        _, ax = plt.subplots(figsize=(min(3 + 0.75 * len(lg), 40), 2.2 + 1.6 * rows))
    for a, b, gid in lg.edges(data="group"):
        (xa, ya), (xb, yb) = sorted([pos[a], pos[b]])
        frozen = colours[gid] == FROZEN
        bend = 0.0 if abs(xb - xa) <= 1 and ya == yb else -0.35
        ax.add_patch(
            FancyArrowPatch(
                (xa, ya),
                (xb, yb),
                connectionstyle=f"arc3,rad={bend}",
                arrowstyle="-",
                color=colours[gid],
                lw=1.2 if frozen else 2.0,
                ls="--" if frozen else "-",
                zorder=1,
            )  # fmt: skip
        )
    for node, attrs in lg.nodes(data=True):
        x, y = pos[node]
        first = attrs["groups"].split(",")[0]
        ax.scatter([x], [y], s=260, color=colours[first], edgecolor="black", zorder=2,
                   hatch=None if attrs["prunable"] else "//")  # fmt: skip
        if labels:
            ax.annotate(node, (x, y), xytext=(0, -12), textcoords="offset points",
                        ha="right", va="top", fontsize=8, rotation=40)  # fmt: skip
    handles = [
        plt.Line2D([], [], color=c, lw=3, ls="--" if c == FROZEN else "-", label=gid)
        for gid, c in colours.items()
    ][:12]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
              title="groups" + (" (first 12)" if len(colours) > 12 else ""))  # fmt: skip
    xs = [x for x, _ in pos.values()] or [0.0]
    ys = [y for _, y in pos.values()] or [0.0]
    span = max(xs) - min(xs)
    ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ax.set_ylim(min(ys) - 1.5, max(ys) + 0.25 * span + 1)
    ax.set_title(f"coupling around {focus}" if focus else f"{len(lg)} layers", loc="left")
    ax.axis("off")
    return ax


def explain_group(graph: DependencyGraph, group: Group) -> str:
    """``group`` in words: its units, state, layers, residual adds, members, and why any
    of it is frozen or not exact (the text of :meth:`DependencyGraph.explain`).

    >>> import torch, slimgraph as sg
    >>> graph = sg.trace(torch.nn.Linear(4, 6), (torch.randn(1, 4),))
    >>> print(explain_group(graph, graph.group("weight:0")))
    group weight:0: 0 channels, frozen, exact
      layers: <model>
      members: weight dim 0, bias dim 0
      frozen by output linear dim 1 (aten.linear.default): model output: its shape is part of the model's contract
    """
    g, kind = group, unit_kind(graph, group)
    units = f"{g.size} {kind}" + ("" if g.size == 1 else "s" if kind[-1] != "s" else "")
    if kind.startswith("block of"):
        units = f"{g.size} blocks of {kind.removeprefix('block of ')} indices"
    state = "prunable" if g.prunable else "frozen"
    head = f"group {g.id}: {units}, {state}, {'exact' if g.exact else 'not exact'}"
    lines = [head, f"  layers: {', '.join(m or '<model>' for m in g.modules)}"]
    adds = sorted(
        {graph.slots[s].module or "<model>" for s in g.slots if s in graph.residual_slots}
    )
    if adds:
        lines.append(f"  coupled through the residual add in {', '.join(adds)}")
    lines.append("  members: " + ", ".join(f"{t} dim {d}" for t, d in g.params))
    for where, why in g.frozen.items():
        lines.append(f"  frozen by {where}: {why}")
    for where, why in g.inexact.items():
        lines.append(f"  not exact at {where}: {why}")
    return "\n".join(lines)


def unit_kind(graph: DependencyGraph, group: Group) -> str:
    """What one unit of ``group`` is: channel, head, head dim, or a block of n indices."""
    if any(s in graph.head_dim_slots for s in group.slots) and group.size:
        return "head dim"
    widths = [
        int(graph.unit_counts(group, s).max())
        for s in group.slots
        if graph.slots[s].role == "param" and group.size
    ]
    block = max(widths, default=1)
    if block <= 1:
        return "channel"
    if any(s in graph.head_slots for s in group.slots):
        return "head"
    return f"block of {block}"


def groups_html(graph: DependencyGraph, limit: int = 200) -> str:
    """The groups as an HTML table: id, unit kind, units, member layers, state and why."""
    rows = []
    for g in graph.groups[:limit]:
        layers = g.modules
        shown = ", ".join(layers[:4]) + (f", … ({len(layers)} layers)" if len(layers) > 4 else "")
        if g.prunable:
            state = "prunable" + ("" if g.exact else " (not exact)")
        else:
            where, why = next(iter(g.frozen.items()), ("", "a single unit"))
            state = f"frozen: {html.escape(why)}"
            state += f" <small>({html.escape(where)})</small>" if where else ""
        rows.append(
            f"<tr><td><code>{html.escape(g.id)}</code></td><td>{unit_kind(graph, g)}</td>"
            f"<td style='text-align:right'>{g.size}</td><td>{html.escape(shown)}</td>"
            f"<td>{state}</td></tr>"
        )
    more = len(graph.groups) - limit
    prunable = len(graph.prunable_groups())
    return (
        f"<p><b>DependencyGraph</b>: {len(graph.groups)} groups, {prunable} prunable"
        f"{f'; first {limit} shown' if more > 0 else ''}</p>"
        "<table><thead><tr><th>group</th><th>unit</th><th>units</th><th>layers</th>"
        "<th>state</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


class Drawable:
    """The graph's own drawing methods (a mixin of :class:`DependencyGraph`)."""

    def draw(self, focus: str | None = None, ax: Any = None, **options: Any) -> Any:
        """Draw the layer-level coupling graph with matplotlib (see :func:`draw`);
        ``focus`` is what :meth:`DependencyGraph.select` accepts."""
        return draw(self, focus, ax, **options)  # type: ignore[arg-type]

    def to_dot(self, focus: str | None = None) -> str:
        """The layer-level coupling graph as Graphviz DOT text."""
        return to_dot(self, focus)  # type: ignore[arg-type]

    def to_graphml(self, path: Any = None, focus: str | None = None) -> str | None:
        """Write the layer-level coupling graph as GraphML (returns the text without a path)."""
        return to_graphml(self, path, focus)  # type: ignore[arg-type]

    def _repr_html_(self) -> str:
        return groups_html(self)  # type: ignore[arg-type]
