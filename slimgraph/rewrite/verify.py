"""The value check: on exact plans the slim model computes what the original computes with
the dropped units zeroed (the dead-unit oracle, run on the user's example inputs).

The shape check after a rewrite cannot see code that branches on a width (``if
h.shape[1] == 16:``): ``torch.export`` specialises static sizes, so the branch leaves no
trace in the graph, and the slim model silently takes the other path. The values can see
it. Before slicing, the original runs once on copies of its weights with every slice of
the dropped units zeroed; the slim model's outputs must match within a tolerance scaled to
the outputs' magnitude.

The check runs only where it means something and costs one forward of each model:
every group the plan drops from is exact and the graph has no inexact dim at all (no
statistics over a dropped dim, no attention scale that reads the head dim), no means are
folded into biases, the weights are real, and no random op runs (dropout in train mode).

>>> import torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
>>> x = (torch.randn(3, 4),)
>>> graph = sg.trace(net, x)
>>> plan = sg.plan(graph, ratio=0.5)
>>> from slimgraph.resolve.indices import kept_shapes
>>> reference = reference_outputs(net, plan, graph, kept_shapes(graph, plan), x)
>>> check_values(sg.apply(net, plan, graph=graph), reference)  # agrees: no error
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.stateless import _reparametrize_module

from slimgraph._core.inputs import (
    attributes_kept,
    output_tensors,
    preserve_modes,
    split_inputs,
    without_kv_cache,
)
from slimgraph.errors import RewriteError
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.resolve.plan import PruningPlan
from slimgraph.resolve.slicing import Slices

__all__ = ["Reference", "check_values", "reference_outputs"]

# Ops that draw random numbers: two runs of them cannot be compared value for value.
_RANDOM = ("dropout", "bernoulli", "rand", "normal", "multinomial", "uniform")


@dataclass
class Reference:
    """The original model's outputs with the dropped units zeroed, and how it ran."""

    outputs: list[torch.Tensor]
    inputs: Any
    modes: dict[str, bool]


def reference_outputs(
    model: nn.Module,
    plan: PruningPlan,
    graph: DependencyGraph,
    slices: Slices,
    example_inputs: Any,
) -> Reference | None:
    """Run ``model`` with the plan's dropped units zeroed; ``None`` where the value check
    does not apply (see the module docstring). ``model`` is left as it was."""
    if example_inputs is None or not _checkable(model, plan, graph):
        return None
    try:
        with _zeroed(model, slices), attributes_kept(model):
            outputs = _run(model, example_inputs, graph.modes)
    except Exception:
        # A model that refuses zeroed weights (an assert on its activations) cannot serve as
        # its own reference; the shape check still runs, and nothing is left zeroed.
        return None
    return Reference(outputs, example_inputs, graph.modes)


def check_values(slim: nn.Module, reference: Reference | None, outputs: Any = None) -> None:
    """Raise :class:`RewriteError` when ``slim``'s outputs differ from the reference;
    ``outputs`` are the slim model's on the reference's inputs when the caller has them
    (the shape check ran it already)."""
    if reference is None:
        return
    if outputs is None:
        got = _run(slim, reference.inputs, reference.modes)
    else:
        got = [t.detach() for t in output_tensors(outputs) if t.is_floating_point()]
    for i, (out, ref) in enumerate(zip(got, reference.outputs)):
        if out.shape != ref.shape or not bool(torch.isfinite(ref).all()):
            continue  # the shape check reports shapes; a non-finite reference proves nothing
        # Fewer channels sum in another order: allow rounding, scaled to the outputs.
        rtol = 1e-3 if torch.finfo(ref.dtype).bits > 16 else 3e-2
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        diff = float((out.double() - ref.double()).abs().max()) if ref.numel() else 0.0
        if not diff <= rtol * scale + torch.finfo(ref.dtype).eps:
            raise RewriteError(
                f"value check: output {i} of the slim model differs from the original's with "
                f"the dropped units zeroed by up to {diff:.3g} (outputs of scale {scale:.3g}), "
                "although every group the plan drops from is exact.\n"
                "Code that branches on a tensor's size (`if h.shape[1] == 16:`) probably "
                "takes another path in the slim model: make it read the width from the "
                "weights, or leave the modules it reads whole with PruneConfig(ignore=[...])."
            )


def _checkable(model: nn.Module, plan: PruningPlan, graph: DependencyGraph) -> bool:
    cuts = [c for c in plan.cuts if c.drop]
    if not cuts or plan.compensation or plan.head_dims:
        # head-dim units change the softmax scale (1 / sqrt(head dim)), a value no group
        # records as inexact
        return False
    if not all(graph.group(c.group).exact for c in cuts):
        return False  # statistics over a dropped dim change the kept values by design
    if graph.inexact_slots:
        # an inexact dim reached through a reshape's factor (the head dim a softmax scale
        # reads) is not yet charged to the group whose units it carries: check only graphs
        # with no inexact dim at all, so that an exact group is exact
        return False
    if any(p.is_meta for p in model.parameters()):
        return False
    trained = any(graph.modes.values())
    return not (trained and any(r in op for op in graph.node_ops.values() for r in _RANDOM))


def _run(model: nn.Module, inputs: Any, modes: dict[str, bool]) -> list[torch.Tensor]:
    """Floating outputs of ``model`` run in the traced modes, without moving any buffer."""
    args, kwargs = split_inputs(inputs)
    # Train mode moves BatchNorm statistics; eval mode moves nothing, so copies nothing.
    trained = any(modes.values())
    saved = {name: b.clone() for name, b in model.named_buffers()} if trained else {}
    with preserve_modes(model), without_kv_cache(model), torch.no_grad():
        for name, module in model.named_modules():
            module.training = modes.get(name, module.training)
        try:
            out = model(*args, **kwargs)
        finally:
            for name, b in model.named_buffers():
                if name in saved:
                    b.copy_(saved[name])
    return [t.detach() for t in output_tensors(out) if t.is_floating_point()]


@contextlib.contextmanager
def _zeroed(model: nn.Module, slices: Slices) -> Iterator[None]:
    """Run ``model`` on copies of its sliced parameters with the dropped indices zeroed.

    Copies rather than zeroing in place and restoring: the caller's tensors are never
    written. Each copy is one product with a mask of the kept indices (a small tensor that
    broadcasts over the parameter), so it is made in one pass; a tensor tied under several
    names gets one copy, masked for every name's slices. A dropped weight that is not
    finite leaves a reference that is not either, which the check then skips."""
    params = dict(model.named_parameters(remove_duplicate=False))
    masks: dict[int, torch.Tensor] = {}
    for name, kept in slices.items():
        p = params.get(name)
        if p is None:
            continue  # buffers: the zeroed weights already silence their units
        for dim, keep in kept:
            shape = [1] * p.dim()
            shape[dim] = p.shape[dim]
            mask = torch.zeros(shape, dtype=p.dtype, device=p.device)
            mask.view(-1)[torch.as_tensor(keep, dtype=torch.long, device=p.device)] = 1
            masks[id(p)] = masks[id(p)] * mask if id(p) in masks else mask
    unique = {id(p): p for p in params.values()}
    with torch.no_grad():
        copies = {key: unique[key].detach() * mask for key, mask in masks.items()}
    swapped = {name: copies[id(p)] for name, p in params.items() if id(p) in copies}
    with _reparametrize_module(model, swapped, tie_weights=True, stack_weights=True):
        yield
