"""Hooks shared by depth pruning's block finder and its influence measures: what a
module received and returned, seen through forward hooks, on a model run without
gradients or key/value cache."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from slimgraph._core.inputs import output_tensors, split_inputs, without_kv_cache

__all__ = ["cloned", "first_tensor", "run", "watching"]


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor in ``value`` (nested tuples, lists, dicts), if any."""
    found = output_tensors(value)
    return found[0] if found else None


def cloned(value: Any) -> Any:
    """``value`` with its tensors cloned: a later in-place op must not change what we saw."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: cloned(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(cloned(v) for v in value) if type(value) in (tuple, list) else value
    return value


@contextlib.contextmanager
def watching(
    modules: Mapping[str, nn.Module], seen: Callable[[str, Any, Any, Any], None]
) -> Iterator[None]:
    """Call ``seen(name, args, kwargs, output)`` after each forward of ``modules``."""
    handles = [
        module.register_forward_hook(
            lambda _, args, kwargs, out, n=name: seen(n, args, kwargs, out), with_kwargs=True
        )
        for name, module in modules.items()
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run(model: nn.Module, batch: Any) -> Any:
    """``model`` on one batch of its inputs, without gradients or key/value cache."""
    args, kwargs = split_inputs(batch)
    with torch.no_grad(), without_kv_cache(model):
        return model(*args, **kwargs)
