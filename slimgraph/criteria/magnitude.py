"""Magnitude criteria: scores read from the weights alone (l1, l2, random, bn_scale).

>>> import torch, slimgraph as sg
>>> from slimgraph.criteria import CRITERIA
>>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
>>> with torch.no_grad():
...     _ = net[0].weight.copy_(torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 0.5]]))
...     _ = net[0].bias.zero_(), net[1].weight.zero_()
>>> graph = sg.trace(net, (torch.randn(1, 2),))
>>> # unit 1 has weights 3, 4, bias 0 and an outgoing 0: sqrt((9 + 16) / 4)
>>> CRITERIA["l2"](graph, graph.prunable_groups(), sg.PruneConfig())["0.weight:0"].tolist()
[0.5, 2.5, 0.25]
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import numpy as np
import torch

from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.registry import register
from slimgraph.errors import PlanError
from slimgraph.graph.depgraph import DependencyGraph, Group

__all__ = ["bn_scale", "l1", "l2", "param_dims", "random", "sum_except", "unit_means"]


def unit_means(
    graph: DependencyGraph,
    group: Group,
    per_index: Callable[[str, torch.Tensor, int], torch.Tensor],
    config: PruneConfig,
    params: Mapping[str, torch.Tensor] | None = None,
) -> np.ndarray:
    """Per unit: the mean of ``per_index(name, param, dim)`` (which gives one sum per index
    of ``dim``) over its weights, combined across the group's parameter slices (slots) as
    ``config.reduction`` says (``params``: ``graph.weights()``, when the caller
    scores many groups and has it already):

    * ``"mean"``: over all its weights in every slice taken together. Units that touch
      different numbers of weights compare: a DenseNet channel made early in a block is
      read by every later layer, one made late by few.
    * ``"sum"``: the sum of each slice's mean, so a unit read by more layers scores higher.
    * ``"max"``: the largest slice's mean, so one strong slice is enough to keep a unit.

    A slice that does not hold a unit contributes nothing to it. Unit 1 below has the
    weights 3 and 4 in ``0.weight``, a zero bias and a 2 in ``1.weight``:

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 0.5]]))
    ...     _ = net[0].bias.zero_(), net[1].weight.fill_(2.0)
    >>> graph = sg.trace(net, (torch.randn(1, 2),))
    >>> group, l1 = graph.group("0.weight:0"), sum_except(torch.abs)
    >>> for r in ("mean", "sum", "max"):
    ...     print(r, unit_means(graph, group, l1, sg.PruneConfig(reduction=r))[1])
    mean 2.25
    sum 5.5
    max 3.5
    """
    params = graph.weights() if params is None else params
    slices = []  # per parameter slot: (unit of each index, its value, weights per index)
    for slot in group.slots:
        info = graph.slots[slot]
        if info.role != "param":
            continue
        p = params.get(info.target)
        if p is None or p.is_meta:
            raise PlanError(
                f"{info.target} has no data (meta device); magnitude criteria need real "
                "weights: trace a model that has them (the graph sg.slim returns after a cut "
                "in place is bound to a weightless copy of the model as it was), or plan with "
                "importance='random'"
            )
        unit = graph.unit_index(group, slot)
        hit = unit >= 0
        values = per_index(info.target, p.detach(), info.dim).double().cpu().numpy()
        per_weight = np.full(hit.sum(), p.numel() // max(p.shape[info.dim], 1), np.float64)
        slices.append((unit[hit], values[hit], per_weight))

    def mean(parts: list[tuple[np.ndarray, ...]]) -> np.ndarray:
        unit, value, weights = (np.concatenate(column) for column in zip(*parts, strict=True))
        count = np.bincount(unit, weights=weights, minlength=group.size)
        return np.bincount(unit, weights=value, minlength=group.size) / np.maximum(count, 1)

    if not slices:
        return np.zeros(group.size)
    if config.reduction == "mean":
        return mean(slices)
    per_slice = np.stack([mean([s]) for s in slices])
    return per_slice.sum(axis=0) if config.reduction == "sum" else per_slice.max(axis=0)


def sum_except(
    transform: Callable[[torch.Tensor], torch.Tensor],
    dims: Mapping[str, Collection[int]] | None = None,
) -> Callable[[str, torch.Tensor, int], torch.Tensor]:
    """Per-index sums of ``transform(param)`` over all other dims. ``dims`` names every
    dim a caller will ask of each parameter (:func:`param_dims`): all of a parameter's
    sums then come from one transform and one pass over it, the dims nobody asks for
    summed first. Only the sums are kept, never a transformed parameter: a model's
    transformed weights all at once would double its memory (a checkpoint streamed from
    disk included)."""
    sums: dict[tuple[str, int], torch.Tensor] = {}

    def per_index(name: str, p: torch.Tensor, dim: int) -> torch.Tensor:
        if (name, dim) not in sums:
            asked = sorted({dim, *(dims or {}).get(name, ())})
            t = transform(p.float())
            # a sum over a dim of size 1 is a slow copy: those are left out (1x1 convs)
            rest = [i for i in range(t.ndim) if i not in asked and t.shape[i] > 1]
            t = t.sum(dim=rest, keepdim=True) if rest else t
            for d in asked:
                others = [i for i in range(t.ndim) if i != d and t.shape[i] > 1]
                sums[name, d] = (t.sum(dim=others) if others else t).reshape(t.shape[d])
        return sums[name, dim]

    return per_index


def param_dims(graph: DependencyGraph, groups: list[Group]) -> dict[str, set[int]]:
    """The dims of each parameter that ``groups`` slice."""
    dims: dict[str, set[int]] = {}
    for group in groups:
        for slot in group.slots:
            info = graph.slots[slot]
            if info.role == "param":
                dims.setdefault(info.target, set()).add(info.dim)
    return dims


@register("l1")
def l1(graph: DependencyGraph, groups: list[Group], config: PruneConfig) -> dict[str, np.ndarray]:
    """Mean |w| over every parameter slice of the unit (``config.reduction``)."""
    per_index = sum_except(torch.abs, param_dims(graph, groups))
    params = graph.weights()
    return {g.id: unit_means(graph, g, per_index, config, params) for g in groups}


@register("l2")
def l2(graph: DependencyGraph, groups: list[Group], config: PruneConfig) -> dict[str, np.ndarray]:
    """Root of the mean w² over the unit's parameter slices, reduced before the root: the
    RMS of all its weights together (``reduction="mean"``), the norm of the slices' RMS
    values (``"sum"``) or the largest slice's RMS (``"max"``)."""
    per_index = sum_except(torch.square, param_dims(graph, groups))
    params = graph.weights()
    return {g.id: np.sqrt(unit_means(graph, g, per_index, config, params)) for g in groups}


