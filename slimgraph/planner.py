"""Turn a config, a graph and importance scores into a validated :class:`PruningPlan`.

Ratios, ``round_to`` and ``min_keep`` count *channels*: the indices of the widest
parameter dim in a group. A unit usually is one channel; it is a whole group of a
depthwise convolution, one offset of every group of a grouped one, and two channels
paired by a channel shuffle.

In local scope every group drops ``ratio`` of its channels. Global scope ranks the units
of all groups together, isomorphic scope those of groups with the same structure; each
group's scores are first normalised (``normalize``), and no group loses more than
``max_ratio`` of its channels.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import networkx as nx
import numpy as np

from slimgraph.activation import compensation
from slimgraph.calibration import calibrate, needs_of
from slimgraph.config import PruneConfig
from slimgraph.depgraph import DependencyGraph, Group
from slimgraph.errors import PlanError
from slimgraph.importance import CRITERIA
from slimgraph.plan import Fold, GroupCut, InputShape, PruningPlan
from slimgraph.resolve import param_counts

__all__ = ["plan"]


def plan(
    graph: DependencyGraph,
    config: PruneConfig | None = None,
    *,
    skip: dict[str, str] | None = None,
    calibration: Any = None,
    loss_fn: Any = None,
    **fields,
) -> PruningPlan:
    """Decide which units every prunable group drops.

    ``fields`` are :class:`PruneConfig` fields, as a shortcut for ``config``; ``skip``
    maps group ids to leave alone to the reason, which the plan records.
    ``calibration`` batches (and ``loss_fn(model, batch) -> loss`` for criteria that read
    gradients) first measure what data-aware criteria need, as :func:`slimgraph.calibrate`.

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> p = sg.plan(sg.trace(net, (torch.randn(1, 4),)), sg.PruneConfig(ratio=0.25))
    >>> [(c.group, c.size - len(c.drop)) for c in p.cuts], p.params_before, p.params_after
    ([('0.weight:0', 6)], 58, 44)
    """
    config = PruneConfig(**{**(config.model_dump() if config else {}), **fields})
    if calibration is not None:
        calibrate(graph, calibration, loss_fn, config)
    if config.target_macs is not None or config.target_params is not None:
        return _plan_for_budget(graph, config, skip)
    skip = dict(skip or {})
    if not config.prune_residual:
        skip.update(
            {
                g.id: "residual stream (prune_residual=False)"
                for g in graph.prunable_groups()
                if g.residual
            }
        )
    groups = [
        g
        for g in graph.prunable_groups()
        if g.id not in skip and not any(config.is_ignored(m) for m in g.modules)
    ]
    scores = CRITERIA[config.importance](graph, groups, config) if groups else {}
    choosers = {g.id: _Chooser(graph, g, scores[g.id]) for g in groups}
    drops: dict[str, list[int]] = {}
    if config.scope == "local":
        for g in groups:
            drops[g.id] = choosers[g.id].local(config.ratio_for(g.modules), config)
    else:
        for together in _ranked_together(graph, groups, config.scope):
            drops |= _global(together, choosers, config)
    _enforce_links(graph, groups, choosers, drops)
    cuts = tuple(
        GroupCut(group=g.id, size=g.size, drop=tuple(drops[g.id]), modules=tuple(g.modules))
        for g in groups
    )
    result = PruningPlan(
        fingerprint=graph.fingerprint,
        criterion=config.importance,
        config=config,
        inputs=tuple(InputShape(shape=s.shape, dtype=s.dtype, name=s.name) for s in graph.inputs),
        training=graph.modes.get("", False),
        head_dims=graph.head_dims,
        query_heads=graph.query_heads,
        cuts=cuts,
        skipped=skip,
        provenance=_provenance(graph, config),
        compensation=_compensation(graph, groups, drops) if config.bias_compensation else (),
    )
    before, after = param_counts(graph, result)
    final = result.model_copy(update={"params_before": before, "params_after": after})
    final._graph = graph  # for plan.summary() and the notebook view; not serialised
    return final


def _provenance(graph: DependencyGraph, config: PruneConfig) -> dict[str, str]:
    """Where the data the plan's scores read came from."""
    found = {}
    for need in sorted(needs_of(config)):
        default = "the .grad already on the parameters" if need == "gradients" else None
        if need in graph.provenance or default:
            found[need] = graph.provenance.get(need, default)
    return found


