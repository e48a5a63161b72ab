"""Linked slots (a split's parts, a fused projection's thirds) keep the same fraction.

In each set of linked groups the one with the coarsest units leads; the others, in
breadth-first order, re-choose their drops (lowest score first) to keep exactly that
fraction in the linked slot. A set where that is impossible, or whose link reaches a group
that is not planned, is skipped: its link cannot hold, so every group in it drops nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from slimgraph.graph.depgraph import DependencyGraph, Group
from slimgraph.planner.choose import Chooser

__all__ = ["enforce_links"]

Drops = dict[str, list[int]]  # group id -> the units it drops


def enforce_links(
    graph: DependencyGraph,
    groups: list[Group],
    choosers: dict[str, Chooser],
    drops: Drops,
) -> Drops:
    """``drops`` with every linked slot keeping the same fraction of its indices (see the
    module docstring); ``drops`` itself is left as it is.

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> graph = sg.trace(net, (torch.randn(1, 4),))
    >>> enforce_links(graph, graph.prunable_groups(), {}, {"0.weight:0": [1, 2]})  # no links
    {'0.weight:0': [1, 2]}
    """
    links = _Links.among(graph, groups)
    result = dict(drops)
    for members in nx.connected_components(links.linked):
        chosen = _follow_leader(graph, links, choosers, members, result)
        result |= chosen if chosen is not None else {gid: [] for gid in members}
    result |= {gid: [] for gid in links.skipped}
    return result


@dataclass
class _Links:
    """The links between planned groups, seen from each group."""

    by_id: dict[str, Group]
    ends: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # (mine, theirs)
    linked: nx.Graph = field(default_factory=nx.Graph)  # planned groups, linked ones joined
    skipped: set[str] = field(default_factory=set)  # linked to a group that is not planned

    @classmethod
    def among(cls, graph: DependencyGraph, groups: list[Group]) -> _Links:
        links = cls({g.id: g for g in groups})
        slot_group = {s: g.id for g in groups for s in g.slots}
        for link in graph.links:
            ga, gb = slot_group.get(link.a), slot_group.get(link.b)
            if ga is None or gb is None:
                links.skipped.update(g for g in (ga, gb) if g is not None)
                continue
            links.linked.add_edge(ga, gb)
            links.ends.setdefault(ga, []).append((link.a, link.b))
            links.ends.setdefault(gb, []).append((link.b, link.a))
        return links

    def leader(self, graph: DependencyGraph, members: set[str]) -> str:
        """The member with the coarsest units in its linked slots (then the most units)."""

        def coarseness(gid: str) -> tuple[int, int]:
            group = self.by_id[gid]
            widest = max(int(graph.unit_counts(group, mine).max()) for mine, _ in self.ends[gid])
            return widest, group.size

        return max(sorted(members), key=coarseness)


def _follow_leader(
    graph: DependencyGraph,
    links: _Links,
    choosers: dict[str, Chooser],
    members: set[str],
    drops: Drops,
) -> Drops | None:
    """The members' drops, each group in turn re-chosen to keep the fraction of the linked
    slots settled before it; ``None`` when no choice keeps it (or the set is skipped)."""
    if members & links.skipped:
        return None
    chosen: Drops = {}
    settled: dict[int, int] = {}  # slot -> indices it keeps, in groups already settled
    for gid in nx.bfs_tree(links.linked.subgraph(members), links.leader(graph, members)):
        group, ends = links.by_id[gid], links.ends[gid]
        drop = _rechosen(graph, group, choosers[gid], ends, drops[gid], settled)
        if drop is None:
            return None
        chosen[gid] = drop
        settled |= {mine: _kept(graph, group, drop, mine) for mine, _ in ends}
        for mine, theirs in ends:
            if theirs in settled and settled[mine] != _proportional(graph, settled, theirs, mine):
                return None
    return chosen


def _rechosen(
    graph: DependencyGraph,
    group: Group,
    chooser: Chooser,
    ends: list[tuple[int, int]],
    drop: list[int],
    settled: dict[int, int],
) -> list[int] | None:
    """``drop``, re-chosen (lowest score first) wherever a slot of ``group`` linked to a
    settled one keeps another fraction; ``None`` when no whole number of indices keeps it."""
    for mine, theirs in ends:
        if theirs not in settled:
            continue
        want = _proportional(graph, settled, theirs, mine)
        if want is None:
            return None
        if _kept(graph, group, drop, mine) != want:
            budget = graph.slots[mine].size - want
            drop = chooser.choose(chooser.items(), budget, graph.unit_counts(group, mine))
    return drop


def _kept(graph: DependencyGraph, group: Group, drop: list[int], slot: int) -> int:
    """How many indices of ``slot`` are left after ``group`` drops the units ``drop``."""
    return graph.slots[slot].size - int(graph.unit_counts(group, slot)[drop].sum())


def _proportional(
    graph: DependencyGraph, settled: dict[int, int], slot: int, other: int
) -> int | None:
    """The indices ``other`` keeps to keep the fraction the settled ``slot`` keeps; ``None``
    when that is not a whole number."""
    want, rest = divmod(settled[slot] * graph.slots[other].size, graph.slots[slot].size)
    return None if rest else want
