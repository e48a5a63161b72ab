"""Slicing a model by a resolved plan: weightless copies, sliced tensors (a tensor tied
under several names sliced once) and module attributes updated from ``rules/modules.toml``.

>>> import torch
>>> net = torch.nn.Linear(4, 6)
>>> slim = sliced_copy(net, {"weight": [(0, [0, 2])], "bias": [(0, [0, 2])]}, meta=True)
>>> update_attributes(slim, net, {"weight": [(0, [0, 2])]})
>>> slim.weight.shape, slim.weight.device.type, slim.out_features
(torch.Size([2, 4]), 'meta', 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from slimgraph._core.expr import Absent, evaluate
from slimgraph._core.modulecopy import module_copy
from slimgraph.errors import RewriteError, RuleTableError
from slimgraph.graph.ruletable import load_rules

__all__ = [
    "Slices",
    "assign",
    "memory_format",
    "meta_copy",
    "slice_tensor",
    "sliced_copy",
    "sliced_tensors",
    "update_attributes",
    "width_key",
]

Slices = dict[str, list[tuple[int, np.ndarray]]]
WIDTH = "#"  # separates a module from the constant values in a width key (never in a name)


def width_key(module: str, values: tuple[int, ...]) -> str:
    """The slices key of a constant ``values`` that ``module``'s code passes to an op
    (an affine-less norm's ``normalized_shape``, split sizes): its entries are
    (element, kept indices), and the module attribute holding it gets the kept widths.

    >>> width_key("layers.0.norm", (64,))
    'layers.0.norm#64'
    """
    return f"{module}{WIDTH}{','.join(str(v) for v in values)}"


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device."""
    return sliced_copy(model, {}, meta=True)


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """The layout ``t`` is stored in, so its slices can keep it (``index_select`` returns
    contiguous tensors, which would turn a ``channels_last`` conv weight back).

    >>> memory_format(torch.empty(2, 3, 4, 5).to(memory_format=torch.channels_last))
    torch.channels_last
    """
    if t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if (
        t.ndim == 5
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last_3d)
    ):
        return torch.channels_last_3d
    return torch.contiguous_format


def slice_tensor(t: torch.Tensor, kept: list[tuple[int, np.ndarray]], meta: bool) -> torch.Tensor:
    """``t`` keeping only the given indices along each dim, in ``t``'s memory format."""
    layout = memory_format(t)
    if meta:
        shape = list(t.shape)
        for dim, idx in kept:
            shape[dim] = len(idx)
        return torch.empty(shape, dtype=t.dtype, device="meta", memory_format=layout)
    out = t.detach()
    for dim, idx in kept:
        out = out.index_select(dim, torch.as_tensor(idx, device=out.device))
    if kept and out.is_contiguous(memory_format=layout):
        return out  # index_select made a new tensor in that layout already
    return out.clone(memory_format=layout)


def sliced_tensors(model: nn.Module, slices: Slices, meta: bool) -> dict[int, torch.Tensor]:
    """id(original tensor) -> its replacement (sliced, or moved to meta).

    A tensor shared under several names (tied embeddings) is sliced once, by whichever of
    its names the plan mentions, and the replacement serves every name.
    """
    named = list(model.named_parameters(remove_duplicate=False)) + list(
        model.named_buffers(remove_duplicate=False)
    )
    tensors: dict[int, torch.Tensor] = {}
    kept: dict[int, list[tuple[int, np.ndarray]]] = {}
    for name, t in named:
        tensors.setdefault(id(t), t)
        if name in slices:
            kept.setdefault(id(t), slices[name])
    memo: dict[int, torch.Tensor] = {}
    for key, t in tensors.items():
        if not meta and key not in kept:
            continue
        new = slice_tensor(t, kept.get(key, []), meta)
        if isinstance(t, nn.Parameter):
            new = nn.Parameter(new, requires_grad=t.requires_grad)
        memo[key] = new
    return memo


def sliced_copy(model: nn.Module, slices: Slices, meta: bool) -> nn.Module:
    memo: dict[int, Any] = dict(sliced_tensors(model, slices, meta))
    return module_copy(model, memo)


