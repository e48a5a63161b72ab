"""Trace the largest traceable submodules of a model ``torch.export`` cannot trace whole.

Detectors decode boxes with data-dependent control flow (score thresholds, NMS), which
``torch.export`` refuses. One real forward records what every module receives and
returns; modules are then tried top-down, and each one that traces becomes a *part*
(its children are not tried), while a failing one is searched further. The parts are
replayed by one :class:`Parts` module that shares the model's modules and parameters,
and that module is traced into one :class:`DependencyGraph`:

* a part's input that an earlier part returned is wired through (its channels stay free);
* any other input, and every output the untraced code reads, is a boundary: it freezes,
  and ``explain`` names the untraced module on the other side. Reading a tensor's
  metadata (``.shape``) is not a read: code that derives sizes from it follows the
  slim widths, and ``sg.slim`` runs the whole slim model once to check.

Slicing the :class:`Parts` module slices the model, whose modules it shares. The plan's
inputs are those of the :class:`Parts` module: it applies to the model through
``sg.slim`` (or ``sg.apply`` on :meth:`PartitionedTrace.bind`'s module and graph), not
to a retrace of the whole model; calibration is not supported yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from slimgraph._core.inputs import ExampleInputs, input_specs, preserve_modes, split_inputs
from slimgraph.errors import TraceError
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.graph.ruletable import RuleTables, load_rules
from slimgraph.graph.trace import build_graph, export_program

__all__ = ["Parts", "PartitionedTrace", "buffers_restored", "trace_parts"]

Stack = tuple[str, ...]


@dataclass
class Call:
    """One call of a module during the recorded forward."""

    name: str
    args: tuple
    kwargs: dict[str, Any]
    out: Any = None


@dataclass
class Recording:
    """What one eager forward did: module calls in order, and for each tensor (by id) the
    module stacks that created and read it."""

    calls: list[Call] = field(default_factory=list)
    created: dict[int, Stack] = field(default_factory=dict)
    reads: dict[int, list[Stack]] = field(default_factory=dict)
    inputs: set[int] = field(default_factory=set)  # the model's own input tensors
    outputs: set[int] = field(default_factory=set)  # the model's own output tensors
    keep: list[torch.Tensor] = field(default_factory=list)  # keeps the ids valid


# Reading a tensor's metadata does not read its channels.
_METADATA = ("__get__", "size", "dim", "numel", "stride", "is_contiguous", "element_size")


class _Reads(TorchFunctionMode):
    def __init__(self, rec: Recording, stack: list[str]) -> None:
        super().__init__()
        self.rec, self.stack = rec, stack

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in _METADATA:
            return out
        where = tuple(self.stack)
        for t in _tensors((args, kwargs)):
            self.rec.reads.setdefault(id(t), []).append(where)
            self.rec.keep.append(t)
        for t in _tensors(out):
            self.rec.created.setdefault(id(t), where)
            self.rec.keep.append(t)
        return out


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]


def _record(model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Recording:
    """Run ``model`` once, eagerly, recording every module call and tensor read."""
    rec, stack = Recording(), []
    open_calls: list[Call] = []

    def enter(name: str, _module: nn.Module, a: tuple, kw: dict[str, Any]) -> None:
        stack.append(name)
        call = Call(name, a, dict(kw))
        rec.calls.append(call)
        open_calls.append(call)

    def leave(_module: nn.Module, _a: tuple, _kw: dict[str, Any], out: Any) -> None:
        stack.pop()
        open_calls.pop().out = out

    handles = []
    for name, module in model.named_modules():
        handles.append(
            module.register_forward_pre_hook(
                lambda m, a, kw, n=name: enter(n, m, a, kw), with_kwargs=True
            )
        )
        handles.append(module.register_forward_hook(leave, with_kwargs=True))
    try:
        with torch.no_grad(), buffers_restored(model), _Reads(rec, stack):
            out = model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    rec.inputs = {id(t) for t in _tensors((args, kwargs))}
    rec.outputs = {id(t) for t in _tensors(out)}
    rec.keep.extend(_tensors((args, kwargs, out)))
    return rec


@contextlib.contextmanager
def buffers_restored(model: nn.Module) -> Iterator[None]:
    """Run a forward that leaves the buffers as they were (BatchNorm's running statistics
    move in train mode).

    >>> import torch
    >>> bn = torch.nn.BatchNorm1d(2)
    >>> with buffers_restored(bn):
    ...     _ = bn(torch.randn(4, 2))
    >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
    ([0.0, 0.0], 0)
    """
    saved = {n: b.clone() for n, b in model.named_buffers() if not b.is_meta}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in saved:
                    b.copy_(saved[name])


class Parts(nn.Module):
    """Replays the recorded calls of the parts of a model; shares its modules,
    parameters and buffers (their names too), so slicing this slices the model.

    Called with the boundary inputs, in the order of :attr:`PartitionedTrace.inputs`; returns
    the boundary outputs.
    """

    def __init__(
        self, model: nn.Module, replay: list[tuple[str, Any, list[Any]]], returns: list[int]
    ) -> None:
        super().__init__()
        for key in ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"):
            self.__dict__[key] = model.__dict__[key]
        self.training = model.training
        # (module, pytree spec of (args, kwargs), leaves: a _Wire or a constant)
        self.replay = replay
        self.returns = returns  # the ("out", k) sources returned

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        produced: list[Any] = []
        for name, spec, leaves in self.replay:
            values = [_source(leaf, inputs, produced) for leaf in leaves]
            args, kwargs = pytree.tree_unflatten(values, spec)
            produced.extend(pytree.tree_leaves(self.get_submodule(name)(*args, **kwargs)))
        return tuple(produced[k] for k in self.returns)


def _source(leaf: Any, inputs: tuple, produced: list[Any]) -> Any:
    if isinstance(leaf, _Wire):
        return inputs[leaf.index] if leaf.kind == "in" else produced[leaf.index]
    return leaf


@dataclass(frozen=True)
class _Wire:
    kind: str  # "in": a boundary input; "out": a leaf an earlier part returned
    index: int


@dataclass
class PartitionedTrace:
    """The graph over the traced parts, the :class:`Parts` module it was traced from, and
    the boundary inputs it takes (recorded in one real forward)."""

    graph: DependencyGraph
    parts: Parts
    inputs: tuple[torch.Tensor, ...]
    names: list[str]  # the parts, in the order they run
    failed: dict[str, str]  # modules that could not be traced -> why

    def bind(self, model: nn.Module) -> tuple[Parts, DependencyGraph]:
        """A :class:`Parts` module over ``model`` (a copy of the traced one) and the graph
        bound to it."""
        parts = Parts(model, self.parts.replay, self.parts.returns)
        return parts, self.graph.for_model(parts)


def trace_parts(
    model: nn.Module,
    example_inputs: ExampleInputs,
    failure: TraceError,
    *,
    rules: RuleTables | None = None,
    head_dims: bool = False,
    query_heads: bool = False,
) -> PartitionedTrace:
    """Trace the largest traceable submodules of ``model``, which failed with ``failure``.

    >>> import torch, slimgraph as sg
    >>> from slimgraph.graph.partition import trace_parts
    >>> class Net(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    ...     def forward(self, x):
    ...         y = self.body(x)
    ...         return y if y.sum() > 0 else -y  # branches on a value
    >>> net, x = Net(), torch.randn(3, 4)
    >>> try:
    ...     sg.trace(net, (x,))
    ... except sg.TraceError as err:
    ...     found = trace_parts(net, (x,), err)
    >>> found.names, [g.id for g in found.graph.prunable_groups()]
    (['body'], ['body.0.weight:0'])
    """
    args, kwargs = split_inputs(example_inputs)
    with preserve_modes(model):
        rec = _record(model, args, kwargs)
    failed = {"": _cause(failure)}
    names = _choose(model, rec, failed)
    if not names:
        raise TraceError(
            f"{failure}\nNo submodule with parameters could be traced on its own either."
        ) from failure
    replay, inputs, in_reasons, returns, out_reasons = _wire(rec, names, failed)
    parts = Parts(model, replay, returns)
    ep = export_program(parts, inputs, {})
    graph = build_graph(
        ep,
        parts,
        rules or load_rules(),
        input_specs(inputs, {}),
        head_dims,
        query_heads,
        boundary=(in_reasons, out_reasons),
    )
    return PartitionedTrace(graph, parts, inputs, names, failed)


def _cause(err: BaseException) -> str:
    text = f"{err} {err.__cause__ or ''}"
    if "data-dependent" in text.lower() or "GuardOnDataDependent" in text:
        return "data-dependent control flow"
    inner = err.__cause__ or err
    return f"{type(inner).__name__}: {(str(inner).splitlines() or [''])[0][:120]}"


def _calls_of(rec: Recording, name: str) -> list[Call]:
    return [c for c in rec.calls if c.name == name]


def _choose(model: nn.Module, rec: Recording, failed: dict[str, str]) -> list[str]:
    """The modules, top-down below each that failed, that trace with their recorded
    inputs; modules without parameters or never called are not tried."""
    found: list[str] = []
    todo = [f"{n}" for n, _ in model.named_children()]
    while todo:
        name = todo.pop(0)
        module = model.get_submodule(name)
        if next(module.parameters(), None) is None:
            continue
        if not _calls_of(rec, name):  # a container (ModuleList) runs only its children
            todo[:0] = [f"{name}.{n}" for n, _ in module.named_children()]
            continue
        replay, inputs, _, returns, _ = _wire(rec, [name], failed)
        try:
            _static(export_program(Parts(model, replay, returns), inputs, {}))
        except TraceError as err:
            failed[name] = _cause(err)
            todo[:0] = [f"{name}.{n}" for n, _ in module.named_children()]
            continue
        found.append(name)
    order = {c.name: i for i, c in reversed(list(enumerate(rec.calls)))}
    return sorted(found, key=order.__getitem__)


def _static(ep: ExportedProgram) -> None:
    """Refuse a program whose shapes depend on values (boolean-mask indexing exports,
    but its graph cannot be built)."""
    for node in ep.graph.nodes:
        val = node.meta.get("val")
        for t in val if isinstance(val, (list, tuple)) else [val]:
            if isinstance(t, torch.Tensor) and not all(isinstance(s, int) for s in t.shape):
                raise TraceError(f"data-dependent shape {tuple(t.shape)} at {node.name}")


def _innermost_failed(stack: Stack, failed: dict[str, str]) -> str:
    return next((n for n in reversed(stack) if n in failed), "")


def _label(name: str) -> str:
    return name or "the model's forward"


def _wire(rec: Recording, names: list[str], failed: dict[str, str]):
    """The replay of ``names``' calls: where each input comes from, which outputs are
    returned, and why each boundary freezes."""
    parts = set(names)

    def traced(stack: Stack) -> bool:
        return any(n in parts for n in stack)

    inputs: list[torch.Tensor] = []
    in_reasons: list[str] = []
    seen: dict[int, _Wire] = {}
    replay: list[tuple[str, Any, list[Any]]] = []
    returns: list[int] = []
    out_reasons: list[str] = []
    start = 0  # where the call's output leaves begin among those produced so far
    for call in (c for c in rec.calls if c.name in parts):
        leaves, spec = pytree.tree_flatten((call.args, call.kwargs))
        wired = []
        for leaf in leaves:
            if not isinstance(leaf, torch.Tensor):
                wired.append(leaf)
                continue
            if id(leaf) not in seen:
                seen[id(leaf)] = _Wire("in", len(inputs))
                inputs.append(leaf)
                in_reasons.append(_input_reason(rec, call.name, leaf, failed))
            wired.append(seen[id(leaf)])
        replay.append((call.name, spec, wired))
        out_leaves = pytree.tree_leaves(call.out)
        for k, leaf in enumerate(out_leaves):
            if not isinstance(leaf, torch.Tensor):
                continue
            seen.setdefault(id(leaf), _Wire("out", start + k))
            untraced = [s for s in rec.reads.get(id(leaf), []) if not traced(s)]
            if id(leaf) in rec.outputs or untraced:
                where = _innermost_failed(untraced[0], failed) if untraced else None
                returns.append(start + k)
                out_reasons.append(
                    f"output of {call.name}, returned by the model"
                    if where is None
                    else f"output of {call.name}, read by {_label(where)}, which could not "
                    f"be traced ({failed[where]})"
                )
        start += len(out_leaves)
    return replay, tuple(inputs), in_reasons, returns, out_reasons


def _input_reason(rec: Recording, part: str, t: torch.Tensor, failed: dict[str, str]) -> str:
    if id(t) in rec.inputs:
        return f"input of {part}, a model input: its shape is fixed by the caller"
    stack = rec.created.get(id(t), ())
    where = _innermost_failed(stack, failed) if stack else _parent_failed(part, failed)
    return (
        f"input of {part}, computed by {_label(where)}, which could not be traced ({failed[where]})"
    )


def _parent_failed(part: str, failed: dict[str, str]) -> str:
    name = part
    while name:
        name = name.rpartition(".")[0]
        if name in failed:
            return name
    return ""
