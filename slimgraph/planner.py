"""Turn a config, a graph and importance scores into a validated :class:`PruningPlan`."""

from __future__ import annotations

import math

import numpy as np


from slimgraph.config import PruneConfig
from slimgraph.depgraph import DependencyGraph, Group
from slimgraph.importance import CRITERIA
from slimgraph.plan import GroupCut, InputShape, PruningPlan

__all__ = ["plan", "kept_shapes"]


def plan(graph: DependencyGraph, config: PruneConfig | None = None, **fields) -> PruningPlan:
    """Decide which units every prunable group drops.

    ``fields`` are :class:`PruneConfig` fields, as a shortcut for ``config``.

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> p = sg.plan(sg.trace(net, (torch.randn(1, 4),)), sg.PruneConfig(ratio=0.25))
    >>> [(c.group, c.size - len(c.drop)) for c in p.cuts], p.params_before, p.params_after
    ([('0.weight:0', 6)], 58, 44)
    """
    if config is None:
        config = PruneConfig(**fields)
    elif fields:
        config = config.model_copy(update=fields)
        config = PruneConfig.model_validate(config.model_dump())
    groups = [g for g in graph.prunable_groups() if not any(config.is_ignored(m) for m in g.modules)]
    scores = CRITERIA[config.importance](graph, groups, config) if groups else {}
    guards = {g.id: _SlotGuard(graph, g) for g in groups}
    if config.scope == "global":
        drops = _global_drops(groups, scores, config, guards)
    else:
        drops = {
            g.id: guards[g.id].lowest(scores[g.id], _drop_count(g, config.ratio_for(g.modules), config))
            for g in groups
        }
    cuts = tuple(
        GroupCut(group=g.id, size=g.size, drop=tuple(drops[g.id]), modules=tuple(g.modules))
        for g in groups
    )
    result = PruningPlan(
        fingerprint=graph.fingerprint,
        criterion=config.importance,
        config=config,
        inputs=tuple(InputShape(shape=s.shape, dtype=s.dtype, name=s.name) for s in graph.inputs),
        cuts=cuts,
    )
    before, after = _param_counts(graph, result)
    return result.model_copy(update={"params_before": before, "params_after": after})


def _drop_count(group: Group, ratio: float, config: PruneConfig) -> int:
    n = group.size
    keep = n - math.floor(n * ratio + 1e-9)
    keep = max(keep, min(config.min_keep, n))
    keep = min(n, math.ceil(keep / config.round_to) * config.round_to)
    return n - keep


class _SlotGuard:
    """Keeps at least one index in every parameter slot of a group.

    A group joined by a concat has slots that hold only some of its units (DenseNet's
    layers each produce 32 of a block's channels); dropping all of one would leave a
    layer with no output channels, so such a unit is skipped and the next one taken.
    """

    def __init__(self, graph: DependencyGraph, group: Group) -> None:
        self.unit_slots: dict[int, list[int]] = {}
        self.left: dict[int, int] = {}
        order = np.argsort(group.units)
        sorted_units = group.units[order]
        for slot in group.slots:
            if graph.slots[slot].role != "param":
                continue
            labels = np.unique(graph.slot_labels(slot))
            pos = np.searchsorted(sorted_units, labels).clip(max=len(sorted_units) - 1)
            units = order[pos[sorted_units[pos] == labels]]
            if 0 < len(units) < group.size:
                self.left[slot] = len(units)
                for u in units.tolist():
                    self.unit_slots.setdefault(u, []).append(slot)

    def take(self, unit: int) -> bool:
        slots = self.unit_slots.get(unit, [])
        if any(self.left[s] <= 1 for s in slots):
            return False
        for s in slots:
            self.left[s] -= 1
        return True

    def lowest(self, scores: np.ndarray, count: int) -> list[int]:
        picked: list[int] = []
        for u in np.argsort(scores, kind="stable").tolist():
            if len(picked) >= count:
                break
            if self.take(u):
                picked.append(u)
        return sorted(picked)


def _global_drops(
    groups: list[Group], scores: dict[str, np.ndarray], config: PruneConfig, guards: dict[str, _SlotGuard]
) -> dict[str, list[int]]:
    """Rank units of all groups together, after dividing each group's scores by its mean."""
    entries = []
    for g in groups:
        s = scores[g.id]
        mean = float(np.mean(s)) or 1.0
        entries += [(v / mean, g.id, i) for i, v in enumerate(s.tolist())]
    entries.sort()
    total = sum(g.size for g in groups)
    budget = math.floor(total * config.ratio + 1e-9)
    limit = {g.id: g.size - min(config.min_keep, g.size) for g in groups}
    chosen: dict[str, list[int]] = {g.id: [] for g in groups}
    for _, gid, i in entries:
        if budget <= 0:
            break
        if len(chosen[gid]) < limit[gid] and guards[gid].take(i):
            chosen[gid].append(i)
            budget -= 1
    result = {}
    for gid, picked in chosen.items():
        # round the kept count up to round_to by giving back the best-scored drops
        n = len(scores[gid])
        keep = min(n, math.ceil((n - len(picked)) / config.round_to) * config.round_to)
        best_last = sorted(picked, key=lambda u: scores[gid][u])
        result[gid] = sorted(best_last[: n - keep])
    return result


def kept_shapes(graph: DependencyGraph, plan: PruningPlan) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Parameter/buffer name -> [(dim, kept indices)] for every dim the plan shrinks."""
    dropped = [graph.group(c.group).units[list(c.drop)] for c in plan.cuts if c.drop]
    if not dropped:
        return {}
    dropped_labels = np.unique(np.concatenate(dropped))
    result: dict[str, list[tuple[int, np.ndarray]]] = {}
    for target, slots in graph.param_slots().items():
        for slot in slots:
            labels = graph.slot_labels(slot)
            gone = np.isin(labels, dropped_labels)
            if gone.any():
                result.setdefault(target, []).append((graph.slots[slot].dim, np.flatnonzero(~gone)))
    return result


def _param_counts(graph: DependencyGraph, plan: PruningPlan) -> tuple[int, int]:
    kept = kept_shapes(graph, plan)
    before = after = 0
    for name, p in graph.model.named_parameters():
        shape = list(p.shape)
        before += math.prod(shape)
        for dim, idx in kept.get(name, []):
            shape[dim] = len(idx)
        after += math.prod(shape)
    return before, after


