"""Group lasso over the units of a traced graph: a regulariser that trains whole units to
zero, so that a magnitude criterion then drops exactly them.

A unit's weights are every parameter slice it owns: the filter that produces a channel,
its bias and BatchNorm scale, and the input slices of every layer that reads it. The
penalty is the sum over units of their norm, taken together (Yuan & Lin, 2006; Wen et
al., 2016): its gradient shrinks all of a unit's weights in proportion, and a unit that
does not earn its keep goes to zero as a whole.

>>> import torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
>>> with torch.no_grad():
...     _ = net[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.0]])), net[0].bias.zero_()
...     _ = net[2].weight.copy_(torch.tensor([[4.0, 0.0]]))
>>> graph = sg.trace(net, (torch.randn(1, 2),))
>>> penalty = sg.group_penalty(graph)  # unit 0: sqrt(3² + 4²); unit 1 is all zeros
>>> penalty.item(), penalty.requires_grad
(5.0, True)
"""

from __future__ import annotations

import torch
from torch import nn

from slimgraph.errors import PlanError
from slimgraph.graph.depgraph import DependencyGraph

__all__ = ["group_penalty"]


def group_penalty(
    graph: DependencyGraph, model: nn.Module | None = None, *, p: float = 2
) -> torch.Tensor:
    """Sum over the units of every prunable group of the ``p``-norm of all their weights.

    Differentiable in the live parameters: those of ``model`` when given (by name; the
    same architecture as the traced one, e.g. the model being trained when the graph was
    traced on a copy), else of the traced model. Frozen indices and buffers (BatchNorm
    statistics) do not count. Add ``weight * group_penalty(graph, model)`` to the loss.
    A unit at exactly zero has gradient zero (the subgradient), not NaN.
    """
    if p <= 0:
        raise PlanError(f"p must be positive, not {p}")
    params = (
        dict(model.named_parameters(remove_duplicate=False))
        if model is not None
        else graph.named_parameters()
    )
    total: torch.Tensor | None = None
    for group in graph.prunable_groups():
        acc: torch.Tensor | None = None
        for slot in group.slots:
            info = graph.slots[slot]
            if info.role != "param":
                continue
            w = params.get(info.target)
            if w is None:
                raise PlanError(
                    f"the model has no parameter {info.target}; group_penalty needs the model "
                    "the graph was traced from, or one of the same architecture"
                )
            if w.shape[info.dim] != info.size:
                raise PlanError(
                    f"{info.target} has {w.shape[info.dim]} indices in dim {info.dim}, the graph "
                    f"{info.size}: trace the model again after slimming it"
                )
            unit = torch.as_tensor(graph.unit_index(group, slot), device=w.device)
            hit = unit >= 0
            others = [d for d in range(w.ndim) if d != info.dim]
            per_index = w.float().abs().pow(p)
            per_index = per_index.sum(dim=others) if others else per_index
            if acc is None:
                acc = torch.zeros(group.size, device=w.device)
            acc = acc.index_add(0, unit[hit], per_index[hit])
        if acc is None:
            continue
        # the root's gradient is infinite at zero: take it only where the sum is positive
        positive = acc > 0
        safe = torch.where(positive, acc, torch.ones_like(acc))
        norms = torch.where(positive, safe.pow(1.0 / p), torch.zeros_like(acc)).sum()
        total = norms if total is None else total + norms
    if total is None:
        first = next(iter(params.values()), None)
        return torch.zeros((), device=first.device if first is not None else None)
    return total
