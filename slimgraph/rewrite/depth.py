"""Depth pruning: drop whole residual blocks from the containers that run them in turn.

A *block* is a member of an ``nn.Sequential`` or ``nn.ModuleList`` that computes
``x + f(x)``: found by the mechanism, not by its class, as a member with parameters which,
with every parameter zeroed, returns its input unchanged (a ResNet bottleneck after the
first of its stage, a ConvNeXt / ViT / Swin block, a decoder layer of a causal LM; not a
stage's first bottleneck, whose shortcut is a strided convolution, nor a lone conv or
norm). Dropping one removes it from its container, so the model keeps its class.

How much a block changes what flows through it is its *block influence* (ShortGPT):
``1 - cos(input, output)`` of each sample, averaged over the calibration batches; the
blocks that change it least go first. Given ``loss_fn(model, batch) -> loss``, the
influence is instead how much the loss rises on the calibration batches when the block
alone is skipped (:mod:`slimgraph.rewrite.influence`). A Hugging Face model's config follows: its
``num_hidden_layers`` and every per-layer list of that length (``layer_types``, sliding
window flags) lose the dropped layers, and each kept layer's ``layer_idx`` (the key/value
cache slot it writes) is renumbered; a model built afresh from the new config must have
the slim model's shapes, or a warning says the config cannot describe it.

>>> import torch, slimgraph as sg
>>> class Res(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.f = torch.nn.Linear(8, 8)
...     def forward(self, x):
...         return x + self.f(x)
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), Res(), Res(), Res(), torch.nn.Linear(8, 2))
>>> x = (torch.randn(16, 4),)
>>> find_blocks(net, x)
['1', '2', '3']
>>> result = sg.drop_blocks(net, x, n=2)
>>> len(result.model), len(result.dropped), result.model(*x).shape
(3, 2, torch.Size([16, 2]))
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimgraph._core.batches import Selector
from slimgraph._core.inputs import output_shapes, preserve_modes
from slimgraph.errors import RewriteError
from slimgraph.rewrite._hooks import cloned, first_tensor, run, watching
from slimgraph.rewrite.hf_config import EXACT, config_describes
from slimgraph.rewrite.influence import block_influence, loss_influence

__all__ = ["DepthResult", "drop_blocks", "find_blocks", "rank_blocks", "remove_blocks"]

CONTAINERS = (nn.Sequential, nn.ModuleList)


@dataclass
class DepthResult:
    """The model without its dropped blocks, which were dropped, and every block's
    influence (lower: changed its input, or the loss, less)."""

    model: nn.Module
    dropped: list[str]
    influence: dict[str, float] = field(default_factory=dict)
    renamed: dict[str, str | None] = field(default_factory=dict)  # see remove_blocks


def _members(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, member)`` of every member of a container, outermost first."""
    for name, module in model.named_modules():
        if isinstance(module, CONTAINERS):
            for key, member in module.named_children():
                yield f"{name}.{key}" if name else key, member


def find_blocks(model: nn.Module, example_inputs: Any) -> list[str]:
    """The names of ``model``'s droppable blocks, in module order (see the module
    docstring): one forward on ``example_inputs`` records what each container member
    receives, then each member with parameters runs again on it with its parameters
    zeroed (``torch.func.functional_call``; the model is not changed). A member that
    holds blocks (a stage made only of blocks) is not one itself: its blocks are."""
    members = {n: m for n, m in _members(model) if next(m.parameters(), None) is not None}
    calls: dict[str, tuple[Any, Any, Any]] = {}

    def seen(name: str, args: Any, kwargs: Any, out: Any) -> None:
        calls.setdefault(name, (cloned(args), cloned(kwargs), first_tensor(out)))

    with preserve_modes(model), watching(members, seen):
        run(model, example_inputs)
    found = set()
    for name, (args, kwargs, out) in calls.items():
        x = first_tensor((args, kwargs))
        if x is None or out is None or out.shape != x.shape or not x.is_floating_point():
            continue
        if _returns_input(members[name], args, kwargs, x):
            found.add(name)
    # a stage of blocks returns its input too (ConvNeXt's): its blocks are the units
    outer = {a for a in found if any(b.startswith(f"{a}.") for b in found)}
    return [name for name in members if name in found - outer]


