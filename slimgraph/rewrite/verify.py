"""The value check: on exact plans the slim model computes what the original computes with
the dropped units zeroed (the dead-unit oracle, run on the user's example inputs).

The shape check after a rewrite cannot see code that branches on a width (``if
h.shape[1] == 16:``): ``torch.export`` specialises static sizes, so the branch leaves no
trace in the graph, and the slim model silently takes the other path. The values can see
it. Before slicing, the original runs once with every slice of the dropped units zeroed
(each op reads a zeroed copy of its weights); the slim model's outputs must match within a tolerance scaled to
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
import functools
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from slimgraph._core.inputs import (
    attributes_kept,
    map_tensors,
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
    """Run ``model`` with every sliced parameter's dropped indices reading as zeros.

    The caller's tensors are never written: each op that reads a sliced parameter (or a
    view of it) gets a zeroed copy, made as the op runs, in a buffer reused once the op's
    result no longer needs it (:class:`_Scratch`). Copying every parameter up front would
    double the weights' memory for the forward. A copy is one product with a mask of the
    kept indices (a small tensor that broadcasts over the parameter, shared by the
    parameters that keep the same indices); a tensor tied under several names is masked
    for every name's slices. A dropped weight that is not finite leaves a reference that
    is not either, which the check then skips."""
    params = dict(model.named_parameters(remove_duplicate=False))
    lines: dict[int, tuple[torch.Tensor, dict[int, torch.Tensor]]] = {}  # kept, by dim
    kept_lines: dict[tuple, torch.Tensor] = {}  # a group's indices are kept by many slices
    for name, kept in slices.items():
        p = params.get(name)
        if p is None or not kept:
            continue  # buffers: the zeroed weights already silence their units
        by_dim = lines.setdefault(id(p), (p.detach(), {}))[1]
        for dim, keep in kept:
            key = (p.shape[dim], p.dtype, p.device, np.asarray(keep).tobytes())
            line = kept_lines.get(key)
            if line is None:
                line = torch.zeros(p.shape[dim], dtype=p.dtype, device=p.device)
                line[torch.as_tensor(keep, dtype=torch.long, device=p.device)] = 1
                kept_lines[key] = line
            by_dim[dim] = by_dim[dim] * line if dim in by_dim else line
    by_storage: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for param, by_dim in lines.values():
        by_storage.setdefault(param.untyped_storage()._cdata, []).append(
            (param, _mask(param, by_dim))
        )
    alone = {  # a parameter alone in its storage may be read whole by a convolution
        key: (param, by_dim)
        for param, by_dim in lines.values()
        if len(by_storage[key := param.untyped_storage()._cdata]) == 1
    }
    with _ZeroedReads(by_storage, alone):
        yield


def _mask(param: torch.Tensor, lines: dict[int, torch.Tensor]) -> torch.Tensor:
    """The kept ``lines`` (by dim, at least one) as one mask that broadcasts over ``param``."""
    views = []
    for dim, line in lines.items():
        shape = [1] * param.dim()
        shape[dim] = param.shape[dim]
        views.append(line.view(shape))
    return functools.reduce(operator.mul, views)


class _ZeroedReads(TorchDispatchMode):
    """Hands each op the zeroed copy of any argument that shares storage with a masked
    parameter, viewed as the argument views the parameter."""

    def __init__(
        self,
        masked: dict[int, list[tuple[torch.Tensor, torch.Tensor]]],
        alone: dict[int, tuple[torch.Tensor, dict[int, torch.Tensor]]],
    ) -> None:
        super().__init__()
        self._masked = masked
        self._alone = alone
        self._scratch = _Scratch()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is _CONVOLUTION and not kwargs:
            out = self._convolution(*args)
            if out is not None:
                return out
        args, kwargs = map_tensors(self._zeroed, (args, kwargs or {}))
        return func(*args, **kwargs)

    def _convolution(self, x: Any, weight: Any, bias: Any, *rest: Any) -> torch.Tensor | None:
        """A convolution that reads its input with the dropped input channels zeroed and
        zeroes its result's dropped output channels: the values of one that reads the
        zeroed weight (it is linear in each, and the same products are zero), without
        copying a weight larger than its activations (ResNet-50's last stage: 9.4 MB of
        weight, 0.1 MB of input). ``None`` where that does not hold or does not pay: the
        caller zeroes the weight instead."""
        transposed, groups = rest[3], rest[5]
        lines = self._lines(weight)
        if not lines or set(lines) - {0, 1} or transposed or groups != 1:
            return None
        if x.dim() != weight.dim() or x.dtype != weight.dtype:
            return None
        out_line, in_line = lines.get(0), lines.get(1)
        bias_lines = {0: out_line} if bias is None else self._lines(bias)
        if bias_lines is None or bias_lines.get(0) is not out_line:
            return None  # the bias keeps other units than the weight's rows
        per_channel = x.numel() // max(x.shape[1], 1)
        moved = (in_line is not None) * x.shape[1] + (out_line is not None) * weight.shape[0]
        if per_channel * moved >= weight.numel():
            return None
        shape = [1] * x.dim()
        x = self._zeroed(x)
        if in_line is not None:
            shape[1] = x.shape[1]
            x = x * in_line.view(shape)
        out = _CONVOLUTION(x, weight, bias, *rest)
        if out_line is not None:
            shape[1] = out.shape[1]
            out.mul_(out_line.view(shape))
        return out

    def _lines(self, t: torch.Tensor) -> dict[int, torch.Tensor] | None:
        """The kept lines by dim of the masked parameter ``t`` is; empty when ``t`` is not
        masked, ``None`` when it is a view of a masked tensor or shares its storage."""
        key = t.untyped_storage()._cdata
        if key not in self._masked:
            return {}
        param, lines = self._alone.get(key, (None, None))
        if param is None or (t.shape, t.stride(), t.storage_offset()) != (
            param.shape,
            param.stride(),
            param.storage_offset(),
        ):
            return None
        return lines

    def _zeroed(self, t: torch.Tensor) -> torch.Tensor:
        if t.layout != torch.strided or t.device.type == "meta":
            return t
        masked = self._masked.get(t.untyped_storage()._cdata)
        if masked is None:
            return t
        storage = self._scratch.take(t.untyped_storage().nbytes(), t.device)
        _zero_into(storage, masked)
        return _viewed(storage, t)


_CONVOLUTION = torch.ops.aten.convolution.default


class _Scratch:
    """Buffers for the zeroed copies, each reused once no tensor holds it any more.

    A fresh buffer per op costs more than its copy: on CPU, a convolution on weights in
    freshly allocated pages ran 4-5x slower than on weights in pages it had used before
    (a 3x3 conv of ResNet-50's last stage: 5.5 ms against 1.2 ms), which made the
    reference forward nearly twice a plain one. A copy takes the smallest free buffer
    that holds it, so the forward allocates a few buffers, not one per op (ResNet-50:
    6 buffers, 12.6 MB, for 102 MB of weights). A buffer that an op's result still
    views (a transpose of the weight, read by the next op) is in use and is not handed
    out."""

    def __init__(self) -> None:
        self._buffers: list[torch.UntypedStorage] = []

    def take(self, nbytes: int, device: torch.device) -> torch.UntypedStorage:
        free = [
            s
            for s in self._buffers
            if s.device == device and s.nbytes() >= nbytes and _use_count(s) == 1
        ]  # a count of 1: only this list holds it
        if free:
            return min(free, key=lambda s: s.nbytes())
        storage = torch.UntypedStorage(nbytes, device=device)
        self._buffers.append(storage)
        return storage


def _use_count(storage: torch.UntypedStorage) -> int:
    return torch._C._storage_Use_Count(storage._cdata)


def _zero_into(
    storage: torch.UntypedStorage, masked: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    """Write the parameters' shared storage into ``storage`` with each one's mask applied."""
    (p, mask), *rest = masked
    if not rest and _whole(p):
        torch.mul(p, mask, out=_viewed(storage, p))
        return
    source = p.untyped_storage()
    _bytes(storage, source.nbytes()).copy_(_bytes(source, source.nbytes()))
    for p, mask in masked:
        _viewed(storage, p).mul_(mask)


def _bytes(storage: torch.UntypedStorage, nbytes: int) -> torch.Tensor:
    out = torch.empty(0, dtype=torch.uint8, device=storage.device)
    return out.set_(storage, 0, (nbytes,), (1,))


def _viewed(storage: torch.UntypedStorage, like: torch.Tensor) -> torch.Tensor:
    """``storage`` viewed as ``like`` views its own."""
    out = torch.empty(0, dtype=like.dtype, device=like.device)
    return out.set_(storage, like.storage_offset(), like.shape, like.stride())


def _whole(t: torch.Tensor) -> bool:
    """Whether ``t`` spans its storage exactly, each element once (one product then
    writes every byte of the copy)."""
    dense = t.is_contiguous() or (
        t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    )
    if t.storage_offset() or not dense:
        return False
    return t.untyped_storage().nbytes() == t.numel() * t.element_size()
