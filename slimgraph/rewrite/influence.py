"""Block influence: how much a block of depth pruning matters, measured on calibration
batches, so that the blocks that matter least are dropped first.

* :func:`block_influence` (ShortGPT): ``1 - cos(input, output)`` per sample, how much the
  block turns what flows through it; one forward per batch.
* :func:`loss_influence`: how much the loss rises when the block alone is skipped (made to
  return its input); one forward per block per batch, but it reads what the model is for.

Both give exactly 0 to a block whose residual branch is dead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimgraph._core.batches import Selector
from slimgraph._core.inputs import output_tensors, preserve_modes, without_kv_cache
from slimgraph._core.progress import counted
from slimgraph.errors import RewriteError
from slimgraph.rewrite._hooks import cloned, first_tensor, run, watching

__all__ = ["block_influence", "loss_influence"]


def block_influence(
    model: nn.Module,
    blocks: Sequence[str],
    batches: Iterable[Any],
    inputs: Selector | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """``1 - cos(input, output)`` of each block, per sample (flattened), averaged over the
    samples of ``batches`` (``inputs(batch)`` selects the model inputs of one).

    A block whose residual branch is dead returns its input: influence 0.
    """
    modules = dict(model.named_modules())
    total = dict.fromkeys(blocks, 0.0)
    count = dict.fromkeys(blocks, 0)

    def seen(name: str, args: Any, kwargs: Any, out: Any) -> None:
        x, y = first_tensor((args, kwargs)), first_tensor(out)
        if x is None or y is None or x.shape != y.shape:
            return
        # in float64: a block that returns its input must score 0, not float32 rounding
        cos = F.cosine_similarity(x.flatten(1).double(), y.flatten(1).double(), dim=1)
        total[name] += float((1 - cos).clamp(min=0).sum())
        count[name] += cos.numel()

    with preserve_modes(model), watching({b: modules[b] for b in blocks}, seen):
        for batch in counted(batches, "block influence", progress):
            run(model, inputs(batch) if inputs is not None else batch)
    _check_ran(blocks, count)
    return {b: total[b] / count[b] for b in blocks}


def _check_ran(blocks: Sequence[str], count: Mapping[str, int]) -> None:
    missing = [b for b in blocks if not count[b]]
    if missing:
        raise RewriteError(f"blocks {missing} never ran on the calibration batches")


def loss_influence(
    model: nn.Module,
    blocks: Sequence[str],
    batches: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    progress: bool = True,
) -> dict[str, float]:
    """How much skipping each block raises ``loss_fn(model, batch)``: the loss with that
    block alone returning its input, minus the loss of the whole model, averaged over
    ``batches`` (one pass; the model runs in its own train/eval modes, without gradients,
    and is restored). A block whose residual branch is dead returns its input already:
    influence 0.0 exactly.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.eye(2)), net[0].bias.zero_()  # identity: skip costs 0
    ...     _ = net[1].weight.copy_(2 * torch.eye(2)), net[1].bias.zero_()  # doubles
    >>> mse = lambda m, b: torch.nn.functional.mse_loss(m(b), 2 * b)
    >>> loss_influence(net, ["0", "1"], [torch.ones(1, 2)], mse, progress=False)
    {'0': 0.0, '1': 1.0}
    """
    modules = dict(model.named_modules())
    total = dict.fromkeys(blocks, 0.0)
    count = dict.fromkeys(blocks, 0)
    used = 0
    with preserve_modes(model), torch.no_grad(), without_kv_cache(model):
        for batch in counted(batches, "loss influence", progress):
            whole = _loss(loss_fn, model, batch)
            for b in blocks:
                with _skipping(modules[b]) as calls:
                    total[b] += _loss(loss_fn, model, batch) - whole
                count[b] += calls[0]
            used += 1
    if not used:
        raise RewriteError("the calibration batches are empty: no loss to compare")
    _check_ran(blocks, count)
    return {b: total[b] / used for b in blocks}


def _loss(loss_fn: Callable[[nn.Module, Any], torch.Tensor], model: nn.Module, batch: Any) -> float:
    loss = loss_fn(model, batch)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise RewriteError("loss_fn(model, batch) must return a scalar tensor")
    return float(loss)


@contextlib.contextmanager
def _skipping(module: nn.Module) -> Iterator[list[int]]:
    """``module`` returns its input in place of its output's first tensor (what the model
    computes without the block); yields ``[calls]``, counted while it lasts."""
    calls = [0]
    given: list[Any] = []

    def keep(_: nn.Module, args: Any, kwargs: Any) -> None:
        # cloned: the block may change its input in place before it returns
        given.append(cloned(first_tensor((args, kwargs))))

    def skip(_: nn.Module, args: Any, kwargs: Any, out: Any) -> Any:
        calls[0] += 1
        return _with_first(out, given.pop())

    handles = [
        module.register_forward_pre_hook(keep, with_kwargs=True),
        module.register_forward_hook(skip, with_kwargs=True),
    ]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def _with_first(value: Any, x: torch.Tensor) -> Any:
    """``value`` (a tensor, or tuples and lists of them) with its first tensor ``x``."""
    if isinstance(value, torch.Tensor):
        return x
    if type(value) in (tuple, list):
        first = next(i for i, v in enumerate(value) if output_tensors(v))
        items = list(value)
        items[first] = _with_first(items[first], x)
        return type(value)(items)
    raise RewriteError(f"cannot skip a block that returns a {type(value).__name__}")
