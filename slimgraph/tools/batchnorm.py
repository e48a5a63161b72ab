"""Re-estimate BatchNorm statistics after slimming, from a few batches of real inputs.

Dropping channels changes what every later layer sees, so the running means and variances
a network learned no longer fit; re-estimating them (no gradient, no weight changes) often
recovers much of the accuracy lost, before any fine-tuning.

>>> import torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
>>> batches = [torch.randn(8, 3, 8, 8) + 2.0 for _ in range(3)]
>>> sg.recalibrate_bn(net, batches)
3
>>> net[1].num_batches_tracked.item(), net.training
(3, False)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from slimgraph._core.batches import Selector, call_on_batch
from slimgraph._core.inputs import preserve_modes
from slimgraph.errors import SlimGraphError

__all__ = ["recalibrate_bn"]


def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[Any],
    max_batches: int | None = None,
    *,
    inputs: Selector | None = None,
) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them as a plain average
    over ``batches`` (each a tensor, a tuple of positional inputs or a dict of keyword
    inputs; ``inputs(batch)`` selects them from batches that hold more, such as
    ``(inputs, labels)`` pairs). Only the BatchNorm layers run in train mode; dropout and
    the rest stay as they are; no weight changes. Returns the number of batches used.

    When a batch raises, or there is no batch, the statistics the model had are put back
    before the error propagates: a half-finished estimate never replaces them."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise SlimGraphError("the model has no BatchNorm layer to recalibrate")
    momenta = [m.momentum for m in norms]
    before = [_statistics(m) for m in norms]
    used = 0
    finished = False
    with preserve_modes(model), torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts the same
            m.train()
        try:
            for batch in batches:
                if max_batches is not None and used >= max_batches:
                    break
                call_on_batch(model, batch, inputs)
                used += 1
            finished = used > 0
        finally:
            for m, momentum, stats in zip(norms, momenta, before):
                m.momentum = momentum
                if not finished:
                    _restore(m, stats)
    if used == 0:
        raise SlimGraphError("recalibrate_bn got no batches; pass an iterable of inputs")
    return used


def _statistics(norm: nn.modules.batchnorm._BatchNorm) -> dict[str, torch.Tensor]:
    """Copies of the running statistics ``reset_running_stats`` is about to overwrite."""
    names = ("running_mean", "running_var", "num_batches_tracked")
    return {n: t.detach().clone() for n in names if (t := getattr(norm, n, None)) is not None}


def _restore(norm: nn.modules.batchnorm._BatchNorm, stats: dict[str, torch.Tensor]) -> None:
    for name, saved in stats.items():
        getattr(norm, name).copy_(saved)
