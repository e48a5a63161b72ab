"""Record the graph ``torch.export`` would make, from one forward on the meta device.

``torch.export`` (non-strict) runs the model once on fake tensors under a proxy mode at
the pre-dispatch key, so it sees ``aten.conv2d`` and ``aten.linear`` before they are
decomposed. Most of its time goes on the machinery around that (fake tensors, proxies,
symbolic shapes, its passes): about 1 s of a 2 s ``sg.slim`` on resnet50. The recorder
sits at the same key, with the same flags set (``torch.compiler.is_exporting()``), over a
forward on meta copies of the parameters and inputs, and writes each op into an
``fx.Graph`` with the names, roles and module paths the rules read: the same graph in a
fifteenth of the time (0.07 s against about 1 s on resnet50, one thread).

It steps aside (:class:`NotRecorded`, and :func:`slimgraph.graph.trace.trace` exports
instead) wherever its graph could differ from the export's: an input that is not a tensor,
a tensor no recorded op made (a constant attribute, ``torch.tensor(...)`` in forward), a
change of grad or autocast mode (export wraps those in higher-order ops), or an op it
cannot run on the meta device. ``tests/graph/test_record.py`` checks that both give the
same fingerprint and groups on the model zoo.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
>>> graph = record_graph(net, (torch.randn(1, 3, 8, 8),), {})
>>> [str(n.target) for n in graph.nodes if n.op == "call_function"]
['aten.conv2d.default', 'aten.relu.default']
>>> [n.name for n in graph.nodes if n.op == "placeholder"]
['p_0_weight', 'p_0_bias', 'input']
"""

from __future__ import annotations

import contextlib
import inspect
import operator
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import fx
from torch._dispatch.python import enable_python_dispatcher
from torch._subclasses.schema_check_mode import SchemaCheckMode
from torch.nn.utils.stateless import _reparametrize_module
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary

from slimgraph._core.inputs import (
    attributes_kept,
    map_tensors,
    preserve_modes,
    without_kv_cache,
)
from slimgraph._core.metakernels import KernelCache, shape_only
from slimgraph.graph.builder import META_MODULE, META_ROLE

__all__ = ["NotRecorded", "record_graph", "recorded"]

# What export's pre-dispatch tracing turns into higher-order ops (torch.no_grad, autocast).
_MODE_CHANGES = frozenset({torch._C._set_grad_enabled, torch.amp.autocast_mode._enter_autocast})
# Made here on the meta device, but a constant lifted out of the graph when export makes it
# on a CPU fake tensor (``x[i] = 3`` writes a scalar tensor made without dispatch).
_LIFTED_BY_EXPORT = frozenset({torch.ops.aten.scalar_tensor.default})
# export puts an ``_assert_tensor_metadata`` check before each of these (a pass of its own)
_TO = (torch.ops.aten.to.device, torch.ops.aten.to.dtype, torch.ops.aten.to.dtype_layout)


class NotRecorded(Exception):
    """The recorder cannot promise export's graph for this model; export it instead."""