@register("random")
def random(
    graph: DependencyGraph, groups: list[Group], config: PruneConfig
) -> dict[str, np.ndarray]:
    """Uniform scores from ``config.seed``: the floor any criterion must beat."""
    rng = np.random.default_rng(config.seed)
    return {g.id: rng.random(g.size) for g in groups}


@register("bn_scale")
def bn_scale(
    graph: DependencyGraph, groups: list[Group], config: PruneConfig
) -> dict[str, np.ndarray]:
    """Network slimming (Liu et al., 2017): mean |gamma| of the BatchNorm scales a unit
    passes through; a channel that every BatchNorm scales towards zero contributes little.
    Groups without a BatchNorm scale (attention heads, a plain MLP) fall back to ``l2``."""
    norms = {
        f"{name}.weight"
        for name, m in graph.model.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.weight is not None
    }
    per_index, params = sum_except(torch.abs), graph.weights()
    found = {}
    fallback = [g for g in groups if not any(t in norms for t, _ in g.params)]
    plain = {g.id for g in fallback}
    for g in groups:
        if g.id in plain:
            continue
        scaled = Group(
            g.id, [s for s in g.slots if graph.slots[s].target in norms], g.units, g.frozen
        )
        found[g.id] = unit_means(graph, scaled, per_index, config, params)
    return found | l2(graph, fallback, config)
