"""Original beside slim without timing them: params, MACs and the output width of every
top-level child (a "stage"), measured on meta-device copies (no real compute).

For ONNX size and latency as well, see :func:`slimgraph.compare`.

>>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 2))
>>> small = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
>>> measure(net, small, torch.randn(1, 4))["macs"]
{'before': 36, 'after': 18, 'ratio': 0.5}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from slimgraph._core.inputs import preserve_modes, split_inputs
from slimgraph.resolve.cost import count_macs, count_params
from slimgraph.resolve.slicing import meta_copy

__all__ = ["measure", "pair", "stage_widths"]


def measure(model: nn.Module, slim: nn.Module, example_inputs: Any) -> dict[str, Any]:
    """Params, MACs and stage widths of ``model`` and its ``slim`` copy, before and after.

    ``example_inputs`` is what :func:`slimgraph.trace` takes: a tuple of positional
    tensors, a dict of keyword tensors, or one tensor.

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 2))
    >>> small = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    >>> report = measure(net, small, torch.randn(1, 4))
    >>> report["params"]
    {'before': 44, 'after': 23, 'ratio': 0.5227}
    >>> report["stages"][0]
    {'name': '0', 'type': 'Linear', 'before': 6, 'after': 3}
    """
    args, kwargs = split_inputs(example_inputs)
    inputs = kwargs or args
    params = count_params(model), count_params(slim)
    macs = count_macs(model, inputs), count_macs(slim, inputs)
    before, after = stage_widths(model, inputs), stage_widths(slim, inputs)
    types = {name: type(child).__name__ for name, child in model.named_children()}
    return {
        "params": pair(*params),
        "macs": pair(*macs),
        "stages": [
            {"name": name, "type": types[name], "before": width, "after": after.get(name)}
            for name, width in before.items()
        ],
    }


def pair(before: int, after: int) -> dict[str, Any]:
    """Before, after and their ratio (None when there was nothing before).

    >>> pair(8, 2), pair(0, 0)["ratio"]
    ({'before': 8, 'after': 2, 'ratio': 0.25}, None)
    """
    return {"before": before, "after": after, "ratio": round(after / before, 4) if before else None}


def stage_widths(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """Output width of each top-level child, measured on a meta-device copy (no compute).

    The width is dim 1 of a 4-D output (channels), the last dim otherwise; a child that
    returns a tuple or a model output (a dict) is measured by its first tensor. Children
    that return no tensor, or are not called, are left out. ``example_inputs`` is one
    tensor, a tuple of positional tensors or a dict of keyword tensors. Code that reads
    values, which meta tensors do not have, runs on the real model once, in eval mode.

    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 36, 5))
    >>> stage_widths(net, torch.randn(1, 3, 8, 8))
    {'0': 8, '1': 288, '2': 5}
    """
    args, kwargs = split_inputs(example_inputs)
    to_meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t  # noqa: E731
    try:
        return _widths(
            meta_copy(model), [to_meta(a) for a in args], {k: to_meta(v) for k, v in kwargs.items()}
        )
    except RuntimeError as err:
        if "meta tensors" not in str(err) or any(p.is_meta for p in model.parameters()):
            raise
    with preserve_modes(model):
        return _widths(model.eval(), list(args), kwargs)


def _widths(model: nn.Module, args: list, kwargs: dict) -> dict[str, int]:
    found: dict[str, int] = {}

    def record(name: str, out: Any) -> None:  # must return None: a value replaces the output
        if isinstance(out, Mapping):
            out = next(iter(out.values()), None)
        elif isinstance(out, (tuple, list)):
            out = out[0] if out else None
        if name not in found and isinstance(out, torch.Tensor) and out.dim() > 0:
            found[name] = int(out.shape[1] if out.dim() == 4 else out.shape[-1])

    handles = [
        child.register_forward_hook(lambda _m, _i, out, n=name: record(n, out))
        for name, child in model.named_children()
    ]
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    order = [name for name, _ in model.named_children()]
    return {name: found[name] for name in order if name in found}