class _ModeWatch(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _MODE_CHANGES:
            raise NotRecorded(f"the forward calls {func.__name__}")
        return func(*args, **(kwargs or {}))


class _Recorder(SchemaCheckMode):
    """A dispatch mode at the pre-dispatch key. That key admits three mode classes only,
    and this one subclasses the lightest of them; it runs each op and records it."""

    def __init__(self, graph: fx.Graph, nodes: WeakTensorKeyDictionary, stack: list[str]):
        TorchDispatchMode.__init__(self, torch._C.DispatchKey.PreDispatch)
        self.graph, self.nodes, self.stack = graph, nodes, stack
        self.kernels = KernelCache()  # a repeated layer's kernels run once

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LIFTED_BY_EXPORT:
            raise NotRecorded(f"{func} (export lifts its tensor as a constant)")
        node_args, node_kwargs = map_tensors(self._node, (args, kwargs))
        # The mode is popped here: the op runs on its C++ meta kernel, not on the Python
        # ones the dispatcher the mode needed would pick (about a seventh of a recording),
        # and the torch calls of a Python kernel are the kernel's, not the model's: no watch.
        with torch._C._DisablePythonDispatcher(), torch._C.DisableTorchFunction():
            out = shape_only(func, args, kwargs)  # norms and activations skip their meta kernels
            out = self.kernels(func, args, kwargs) if out is None else out
            val = map_tensors(torch.Tensor.detach, out)
        if func in _TO:
            x = args[0]
            facts = {"dtype": x.dtype, "device": x.device, "layout": x.layout}
            self._add(torch.ops.aten._assert_tensor_metadata.default, (node_args[0],), facts)
        node = self._add(func, node_args, node_kwargs, func.overloadpacket.__name__)
        # meta["val"] holds a detached alias: a strong reference to ``out`` itself would make
        # factory functions hand the caller a fresh tensor (autograd's make_variable copies
        # a tensor that is referenced elsewhere), which no node would then stand for
        node.meta["val"] = val
        if isinstance(out, torch.Tensor):
            self.nodes[out] = node
        elif isinstance(out, (tuple, list)):
            for i, item in enumerate(out):
                if isinstance(item, torch.Tensor):
                    part = self._add(operator.getitem, (node, i), name="getitem")
                    part.meta["val"] = val[i]
                    self.nodes[item] = part
        return out

    def _node(self, tensor: torch.Tensor) -> fx.Node:
        node = self.nodes.get(tensor)
        if node is None:
            raise NotRecorded(f"a tensor of shape {tuple(tensor.shape)} that no op made")
        return node

    def _add(self, target, args, kwargs=None, name: str | None = None) -> fx.Node:
        node = self.graph.create_node("call_function", target, args, kwargs or {}, name=name)
        node.meta[META_MODULE] = self.stack[-1] if self.stack else ""
        return node


def recorded(model: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> fx.Graph | None:
    """:func:`record_graph` in the modes and cache setting export traces in; None where
    the recorder steps aside or the forward fails on the meta device (export then traces,
    and names what fails)."""
    with preserve_modes(model), without_kv_cache(model), attributes_kept(model):
        try:
            return record_graph(model, args, kwargs)
        except Exception:  # NotRecorded, or a forward that fails: export decides
            return None


def record_graph(model: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> fx.Graph:
    """The graph ``torch.export.export(model, args, kwargs, strict=False)`` would hold, its
    nodes annotated as :func:`slimgraph.graph.trace.build_graph` reads them; raises
    :class:`NotRecorded` where it might differ. The model is not changed: it runs on meta
    copies of its parameters, buffers and inputs (the caller sets modes and caches)."""
    graph, nodes, names = fx.Graph(), WeakTensorKeyDictionary(), _Names()
    stack: list[str] = []  # paths of the modules whose forward is running
    state: dict[str, torch.Tensor] = {}
    copies: dict[int, torch.Tensor] = {}  # one copy of a tensor tied under several names
    for prefix, role, named in (
        ("p", "param", model.named_parameters(remove_duplicate=False)),
        ("b", "buffer", model.named_buffers(remove_duplicate=False)),
    ):
        for name, tensor in named:
            copy = copies.setdefault(id(tensor), _meta_copy(tensor))
            state[name] = copy
            # export gives each name a placeholder, and every use of a tied tensor reads
            # the last one: so does the recorder
            label = names.take(f"{prefix}_{_clean(name).lower()}")
            nodes[copy] = _placeholder(graph, label, copy, (role, name))
    bound = _bind(model, args, kwargs)
    leaves, spec = pytree.tree_flatten_with_path(bound.arguments)
    meta_leaves = []
    for path, value in leaves:
        label = "_".join(_key(k).lower() for k in path)
        if not isinstance(value, torch.Tensor):  # export makes a placeholder of it too
            raise NotRecorded(f"the input {label} is of type {type(value).__name__}")
        copy = _meta_copy(value)
        nodes[copy] = _placeholder(graph, names.take(label), copy, ("input", None))
        meta_leaves.append(copy)
    bound.arguments.update(pytree.tree_unflatten(meta_leaves, spec))
    # as export does: stacked, so that a module reached by two paths gets its own back
    swapped = _reparametrize_module(model, state, tie_weights=True, strict=True, stack_weights=True)
    with swapped, _module_paths(model, stack), _as_export(), _Recorder(graph, nodes, stack):
        out = model(*bound.args, **bound.kwargs)
    results = [nodes.get(t) if isinstance(t, torch.Tensor) else t for t in pytree.tree_leaves(out)]
    if any(r is None for r in results):
        raise NotRecorded("an output that no op made")
    graph.output(tuple(results))
    return graph


def _meta_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("meta").requires_grad_(tensor.requires_grad)


def _placeholder(graph: fx.Graph, name: str, value: torch.Tensor, role) -> fx.Node:
    node = graph.placeholder(name)
    node.name = name  # as export names it, even where fx avoids a builtin's name ("input")
    node.meta.update({"val": value, META_ROLE: role, META_MODULE: ""})
    return node


def _bind(model: torch.nn.Module, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    try:
        return inspect.signature(model.forward).bind(*args, **kwargs)
    except (TypeError, ValueError) as err:
        raise NotRecorded(f"cannot bind the inputs to forward's signature: {err}") from err


class _Names:
    """Export's placeholder names: taken in order, a repeat gets the next free suffix."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, name: str) -> str:
        new, n = name, 0
        while new in self.used:
            n += 1
            new = f"{name}_{n}"
        self.used.add(new)
        return new


def _clean(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]", "_", text)


def _key(key) -> str:
    if isinstance(key, pytree.MappingKey):
        return _clean(str(key.key))
    if isinstance(key, pytree.SequenceKey):
        return str(key.idx)
    if isinstance(key, pytree.GetAttrKey):
        return key.name
    raise NotRecorded(f"an input nested under a {type(key).__name__}")


@contextlib.contextmanager
def _module_paths(model: torch.nn.Module, stack: list[str]) -> Iterator[None]:
    """Keep ``stack[-1]`` the path of the module whose forward is running."""
    paths = {id(m): name for name, m in model.named_modules()}

    def enter(module: torch.nn.Module, _) -> None:
        stack.append(paths.get(id(module), stack[-1] if stack else ""))

    def leave(*_) -> None:  # a forward hook that returns something replaces the output
        stack.pop()

    hooks = torch.nn.modules.module
    entering = hooks.register_module_forward_pre_hook(enter)
    leaving = hooks.register_module_forward_hook(leave, always_call=True)
    try:
        yield
    finally:
        entering.remove()
        leaving.remove()


@contextlib.contextmanager
def _as_export() -> Iterator[None]:
    """The flags and modes export traces under: ``is_compiling()`` and ``is_exporting()``
    true (libraries branch on them), the Python dispatcher (pre-dispatch modes need it),
    and a watch on mode changes."""
    compiler = torch.compiler
    before = compiler._is_compiling_flag, compiler._is_exporting_flag
    compiler._is_compiling_flag = compiler._is_exporting_flag = True
    try:
        with enable_python_dispatcher(), _ModeWatch():
            yield
    finally:
        compiler._is_compiling_flag, compiler._is_exporting_flag = before
