"""Count parameters and multiply-accumulates, on the meta device (no real compute)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from slimgraph.trace import preserve_modes, split_inputs

__all__ = ["count_macs", "count_params"]


def count_params(model: torch.nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, example_inputs: Any) -> int:
    """Multiply-accumulates of one forward pass, measured by ``FlopCounterMode`` / 2.

    The model is copied to the meta device first, so this costs no real compute.

    >>> import torch
    >>> count_macs(torch.nn.Linear(4, 3), (torch.randn(2, 4),))
    24
    """
    from slimgraph.rewrite import meta_copy

    args, kwargs = split_inputs(example_inputs)
    to_meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t  # noqa: E731
    meta = meta_copy(model).eval().requires_grad_(False)
    try:
        return _macs(meta, [to_meta(a) for a in args], {k: to_meta(v) for k, v in kwargs.items()})
    except RuntimeError as err:
        # code that reads values (an attention mask's .all()) cannot run on meta tensors:
        # count on the real model, in eval mode, once
        if "meta tensors" not in str(err) or any(p.is_meta for p in model.parameters()):
            raise
    with preserve_modes(model):
        return _macs(model.eval(), list(args), kwargs)


def _macs(model: torch.nn.Module, args: list, kwargs: dict) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*args, **kwargs)
    return counter.get_total_flops() // 2