def _compensation(
    graph: DependencyGraph, groups: list[Group], drops: dict[str, list[int]]
) -> tuple[Fold, ...]:
    if graph.activations is None:
        raise PlanError(
            "bias_compensation needs calibration inputs: pass calibration=batches to "
            "sg.slim / sg.plan, or call sg.calibrate(graph, batches) first"
        )
    found, unbiased = compensation(graph, groups, drops)
    if unbiased:
        warnings.warn(
            f"bias_compensation: {len(unbiased)} layer(s) reading dropped channels have no "
            f"bias or BatchNorm to fold their means into ({', '.join(unbiased[:3])}"
            f"{', …' if len(unbiased) > 3 else ''}); they lose those channels uncompensated",
            stacklevel=3,
        )
    return tuple(found)


def _plan_for_budget(
    graph: DependencyGraph, config: PruneConfig, skip: dict[str, str] | None
) -> PruningPlan:
    """The plan whose ratio keeps ``config.target_macs`` of the MACs (or
    ``target_params`` of the parameters): a bisection over the ratio, each candidate
    measured on a sliced meta-device copy (no compute). Overrides keep their own ratios,
    and the ratio stays within ``max_ratio``; the result is the candidate closest to the
    target."""
    from slimgraph.review import plan_macs

    def planned(ratio: float) -> PruningPlan:
        update = {"ratio": ratio, "target_macs": None, "target_params": None}
        return plan(graph, config.model_copy(update=update), skip=skip)

    if config.target_macs is not None:
        target, total = config.target_macs, plan_macs(graph, planned(0.0))

        def kept(p: PruningPlan) -> float:
            return plan_macs(graph, p) / total
    else:
        target = config.target_params

        def kept(p: PruningPlan) -> float:
            return p.params_after / p.params_before

    lo, hi = 0.0, min(0.99, config.max_ratio or 1.0)
    best: tuple[float, PruningPlan] | None = None
    for _ in range(14):
        candidate = planned((lo + hi) / 2)
        fraction = kept(candidate)
        if best is None or abs(fraction - target) < best[0]:
            best = (abs(fraction - target), candidate)
        if abs(fraction - target) <= 0.002 * target:
            break
        lo, hi = (candidate.config.ratio, hi) if fraction > target else (lo, candidate.config.ratio)
    chosen = best[1]
    found = config.model_copy(update={"ratio": chosen.config.ratio})  # the ratio it took
    final = chosen.model_copy(update={"config": found})
    final._graph = graph
    return final


class _Chooser:
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
        widest = np.ones(group.size, dtype=np.int64)
        for slot in group.slots:
            if graph.slots[slot].role == "param":
                counts = graph.unit_counts(group, slot)
                if counts.sum() > widest.sum():
                    widest = counts
                if 0 < np.count_nonzero(counts) < group.size:
                    partial.append(counts)
        # rows: slots that hold only some units; columns: units
        self.partial = np.stack(partial) if partial else np.zeros((0, group.size), np.int64)
        self.weight = np.maximum(widest, 1)
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
        n = self.channels
        keep = max(n - math.floor(n * ratio + 1e-9), min(config.min_keep, n))
        keep = min(n, math.ceil(keep / config.round_to) * config.round_to)
        return n - keep

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
        picked: list[int] = []
        left = self.partial.sum(axis=1)
        spent = 0
        for item in items:
            w = int(weight[list(item)].sum())
            if spent + w > budget:
                continue
            need = self.partial[:, list(item)].sum(axis=1)
            if (left - need < 1).any():
                continue
            left = left - need
            picked += item
            spent += w
        return sorted(picked)


def _ranked_together(graph: DependencyGraph, groups: list[Group], scope: str) -> list[list[Group]]:
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


def _global(
    groups: list[Group], choosers: dict[str, _Chooser], config: PruneConfig
) -> dict[str, list[int]]:
    """Rank every unit of ``groups`` together by its normalised score and drop the lowest
    until ``ratio`` of their channels are gone, no group losing more than ``max_ratio`` of
    its channels nor keeping fewer than ``min_keep``; then round and balance per group."""
    entries = []
    for g in groups:
        scores = _normalized(choosers[g.id].scores, config.normalize)
        entries += [(v, g.id, u) for u, v in enumerate(scores.tolist())]
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


def _most_dropped(channels: int, config: PruneConfig) -> int:
    """The most channels a group may lose when it competes with others."""
    most = channels - config.min_keep
    if config.max_ratio is not None:
        most = min(most, math.floor(channels * config.max_ratio + 1e-9))
    return most


def _enforce_links(
    graph: DependencyGraph,
    groups: list[Group],
    choosers: dict[str, _Chooser],
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