def assign(model: nn.Module, replacements: dict[int, torch.Tensor]) -> None:
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for name, t in list(store.items()):
                if t is not None and id(t) in replacements:
                    store[name] = replacements[id(t)]


def update_attributes(
    slim: nn.Module, old: nn.Module, slices: Slices, head_dims: bool = False
) -> None:
    """Evaluate ``rules/modules.toml`` on every module whose tensors were sliced."""
    old_modules = dict(old.named_modules())
    constants: dict[str, dict[str, list[tuple[int, np.ndarray]]]] = {}
    touched = set()  # the modules holding a sliced tensor or constant, and their parents
    for key, kept in slices.items():
        if WIDTH in key:
            owner = key.partition(WIDTH)[0]
            constants.setdefault(owner, {})[key.partition(WIDTH)[2]] = kept
        else:
            owner = key.rpartition(".")[0]
        while owner not in touched:
            touched.add(owner)
            owner = owner.rpartition(".")[0]
    # children first: a parent's identity may read its children's new attributes
    for name, module in reversed(list(slim.named_modules())):
        if name not in touched:
            continue
        _follow_constants(module, old_modules[name], constants.get(name, {}))
        rule = load_rules().module_rule(module)
        if rule is None:
            if name:  # not the root: its ints are settings, not widths its code reshapes by
                _follow_widths(module, old_modules[name])
            continue
        for attr, alternatives in rule.attrs.items():
            for expr in alternatives:  # the first that this instance can evaluate
                try:
                    setattr(
                        module,
                        attr,
                        evaluate(expr, module, old_modules[name], {"head_dims": head_dims}),
                    )
                    break
                except Absent:
                    continue  # reads an optional tensor (bias, affine weight) it lacks
                except RuleTableError as err:
                    raise RewriteError(f"module {name} ({type(module).__name__}): {err}") from err
        if isinstance(module, nn.RNNBase):
            # its forward reads a cached list of its own parameters, not the new ones
            module._init_flat_weights()


def _follow_widths(module: nn.Module, old: nn.Module) -> None:
    """A module that no rule describes keeps each int attribute that equals one of its
    parameters' old widths (``self.hidden_dim`` of an MoE block, read by ``view(-1,
    self.hidden_dim)``) in step with that width, when the width changed one way only."""
    ints = [a for a, v in vars(module).items() if not a.startswith("_") and type(v) is int]
    if not ints:  # most containers: no need to read their parameters' shapes
        return
    new_of: dict[int, set[int]] = {}
    before = dict(old.named_parameters())
    for name, t in module.named_parameters():
        if name in before and t.ndim == before[name].ndim:
            for new, was in zip(t.shape, before[name].shape, strict=True):
                new_of.setdefault(was, set()).add(new)
    for attr in ints:
        value = vars(module)[attr]
        widths = new_of.get(value, set())
        if len(widths) == 1 and value not in widths:
            setattr(module, attr, widths.pop())


def _follow_constants(
    module: nn.Module, old: nn.Module, constants: dict[str, list[tuple[int, np.ndarray]]]
) -> None:
    """Attributes holding a constant that the module's code passes to an op (see
    :func:`width_key`; ``constants`` maps the values after its ``WIDTH`` to their slices)
    get the kept widths: a tuple or list equal to the whole constant, or an int equal to
    one of its elements (``split(x, [self.key_dim, self.key_dim, self.value_dim])``) when
    every element of that value keeps the same width."""
    for key, kept in constants.items():
        values = tuple(int(v) for v in key.split(","))
        new = tuple(len(idx) for _, idx in sorted(kept, key=lambda e: e[0]))
        new_of: dict[int, set[int]] = {}
        for was, now in zip(values, new, strict=True):
            new_of.setdefault(was, set()).add(now)
        for attr, value in list(vars(old).items()):
            if attr.startswith("_"):
                continue
            if isinstance(value, tuple | list) and tuple(value) == values:
                setattr(module, attr, type(value)(new))
            elif type(value) is int and len(new_of.get(value, ())) == 1:
                setattr(module, attr, next(iter(new_of[value])))
