"""Importance criteria: one score per unit of a group (low scores are dropped first).

A criterion is a callable ``(graph, groups, config) -> {group id: scores}`` registered by
name; :class:`~slimgraph.config.PruneConfig` refers to it as ``importance="name"``.

>>> import torch, slimgraph as sg
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

from collections.abc import Callable

import numpy as np
import torch

from slimgraph.config import PruneConfig
from slimgraph.depgraph import DependencyGraph, Group
from slimgraph.errors import PlanError

__all__ = ["CRITERIA", "register", "unit_means", "unit_terms"]

Criterion = Callable[[DependencyGraph, list[Group], PruneConfig], dict[str, np.ndarray]]
CRITERIA: dict[str, Criterion] = {}


def register(name: str, needs: tuple[str, ...] = ()) -> Callable[[Criterion], Criterion]:
    """Register a criterion under ``name`` (a later registration replaces an earlier one):
    a function, or an instance of a class with ``__call__(graph, groups, config)``.
    ``needs`` says what it reads besides the weights: ``"gradients"`` (``.grad`` on the
    parameters, per-batch terms on ``graph.taylor``) and/or ``"activations"``
    (``graph.activations``); calibration measures them first (:func:`slimgraph.calibrate`)."""

    def wrap(fn: Criterion) -> Criterion:
        fn.needs = needs
        CRITERIA[name] = fn
        return fn

    return wrap


def unit_means(
    graph: DependencyGraph,
    group: Group,
    per_index: Callable[[str, torch.Tensor, int], torch.Tensor],
    config: PruneConfig,
) -> np.ndarray:
    """Per unit: the mean of ``per_index(name, param, dim)`` (which gives one sum per index
    of ``dim``) over its weights, combined across the group's parameter slices (slots) as
    ``config.reduction`` says:

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
    >>> group, l1 = graph.group("0.weight:0"), _sum_except(torch.abs)
    >>> for r in ("mean", "sum", "max"):
    ...     print(r, unit_means(graph, group, l1, sg.PruneConfig(reduction=r))[1])
    mean 2.25
    sum 5.5
    max 3.5
    """
    params = graph.named_parameters()
    slices = []  # per parameter slot: (unit of each index, its value, weights per index)
    for slot in group.slots:
        info = graph.slots[slot]
        if info.role != "param":
            continue
        p = params.get(info.target)
        if p is None or p.is_meta:
            raise PlanError(
                f"{info.target} has no data (meta device); magnitude criteria need real weights, "
                "use importance='random' to plan on the meta device"
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


def _sum_except(
    transform: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[str, torch.Tensor, int], torch.Tensor]:
    """Per-index sums of ``transform(param)`` over all other dims, transforming each
    parameter once however many groups read it."""
    cache: dict[str, torch.Tensor] = {}

    def per_index(name: str, p: torch.Tensor, dim: int) -> torch.Tensor:
        if name not in cache:
            cache[name] = transform(p.float())
        t = cache[name]
        others = [i for i in range(t.ndim) if i != dim]
        return t.sum(dim=others) if others else t

    return per_index


@register("l1")
def l1(graph: DependencyGraph, groups: list[Group], config: PruneConfig) -> dict[str, np.ndarray]:
    """Mean |w| over every parameter slice of the unit (``config.reduction``)."""
    per_index = _sum_except(torch.abs)
    return {g.id: unit_means(graph, g, per_index, config) for g in groups}


@register("l2")
def l2(graph: DependencyGraph, groups: list[Group], config: PruneConfig) -> dict[str, np.ndarray]:
    """Root of the mean w² over the unit's parameter slices, reduced before the root: the
    RMS of all its weights together (``reduction="mean"``), the norm of the slices' RMS
    values (``"sum"``) or the largest slice's RMS (``"max"``)."""
    per_index = _sum_except(torch.square)
    return {g.id: np.sqrt(unit_means(graph, g, per_index, config)) for g in groups}


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
    per_index = _sum_except(torch.abs)
    found = {}
    fallback = [g for g in groups if not any(t in norms for t, _ in g.params)]
    plain = {g.id for g in fallback}
    for g in groups:
        if g.id in plain:
            continue
        scaled = Group(
            g.id, [s for s in g.slots if graph.slots[s].target in norms], g.units, g.frozen
        )
        found[g.id] = unit_means(graph, scaled, per_index, config)
    return found | l2(graph, fallback, config)