def _returns_input(module: nn.Module, args: Any, kwargs: Any, x: torch.Tensor) -> bool:
    """Whether ``module`` with every parameter zeroed returns ``x`` (it computes x + f(x))."""
    zeros = {k: torch.zeros_like(p) for k, p in module.named_parameters()}
    try:
        with torch.no_grad(), preserve_modes(module):
            z = first_tensor(torch.func.functional_call(module, zeros, args, kwargs))
    except Exception:  # a member that cannot run alone on what it got is no block
        return False
    return z is not None and z.shape == x.shape and _same(z, x)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a == b`` up to rounding, relative to ``b``'s own scale: the deep activations of a
    random-weight network can be 1e-9 small, and a zeroed layer's 0 must not pass for
    them. A zero ``b`` tells nothing (every zeroed layer returns it): never the same."""
    scale = float(b.abs().max()) if b.numel() else 0.0
    if not scale > 0.0:  # zero, or not finite
        return False
    return bool(torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6 * scale))


def drop_blocks(
    model: nn.Module,
    example_inputs: Any,
    *,
    n: int | None = None,
    blocks: Sequence[str] | None = None,
    calibration: Iterable[Any] | None = None,
    inputs: Selector | None = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    progress: bool = True,
) -> DepthResult:
    """A copy of ``model`` without ``n`` blocks (those of least influence on
    ``calibration``, the example inputs by default), or without the named ``blocks``.

    Influence is ``1 - cos`` (:func:`block_influence`, ``inputs(batch)`` selecting the
    model inputs), or with ``loss_fn(model, batch) -> loss`` the rise of the loss when the
    block is skipped (:func:`loss_influence`), which needs ``calibration`` batches. The
    copy must give outputs of the original's shapes on ``example_inputs``, and a Hugging
    Face config is updated (see the module docstring). Blocks that cannot be dropped are
    refused with the reason.
    """
    if (n is None) == (blocks is None):
        raise RewriteError("pass n (how many blocks to drop) or blocks (which ones), not both")
    if loss_fn is not None and calibration is None:
        raise RewriteError(
            "loss_fn ranks blocks by how much skipping each raises the loss on calibration "
            "batches: pass calibration=batches too (loss_fn(model, batch) gets each)"
        )
    candidates = find_blocks(model, example_inputs)
    influence: dict[str, float] = {}
    if blocks is not None:
        chosen = list(dict.fromkeys(blocks))
        wrong = [b for b in chosen if b not in candidates]
        if wrong:
            raise RewriteError(
                f"{wrong} are not droppable blocks: a block is a member of an nn.Sequential or "
                "nn.ModuleList that returns its input when its weights are zero (x + f(x)); "
                f"this model's are {candidates}"
            )
    else:
        if n is None or not 0 < n <= len(candidates):
            raise RewriteError(f"n must be between 1 and {len(candidates)} (the droppable blocks)")
        influence = rank_blocks(
            model, candidates, example_inputs, calibration, inputs, loss_fn, progress
        )
        chosen = list(influence)[:n]
    expected = output_shapes(run(model, example_inputs))
    slim = copy.deepcopy(model)
    renamed = remove_blocks(slim, chosen)
    got = output_shapes(run(slim, example_inputs))
    if got != expected:
        raise RewriteError(
            f"without {chosen} the model's outputs have shapes {got}, not {expected}"
        )
    return DepthResult(slim, [b for b in candidates if b in chosen], influence, renamed)


def rank_blocks(
    model: nn.Module,
    blocks: Sequence[str],
    example_inputs: Any,
    calibration: Iterable[Any] | None = None,
    inputs: Selector | None = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """The influence of each of ``blocks``, least first (ties in module order): the order
    :func:`drop_blocks` drops them in. ``1 - cos`` on ``calibration`` (the example inputs
    by default), or with ``loss_fn`` the loss rise on ``calibration`` when each is skipped."""
    if loss_fn is not None and calibration is not None:
        influence = loss_influence(model, blocks, calibration, loss_fn, progress)
    else:
        batches = calibration if calibration is not None else [example_inputs]
        influence = block_influence(model, blocks, batches, inputs, progress)
    order = sorted(blocks, key=lambda b: (influence[b], blocks.index(b)))
    return {b: influence[b] for b in order}


def remove_blocks(model: nn.Module, blocks: Sequence[str]) -> dict[str, str | None]:
    """Take the named members out of their containers in ``model`` (in place), renumbering
    the members after them and their ``layer_idx``; a Hugging Face config follows (see the
    module docstring). Returns the module paths that changed: a dropped one -> ``None``, a
    renumbered one -> its new path. A name that is not a member of an ``nn.Sequential``
    or ``nn.ModuleList`` is refused before anything changes.

    >>> net = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh(), torch.nn.ReLU())
    >>> remove_blocks(net, ["1"])
    {'1': None, '2': '1'}
    >>> net
    Sequential(
      (0): ReLU()
      (1): ReLU()
    )
    >>> remove_blocks(net, ["0.weight"])
    Traceback (most recent call last):
    ...
    slimgraph.errors.RewriteError: ['0.weight'] are not members of an nn.Sequential or nn.ModuleList of Sequential
    """
    members = dict(_members(model))
    wrong = [b for b in blocks if b not in members]
    if wrong:
        raise RewriteError(
            f"{wrong} are not members of an nn.Sequential or nn.ModuleList of "
            f"{type(model).__name__}"
        )
    renamed: dict[str, str | None] = dict.fromkeys(blocks)
    _follow_configs(model, _remove(model, blocks, renamed))
    return renamed


def _remove(
    model: nn.Module, dropped: Sequence[str], renamed: dict[str, str | None]
) -> dict[str, tuple[int, list[int]]]:
    """Take the dropped members out of their containers (numbered members renumbered, each
    new path added to ``renamed``) and renumber the ``layer_idx`` of the moved ones;
    container -> (old length, kept indices)."""
    modules = dict(model.named_modules())
    by_container: dict[str, set[str]] = {}
    for name in dropped:
        parent, _, key = name.rpartition(".")
        by_container.setdefault(parent, set()).add(key)
    kept_indices: dict[str, tuple[int, list[int]]] = {}
    for parent, keys in by_container.items():
        container = modules[parent]
        items = list(container._modules.items())
        numbered = all(k.isdigit() for k, _ in items)
        kept = [(i, k, m) for i, (k, m) in enumerate(items) if k not in keys]
        container._modules = OrderedDict(
            (str(j) if numbered else k, m) for j, (_, k, m) in enumerate(kept)
        )
        prefix = f"{parent}." if parent else ""
        for j, (i, _, member) in enumerate(kept):
            if numbered and i != j:
                renamed[f"{prefix}{i}"] = f"{prefix}{j}"
            for sub in member.modules() if i != j else ():
                if getattr(sub, "layer_idx", None) == i:
                    sub.layer_idx = j  # the key/value cache slot it reads and writes
        kept_indices[parent] = (len(items), [i for i, _, _ in kept])
    return kept_indices


def _follow_configs(model: nn.Module, kept: dict[str, tuple[int, list[int]]]) -> None:
    """Each Hugging Face config whose ``num_hidden_layers`` counted a shortened container:
    the new count, and its per-layer lists filtered; then check it rebuilds the model."""
    configs: dict[int, Any] = {
        id(c): c for m in model.modules() if hasattr(c := getattr(m, "config", None), "to_dict")
    }
    if not configs:
        return
    for config in configs.values():
        layers = getattr(config, "num_hidden_layers", None)
        for length, indices in kept.values():
            if layers != length:
                continue
            for key, value in list(vars(config).items()):
                if isinstance(value, (list, tuple)) and len(value) == length:
                    setattr(config, key, type(value)(value[i] for i in indices))
            config.num_hidden_layers = len(indices)
    exact = hasattr(model, "config") and config_describes(model)
    for config in configs.values():
        setattr(config, EXACT, exact)
    if not exact:
        warnings.warn(
            "the model's config cannot describe it without the dropped blocks; it runs, but "
            "from_pretrained would rebuild the layers it had",
            stacklevel=3,
        )
