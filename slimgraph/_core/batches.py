"""Running a model on one batch of user data: calibration, BatchNorm recalibration and
recovery all take batches as the user's DataLoader yields them, which is often an
``(inputs, labels)`` pair rather than the model's inputs. ``inputs=`` selects them, and a
batch that does not fit ``forward`` is refused with what was passed and what to do.

>>> import torch
>>> net = torch.nn.Linear(3, 2)
>>> pair = (torch.zeros(4, 3), torch.zeros(4))
>>> call_on_batch(net, pair, inputs=lambda b: b[0]).shape
torch.Size([4, 2])
>>> call_on_batch(net, pair)
Traceback (most recent call last):
  ...
slimgraph.errors.BatchError: a batch of (Tensor[4, 3], Tensor[4]) gives Linear.forward 2 \
positional inputs, but it takes (input): pass inputs=lambda batch: batch[0] to select the \
model inputs of (inputs, labels) pairs
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from slimgraph._core.inputs import split_inputs
from slimgraph.errors import BatchError

__all__ = ["Selector", "call_on_batch", "describe"]

Selector = Callable[[Any], Any]
"""``inputs(batch)``: the model inputs of one batch (a tensor, a tuple, or a dict)."""


def call_on_batch(
    model: nn.Module, batch: Any, inputs: Selector | None = None, *, selected: bool = False
) -> Any:
    """``model`` run on the inputs ``inputs(batch)`` selects (the batch itself without a
    selector, or when the caller has ``selected`` them already), after checking that they
    bind to ``forward``'s parameters."""
    chosen = inputs(batch) if inputs is not None else batch
    hint = _hint(selected or inputs is not None)
    try:
        args, kwargs = split_inputs(chosen)
    except Exception as error:
        raise BatchError(f"{error}; got a batch of {describe(batch)}{hint}") from None
    _check_binds(model, args, kwargs, batch, hint)
    return model(*args, **kwargs)


def describe(value: Any, depth: int = 0) -> str:
    """A short description of a batch: tensor shapes, container types and lengths.

    >>> describe({"x": torch.zeros(2, 3), "n": 4})
    '{x: Tensor[2, 3], n: int}'
    """
    if isinstance(value, torch.Tensor):
        return f"Tensor[{', '.join(map(str, value.shape))}]"
    if depth >= 2:
        return type(value).__name__
    if isinstance(value, Mapping):
        items = ", ".join(f"{k}: {describe(v, depth + 1)}" for k, v in list(value.items())[:6])
        return "{" + items + "}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe(v, depth + 1) for v in value[:6])
        more = ", ..." if len(value) > 6 else ""
        return f"({inner}{more})" if isinstance(value, tuple) else f"[{inner}{more}]"
    return type(value).__name__


def _check_binds(model: nn.Module, args: tuple, kwargs: dict, batch: Any, hint: str) -> None:
    # binding catches the common mistake (labels passed as a second input) before the
    # model runs, where it would surface as a TypeError from deep inside a wrapper
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # a builtin or C++ forward: nothing to check
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        takes = ", ".join(signature.parameters)
        given = f"{len(args)} positional inputs" if args else f"keywords {sorted(kwargs)}"
        raise BatchError(
            f"a batch of {describe(batch)} gives {type(model).__name__}.forward {given}, "
            f"but it takes ({takes}){hint}"
        ) from None


def _hint(selected: bool) -> str:
    if selected:
        return ": check what inputs(batch) returns"
    return (
        ": pass inputs=lambda batch: batch[0] to select the model inputs of (inputs, labels) pairs"
    )