@register("taylor", needs=("gradients",))
def taylor(
    graph: DependencyGraph, groups: list[Group], config: PruneConfig
) -> dict[str, np.ndarray]:
    """First-order Taylor over the whole unit (Molchanov et al., 2019): zeroing a unit's
    weights changes the loss by about ``-Σ_{w in unit} w · ∂L/∂w``; the score is that sum
    squared, per calibration batch, summed over the batches (one estimate per batch, so
    their noise does not cancel the signal). With :func:`slimgraph.slim` / ``sg.plan``
    ``calibration`` batches and a ``loss_fn``, the per-batch terms come from
    :func:`slimgraph.calibrate`; otherwise the ``.grad`` the caller accumulated gives one
    estimate. ``reduction`` does not apply: the sum over every slice is the estimate."""
    missing = _without_gradients(graph, groups)
    if missing:
        raise PlanError(
            f"importance='taylor' needs gradients, and {missing} has none: call "
            "loss.backward() on a few batches first, or pass calibration=batches and "
            "loss_fn=lambda model, batch: loss to sg.slim"
        )
    terms = graph.taylor or {g: t**2 for g, t in unit_terms(graph).items()}
    return {g.id: terms[g.id] for g in groups}


@register("taylor_weight", needs=("gradients",))
def taylor_weight(
    graph: DependencyGraph, groups: list[Group], config: PruneConfig
) -> dict[str, np.ndarray]:
    """Mean |w · ∂L/∂w| over every weight of the unit (``config.reduction`` across
    slices), from the ``.grad`` on the parameters: the per-weight form that Torch-Pruning's
    ``GroupTaylorImportance`` uses."""
    params = graph.named_parameters()
    missing = _without_gradients(graph, groups)
    if missing:
        raise PlanError(
            f"importance='taylor_weight' needs gradients, and {missing} has none: call "
            "loss.backward() on a few batches first, or pass calibration=batches and "
            "loss_fn=lambda model, batch: loss to sg.slim"
        )
    cache: dict[str, torch.Tensor] = {}

    def per_index(name: str, p: torch.Tensor, dim: int) -> torch.Tensor:
        if name not in cache:
            cache[name] = (p.float() * params[name].grad.float()).abs()
        t = cache[name]
        others = [i for i in range(t.ndim) if i != dim]
        return t.sum(dim=others) if others else t

    return {g.id: unit_means(graph, g, per_index, config) for g in groups}


def _without_gradients(graph: DependencyGraph, groups: list[Group]) -> str | None:
    """The first parameter of ``groups`` that has no ``.grad``."""
    params = graph.named_parameters()
    return next(
        (t for g in groups for t, _ in g.params if t in params and params[t].grad is None), None
    )


def unit_terms(graph: DependencyGraph) -> dict[str, np.ndarray]:
    """Per prunable group: ``Σ w · grad`` over every parameter slice of each unit, the
    first-order change of the loss were the unit's weights zeroed (with the sign)."""
    params = graph.named_parameters()
    per_index: dict[tuple[str, int], np.ndarray] = {}
    found = {}
    for g in graph.prunable_groups():
        total = np.zeros(g.size)
        for slot in g.slots:
            info = graph.slots[slot]
            p = params.get(info.target) if info.role == "param" else None
            if p is None or p.grad is None:
                continue
            key = (info.target, info.dim)
            if key not in per_index:
                t = (p.detach() * p.grad).double()
                others = [d for d in range(t.ndim) if d != info.dim]
                per_index[key] = (t.sum(others) if others else t).cpu().numpy()
            unit = graph.unit_index(g, slot)
            hit = unit >= 0
            np.add.at(total, unit[hit], per_index[key][hit])
        found[g.id] = total
    return found
