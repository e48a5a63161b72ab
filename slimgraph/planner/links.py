"""Linked slots (a split's parts, a fused projection's thirds) keep the same fraction."""

from __future__ import annotations

import networkx as nx

from slimgraph.graph.depgraph import DependencyGraph, Group
from slimgraph.planner.choose import Chooser

__all__ = ["enforce_links"]


def enforce_links(
    graph: DependencyGraph,
    groups: list[Group],
    choosers: dict[str, Chooser],
    drops: dict[str, list[int]],
) -> None:
    """Make linked slots keep the same fraction of their indices.

    In each set of linked groups the one with the coarsest units leads; the others, in
    breadth-first order, re-choose their drops (lowest score first) to keep exactly that
    fraction in the linked slot. Where that is impossible, or a link reaches a group that
    is not planned, the whole set drops nothing.
    """
    slot_group = {s: g.id for g in groups for s in g.slots}
    by_id = {g.id: g for g in groups}
    links_of: dict[str, list[tuple[int, int]]] = {}  # group -> (its slot, the other slot)
    linked = nx.Graph()
    pinned: set[str] = set()
    for link in graph.links:
        ga, gb = slot_group.get(link.a), slot_group.get(link.b)
        if ga is None or gb is None:
            pinned.update(g for g in (ga, gb) if g is not None)
            continue
        linked.add_edge(ga, gb)
        links_of.setdefault(ga, []).append((link.a, link.b))
        links_of.setdefault(gb, []).append((link.b, link.a))

    def kept(gid: str, slot: int) -> int:
        counts = graph.unit_counts(by_id[gid], slot)
        return graph.slots[slot].size - int(counts[drops[gid]].sum())

    def coarseness(gid: str) -> tuple[int, int]:
        widest = max(int(graph.unit_counts(by_id[gid], mine).max()) for mine, _ in links_of[gid])
        return widest, by_id[gid].size

    def follow(members: set[str]) -> bool:
        if members & pinned:
            return False
        decided: dict[int, int] = {}  # slot -> kept count, for groups already settled
        for gid in nx.bfs_tree(linked.subgraph(members), max(sorted(members), key=coarseness)):
            for mine, theirs in links_of[gid]:
                if theirs not in decided:
                    continue
                target, rest = divmod(
                    decided[theirs] * graph.slots[mine].size, graph.slots[theirs].size
                )
                if rest:
                    return False
                if kept(gid, mine) != target:
                    counts = graph.unit_counts(by_id[gid], mine)
                    chooser = choosers[gid]
                    drops[gid] = chooser.choose(
                        chooser.items(), graph.slots[mine].size - target, counts
                    )
            for mine, theirs in links_of[gid]:
                decided[mine] = kept(gid, mine)
                if (
                    theirs in decided
                    and decided[mine] * graph.slots[theirs].size
                    != decided[theirs] * graph.slots[mine].size
                ):
                    return False
        return True

    for members in nx.connected_components(linked):
        if not follow(members):
            for gid in members:
                drops[gid] = []
    for gid in pinned:
        drops[gid] = []
