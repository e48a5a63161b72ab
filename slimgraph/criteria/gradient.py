"""Gradient criteria: first-order Taylor estimates of the loss change of dropping a unit."""

from __future__ import annotations

import numpy as np
import torch

from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.magnitude import unit_means
from slimgraph.criteria.registry import register
from slimgraph.errors import PlanError
from slimgraph.graph.depgraph import DependencyGraph, Group

__all__ = ["taylor", "taylor_weight", "unit_terms"]


@register("taylor", needs=("gradients",))
def taylor(
    graph: DependencyGraph, groups: list[Group], config: PruneConfig
) -> dict[str, np.ndarray]:
    """First-order Taylor over the whole unit (Molchanov et al., 2019): zeroing a unit's
    weights changes the loss by about ``-Σ_{w in unit} w · ∂L/∂w``; the score is that sum
    squared, per calibration batch, summed over the batches (one estimate per batch, so
    their noise does not cancel the signal). With :func:`slimgraph.slim` / ``sg.plan``
    ``calibration`` batches and a ``loss_fn``, the per-batch terms come from
    :func:`slimgraph.calibrate` (``graph.taylor`` of the calibrated view); otherwise the
    ``.grad`` the caller accumulated gives one estimate. ``reduction`` does not apply: the sum over every slice is the estimate."""
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

    return {g.id: unit_means(graph, g, per_index, config, params) for g in groups}


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
