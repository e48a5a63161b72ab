"""Choosing which units a group drops: per group (local scope), or ranked across groups
(global and isomorphic scopes) on normalised scores.

Ratios, ``round_to`` and ``min_keep`` count *channels*: the indices of the widest
parameter dim in a group (:meth:`DependencyGraph.channel_counts`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from slimgraph.criteria.config import PruneConfig
from slimgraph.graph.depgraph import DependencyGraph, Group

__all__ = ["Chooser", "channel_budget", "rank_globally", "ranked_together"]


class Chooser:
    """Chooses a group's drops, lowest score first, within its structure.

    * A unit weighs as many channels as it covers in the group's widest parameter dim;
      units are ranked by score (criteria score per weight, so big and small units compare).
    * A concat group has slots holding only some of its units (DenseNet's layers each
      produce 32 of a block's channels). Units held by the same such slots form a
      *segment*; in local scope every segment loses the ratio, like every layer of a plain
      network. Every parameter slot keeps at least one index.
    * Equal parts of a split lose equally many indices: units are drawn as *items*, a
      unit balanced on its own or a pair of opposite imbalances (cheapest with cheapest).
    """

    def __init__(self, graph: DependencyGraph, group: Group, scores: np.ndarray) -> None:
        self.scores = scores
        partial: list[np.ndarray] = []
        for slot in group.slots:
            if graph.slots[slot].role == "param":
                counts = graph.unit_counts(group, slot)
                if 0 < np.count_nonzero(counts) < group.size:
                    partial.append(counts)
        # rows: slots that hold only some units; columns: units
        self.partial = np.stack(partial) if partial else np.zeros((0, group.size), np.int64)
        self.weight = graph.channel_counts(group)
        self.imbalance = graph.imbalance(group, group.balances)

    @property
    def channels(self) -> int:
        return int(self.weight.sum())

    def segments(self) -> list[np.ndarray]:
        """Units grouped by which partial slots hold them."""
        signature = (self.partial > 0).T  # unit -> which partial slots hold it
        _, which = np.unique(signature, axis=0, return_inverse=True)
        return [np.flatnonzero(which.ravel() == k) for k in range(int(which.max()) + 1)]

    def local(self, ratio: float, config: PruneConfig) -> list[int]:
        """Drop ``ratio`` of every segment, lowest scores first."""
        # Balanced splits pair units across parts, so they are chosen group-wide.
        segmented = len(self.partial) and not self.imbalance.shape[1]
        segments = self.segments() if segmented else [np.arange(len(self.scores))]
        if len(segments) == 1:
            return self.choose(self.items(), self.budget(ratio, config))
        picked: list[int] = []
        for units in segments:
            budget = math.floor(int(self.weight[units].sum()) * ratio + 1e-9)
            order = units[np.argsort(self.scores[units], kind="stable")].tolist()
            picked += self.choose(self.items(order), budget)
        return sorted(picked)

    def budget(self, ratio: float, config: PruneConfig) -> int:
        """Channels to drop: ``ratio`` of them, keeping a multiple of ``round_to``."""
        return channel_budget(self.channels, ratio, config)

    def items(self, units: list[int] | None = None) -> list[tuple[int, ...]]:
        """``units`` (default: all, lowest score per channel first) as droppable items."""
        if units is None:
            units = np.argsort(self.scores, kind="stable").tolist()
        if not self.imbalance.shape[1]:
            return [(u,) for u in units]
        by_vector: dict[tuple[int, ...], list[int]] = {}
        for u in units:
            by_vector.setdefault(tuple(self.imbalance[u].tolist()), []).append(u)
        found: list[tuple[int, ...]] = []
        for vector, members in by_vector.items():
            negated = tuple(-v for v in vector)
            if not any(vector):
                found += [(u,) for u in members]
            elif vector > negated:
                found += list(zip(members, by_vector.get(negated, [])))
        found.sort(key=lambda item: float(self.scores[list(item)].mean()))
        return found

    def choose(
        self, items: list[tuple[int, ...]], budget: int, weight: np.ndarray | None = None
    ) -> list[int]:
        """Take ``items`` in order while their ``weight`` fits in ``budget``."""
        weight = self.weight if weight is None else weight
        if not items:
            return []
        # Per item, computed for all items at once: its channels, and the indices it takes
        # from each partial slot (only the slots it touches: the others keep theirs).
        units = np.fromiter((u for item in items for u in item), np.int64)
        owner = np.repeat(np.arange(len(items)), [len(item) for item in items])
        weight = np.asarray(weight)
        widths = np.zeros(len(items), weight.dtype)
        np.add.at(widths, owner, weight[units])
        if not len(self.partial) and (widths == widths[0]).all():
            # equal weights, no slot to keep an index in: the first items that fit
            taken = len(items) if widths[0] == 0 else int(budget // widths[0])
            return sorted(u for item in items[: max(taken, 0)] for u in item)
        needs: list[list[tuple[int, int]]] = [[] for _ in items]
        if len(self.partial):
            taken = np.zeros((len(items), len(self.partial)), np.int64)
            np.add.at(taken, owner, self.partial[:, units].T)
            for i, row in zip(*np.nonzero(taken)):
                needs[i].append((int(row), int(taken[i, row])))
        left = self.partial.sum(axis=1).tolist()
        picked: list[int] = []
        spent = 0
        for item, w, need in zip(items, map(int, widths.tolist()), needs, strict=True):
            if spent + w > budget:
                continue
            # every partial slot keeps at least one index
            if any(left[row] - n < 1 for row, n in need):
                continue
            for row, n in need:
                left[row] -= n
            picked += item
            spent += w
        return sorted(picked)


def channel_budget(channels: int, ratio: float, config: PruneConfig) -> int:
    """How many of ``channels`` a group drops at ``ratio``: the kept count is at least
    ``min_keep`` and a multiple of ``round_to`` (never more than all of them).

    >>> channel_budget(64, 0.5, PruneConfig(round_to=8)), channel_budget(12, 0.5, PruneConfig(round_to=16))
    (32, 0)
    """
    keep = max(channels - math.floor(channels * ratio + 1e-9), min(config.min_keep, channels))
    keep = min(channels, math.ceil(keep / config.round_to) * config.round_to)
    return channels - keep


def ranked_together(graph: DependencyGraph, groups: list[Group], scope: str) -> list[list[Group]]:
    """The sets of groups whose units compete for one budget: all of them in global scope;
    in isomorphic scope, each class of groups with the same :func:`_structure`."""
    if scope == "global":
        return [groups]
    classes: dict[tuple, list[Group]] = {}
    for g in groups:
        classes.setdefault(_structure(graph, g), []).append(g)
    return list(classes.values())


def _structure(graph: DependencyGraph, group: Group) -> tuple:
    """What makes groups interchangeable in isomorphic scope: the number of units and, for
    every parameter slice, the class of its module, the parameter's shape and the dim the
    group cuts. Names and positions are left out, so the MLPs of ``layers.3`` and
    ``layers.7`` match, while the first block of a ResNet stage, whose conv reads the
    narrower input, differs from the others."""
    params = graph.named_parameters()
    slices = []
    for name, dim in group.params:
        cls = type(graph.model.get_submodule(name.rpartition(".")[0]))
        slices.append((f"{cls.__module__}.{cls.__qualname__}", tuple(params[name].shape), dim))
    return group.size, tuple(sorted(slices))


def _normalized(scores: np.ndarray, how: str) -> np.ndarray:
    """A group's scores on a scale it shares with other groups (``PruneConfig.normalize``).

    >>> scores = np.array([1.0, 2.0, 3.0])
    >>> _normalized(scores, "mean").tolist(), _normalized(scores, "standard").round(3).tolist()
    ([0.5, 1.0, 1.5], [-1.225, 0.0, 1.225])
    """
    scores = np.asarray(scores, dtype=np.float64)
    if how == "none":
        return scores
    if how == "standard":
        return (scores - scores.mean()) / (float(scores.std()) or 1.0)
    scale = {"mean": np.mean, "max": np.max, "sum": np.sum}[how](scores)
    return scores / (float(scale) or 1.0)


def rank_globally(
    groups: list[Group],
    choosers: dict[str, Chooser],
    config: PruneConfig,
    ms_per_channel: Mapping[str, float] | None = None,
) -> dict[str, list[int]]:
    """Rank every unit of ``groups`` together by its normalised score and drop the lowest
    until ``ratio`` of their channels are gone, no group losing more than ``max_ratio`` of
    its channels nor keeping fewer than ``min_keep``; then round and balance per group.

    With ``ms_per_channel`` (group id -> the milliseconds a channel of it costs), units
    rank by score per millisecond, as a knapsack's greedy does (HALP): a cheap unit must
    score lower than a costly one to go first, and a unit that costs nothing goes last.
    """
    normalized = {g.id: _normalized(choosers[g.id].scores, config.normalize) for g in groups}
    if ms_per_channel is not None:
        normalized = _per_ms(normalized, ms_per_channel)
    entries = []
    for g in groups:
        entries += [(v, g.id, u) for u, v in enumerate(normalized[g.id].tolist())]
    entries.sort(key=lambda e: e[0])
    budget = math.floor(sum(choosers[g.id].channels for g in groups) * config.ratio + 1e-9)
    order: dict[str, list[int]] = {g.id: [] for g in groups}
    spent: dict[str, int] = dict.fromkeys(order, 0)
    most = {g.id: _most_dropped(choosers[g.id].channels, config) for g in groups}
    for _, gid, u in entries:
        w = int(choosers[gid].weight[u])
        if w > budget:
            continue
        if spent[gid] + w <= most[gid]:
            order[gid].append(u)
            spent[gid] += w
            budget -= w
    result = {}
    for g in groups:
        chooser = choosers[g.id]
        ratio = spent[g.id] / chooser.channels
        result[g.id] = chooser.choose(chooser.items(order[g.id]), chooser.budget(ratio, config))
    return result


def _per_ms(scores: dict[str, np.ndarray], ms: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Scores per millisecond, shifted first so none is negative (``normalize="standard"``).

    >>> _per_ms({"a": np.array([1.0, 2.0]), "b": np.array([3.0])}, {"a": 0.5, "b": 0.0})
    {'a': array([2., 4.]), 'b': array([inf])}
    """
    low = min((float(v.min()) for v in scores.values() if v.size), default=0.0)
    shift = -low if low < 0 else 0.0
    return {
        g: np.divide(v + shift, ms[g], out=np.full(v.shape, np.inf), where=ms[g] > 0)
        for g, v in scores.items()
    }


def _most_dropped(channels: int, config: PruneConfig) -> int:
    """The most channels a group may lose when it competes with others."""
    most = channels - config.min_keep
    if config.max_ratio is not None:
        most = min(most, math.floor(channels * config.max_ratio + 1e-9))
    return most
