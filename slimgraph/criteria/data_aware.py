"""Data-aware criteria: what the layers that *read* a unit see on calibration inputs.

A *consumer* is a layer whose weight reads a group's channels on its input dim: a
``Linear`` (dim 1), an ungrouped ``Conv`` (dim 1) or a GPT-2 ``Conv1D`` (dim 0).
:func:`slimgraph.calibrate` measures, per consumer, the count, sum and sum of squares of
each input channel; the criteria read them as ``graph.activations`` from the calibrated
view that ``sg.plan(graph, config, calibration=...)`` hands them (see
:meth:`~slimgraph.graph.views.GraphViews.calibrated`), and score a unit by what its
removal would cost the consumers' outputs:

* ``activation`` (Wanda, Sun et al. 2023): RMS of the input channel times the L1 norm of
  the weights that read it, ``||X_j|| · Σ_i |W_ij|``;
* ``fluctuation`` (FLAP, An et al. 2024): the channel's variance across samples times the
  squared L2 norm of the weights that read it, ``Var(X_j) · Σ_i W_ij²``. That is the
  output energy removal would lose once the channel's *mean* is folded into the
  consumer's bias (``PruneConfig(bias_compensation=True)``): a constant channel costs
  nothing.

Scores sum over a unit's indices and over the group's consumers, divided by the unit's
index count so that units of different widths compare. A group no consumer reads
(the classifier's outputs) falls back to ``l2``.

>>> import torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
>>> with torch.no_grad():
...     _ = net[0].weight.copy_(torch.eye(2)), net[0].bias.zero_(), net[1].weight.fill_(1.0)
>>> graph = sg.trace(net, (torch.randn(1, 2),))
>>> graph = graph.calibrated(sg.calibrate(graph, [torch.tensor([[3.0, 1.0], [3.0, -1.0]])]))
>>> group = graph.group("0.weight:0")
>>> config = sg.PruneConfig(importance="fluctuation")
>>> CRITERIA["activation"](graph, [group], config)[group.id].tolist()  # rms 3 and 1
[3.0, 1.0]
>>> CRITERIA["fluctuation"](graph, [group], config)[group.id].tolist()  # var 0 and 1
[0.0, 1.0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.registry import CRITERIA, register
from slimgraph.errors import PlanError
from slimgraph.graph.depgraph import DependencyGraph, Group

if TYPE_CHECKING:
    from slimgraph.criteria.calibration import ChannelStats

__all__ = ["consumer_dims", "consumers"]


def consumer_dims(module: nn.Module) -> tuple[int, int, int] | None:
    """``(weight dim that reads input channels, weight dim of outputs, channel axis of
    the input)`` for a layer whose weight reads its input channels, else ``None``."""
    if isinstance(module, nn.Linear):
        return 1, 0, -1
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        return (1, 0, 1) if module.groups == 1 else None
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # transformers' GPT-2
        return 0, 1, -1
    return None


def consumers(graph: DependencyGraph, group: Group) -> list[tuple[int, str, int]]:
    """``(slot, module name, weight dim of outputs)`` of the group's consumer slots that
    have calibration statistics."""
    found = []
    modules = dict(graph.model.named_modules())
    for slot in group.slots:
        info = graph.slots[slot]
        if info.role != "param":
            continue
        name, _, leaf = info.target.rpartition(".")
        dims = consumer_dims(modules[name]) if leaf == "weight" and name in modules else None
        if dims and dims[0] == info.dim and name in graph.activations:
            found.append((slot, name, dims[1]))
    return found


def _scored(per_channel) -> Any:
    """A criterion from ``per_channel(weight, in_dim, stats) -> score per input index``."""

    def criterion(
        graph: DependencyGraph, groups: list[Group], config: PruneConfig
    ) -> dict[str, np.ndarray]:
        if graph.activations is None:
            raise PlanError(
                f"importance={config.importance!r} needs calibration inputs: pass "
                "calibration=sg.calibrate(graph, batches), or the batches themselves, "
                "to sg.plan (calibration=batches to sg.slim)"
            )
        params = graph.named_parameters()
        scores, plain = {}, []
        for g in groups:
            readers = consumers(graph, g)
            if not readers:
                plain.append(g)
                continue
            total = np.zeros(g.size)
            count = np.zeros(g.size)
            for slot, name, _ in readers:
                info = graph.slots[slot]
                values = per_channel(
                    params[info.target].detach(), info.dim, graph.activations[name]
                )
                unit = graph.unit_index(g, slot)
                hit = unit >= 0
                np.add.at(total, unit[hit], values.cpu().numpy()[hit])
                np.add.at(count, unit[hit], 1)
            scores[g.id] = total / np.maximum(count, 1)
        return scores | (CRITERIA["l2"](graph, plain, config) if plain else {})

    criterion.__doc__ = per_channel.__doc__
    return criterion


def _others(w: torch.Tensor, dim: int) -> list[int]:
    return [i for i in range(w.ndim) if i != dim]


def _wanda(w: torch.Tensor, dim: int, stats: ChannelStats) -> torch.Tensor:
    """Wanda: RMS of each input channel times the L1 norm of the weights reading it."""
    return w.double().abs().sum(_others(w, dim)) * stats.mean_square.sqrt()


def _flap(w: torch.Tensor, dim: int, stats: ChannelStats) -> torch.Tensor:
    """FLAP: variance of each input channel times the squared L2 norm of the weights
    reading it (the loss left once its mean is folded into the bias)."""
    return w.double().square().sum(_others(w, dim)) * stats.variance


register("activation", needs=("activations",))(_scored(_wanda))
register("fluctuation", needs=("activations",))(_scored(_flap))
