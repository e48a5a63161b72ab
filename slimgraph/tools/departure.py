"""How far a slim model departs from the original it was cut from, on calibration batches:
what ``sg.slim(..., drop_blocks="auto")`` minimises when it chooses how much of a latency
budget whole blocks pay and how much the width.

With ``loss_fn(model, batch) -> loss``, the departure is the slim model's mean loss (what
the model is for); without it, the distillation loss between the two models' main outputs
(:func:`slimgraph.tools.recover.distill_loss`: KL of class scores, MSE of a hidden state),
which is 0 for a copy of the original. The original's outputs are computed once.

>>> import torch
>>> _ = torch.manual_seed(0)
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
>>> score = departure(net, [torch.randn(16, 4)])
>>> other = torch.nn.Sequential(net[0], net[1], torch.nn.Linear(8, 3))  # a new last layer
>>> score(net), score(other) > 0
(0.0, True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from slimgraph._core.batches import Selector, call_on_batch
from slimgraph._core.inputs import preserve_modes, without_kv_cache
from slimgraph.errors import PlanError
from slimgraph.tools.recover import distill_loss

__all__ = ["departure"]


def departure(
    original: nn.Module,
    batches: Iterable[Any],
    inputs: Selector | None = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
) -> Callable[[nn.Module], float]:
    """A scorer of slim copies of ``original``: lower departs less (see the module
    docstring). Models run in eval mode without gradients and are restored."""
    batches = list(batches)
    if not batches:
        raise PlanError("no calibration batches to compare the slim models on")
    wanted = None if loss_fn is not None else [_output(original, b, inputs) for b in batches]

    def score(slim: nn.Module) -> float:
        total = 0.0
        with preserve_modes(slim), torch.no_grad(), without_kv_cache(slim):
            slim.eval()
            for i, batch in enumerate(batches):
                if wanted is None:
                    value = loss_fn(slim, batch)  # type: ignore[misc]
                else:
                    value, _ = distill_loss(call_on_batch(slim, batch, inputs), wanted[i])
                if not isinstance(value, torch.Tensor) or value.ndim != 0:
                    raise PlanError("loss_fn(model, batch) must return a scalar tensor")
                total += float(value)
        return total / len(batches)

    return score


def _output(model: nn.Module, batch: Any, inputs: Selector | None) -> Any:
    with preserve_modes(model), torch.no_grad(), without_kv_cache(model):
        model.eval()
        return call_on_batch(model, batch, inputs)
