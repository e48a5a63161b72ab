"""Trace a model (recorded on the meta device, or with ``torch.export`` where the recorder
steps aside) and build its :class:`DependencyGraph`."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind
from torch.fx import config as fx_config
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from slimgraph._core.gcpause import gc_paused
from slimgraph._core.inputs import (
    ExampleInputs,
    input_specs,
    preserve_modes,
    split_inputs,
    without_kv_cache,
)
from slimgraph.errors import TraceError
from slimgraph.graph.builder import META_MODULE, META_ROLE, Builder, OpContext
from slimgraph.graph.depgraph import DependencyGraph, fingerprint
from slimgraph.graph.kinds import KINDS
from slimgraph.graph.record import recorded
from slimgraph.graph.ruletable import RuleTables, load_rules

__all__ = ["build_graph", "export_program", "trace", "without_stack_traces"]

# Ops that change memory layout only, which some code emits on one device and not another
# (HF attention calls .contiguous() off the CPU): not part of the fingerprint.
LAYOUT_ONLY = frozenset({"aten.contiguous.default", "aten.clone.default", "aten.alias.default"})
# Broadcasts that export leaves out where they change nothing (batch 1): not part of the
# fingerprint either, so a plan made at batch 1 fits the model traced at batch 8.
BATCH_ONLY = frozenset({"aten.expand.default"})


@contextlib.contextmanager
def _module_stack(model: torch.nn.Module) -> Iterator[list[str]]:
    """Track which module's forward is running, to name it when tracing fails."""
    stack: list[str] = []

    def enter(label: str) -> None:
        stack.append(label)

    def leave() -> None:  # hooks must return None or they replace the output
        if stack:
            stack.pop()

    handles = []
    for name, module in model.named_modules():
        label = f"{name or '<root>'} ({type(module).__name__})"
        handles.append(module.register_forward_pre_hook(lambda *_, n=label: enter(n)))
        handles.append(module.register_forward_hook(lambda *_: leave()))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def without_stack_traces() -> Iterator[None]:
    """Turn off torch.fx's stack-trace capture while tracing, then restore the setting.

    FX records and symbolises the Python stack for every node it creates (``linecache``
    reading source lines: about a tenth of a resnet50 export); slimgraph never reads
    ``node.stack_trace``, which stays empty.

    >>> import torch.fx.config
    >>> with without_stack_traces():
    ...     torch.fx.config.do_not_emit_stack_traces
    True
    >>> torch.fx.config.do_not_emit_stack_traces
    False
    """
    before = fx_config.do_not_emit_stack_traces
    fx_config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        fx_config.do_not_emit_stack_traces = before


def _refresh_caches(model: torch.nn.Module) -> None:
    """Call each module's ``train()`` with its own mode: modules that cache tensors during
    eval forward passes (timm LeViT's attention biases) drop the caches there, which
    ``torch.export`` would otherwise lift as constants and freeze."""
    for module in model.modules():
        if type(module).train is not torch.nn.Module.train:
            module.train(module.training)


def export_program(model: torch.nn.Module, args: tuple, kwargs: dict) -> ExportedProgram:
    """``torch.export`` of ``model`` (non-strict, in its current modes); a failure raises
    :class:`TraceError` naming the module whose forward was running."""
    with preserve_modes(model):
        _refresh_caches(model)
    with (
        preserve_modes(model),
        without_kv_cache(model),
        without_stack_traces(),
        _module_stack(model) as stack,
    ):
        try:
            return _export(model, args, kwargs)
        except Exception as err:
            where = stack[-1] if stack else f"<root> ({type(model).__name__})"
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise TraceError(
                f"torch.export could not trace module {where}: {type(err).__name__}: {first}\n"
                + _hint(first)
            ) from err


def _export(model: torch.nn.Module, args: tuple, kwargs: dict) -> ExportedProgram:
    """``torch.export.export`` without the partial graph it prints to stderr when tracing
    fails (hundreds of kilobytes for a detector, once per partition tried): the
    :class:`TraceError` says what failed. Anything else written to stderr is passed on."""
    buffer, partial = io.StringIO(), ""
    try:
        with contextlib.redirect_stderr(buffer):
            return torch.export.export(model, args, kwargs, strict=False)
    except Exception as err:
        partial = str(getattr(err, "partial_fx_graph", "") or "")
        raise
    finally:
        text = buffer.getvalue()
        sys.stderr.write(text.replace(partial + "\n", "") if partial else text)


def _hint(message: str) -> str:
    if "more than 1 value per channel" in message:
        return (
            "BatchNorm in train mode needs more than one value per channel: pass a batch "
            "of 2 or more, or call model.eval() before tracing."
        )
    if "data-dependent" in message.lower() or "GuardOnDataDependent" in message:
        return (
            "The module branches on tensor values: give example inputs that take the "
            "branch you want slimmed, or rewrite the branch with torch.cond."
        )
    return (
        "Check that model(*example_inputs) runs eagerly; Python-side effects or "
        "data-dependent control flow in that module need rewriting for torch.export."
    )


def trace(
    model: torch.nn.Module,
    example_inputs: ExampleInputs,
    *,
    rules: RuleTables | None = None,
    head_dims: bool = False,
    query_heads: bool = False,
) -> DependencyGraph:
    """Trace ``model`` on ``example_inputs`` into a :class:`DependencyGraph`.

    Works on the meta device (shapes only). The model is traced in its current mode, so
    training-only branches (auxiliary heads) are slimmed with the rest in train mode;
    the mode of every submodule is restored afterwards.

    Attention projections ``H*D`` viewed as ``(H, D)`` give whole-head units (under
    grouped-query attention, a key/value head with all its query heads); ``head_dims=True``
    gives head-dim units instead (the same offsets in every head; rotary pairs together),
    and ``query_heads=True`` makes grouped-query attention drop query heads evenly inside
    every key/value group (the key/value heads stay).

    >>> import torch, slimgraph as sg
    >>> graph = sg.trace(torch.nn.Linear(4, 3), (torch.randn(2, 4),))
    >>> graph.groups[0].id
    'weight:0'
    """
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"expected a torch.nn.Module, got {type(model).__name__}")
    args, kwargs = split_inputs(example_inputs)
    with preserve_modes(model):
        _refresh_caches(model)
    try:
        with gc_paused():  # fx nodes and graph dicts in cycles, dead on return
            program = recorded(model, args, kwargs) or export_program(model, args, kwargs)
            specs = input_specs(args, kwargs)
            return build_graph(program, model, rules or load_rules(), specs, head_dims, query_heads)
    except GuardOnDataDependentSymNode as err:  # exported, but a shape depends on values
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise TraceError(
            f"torch.export traced {type(model).__name__} with data-dependent shapes "
            f"(GuardOnDataDependentSymNode: {first})\n" + _hint("data-dependent")
        ) from err


def _module_of(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path if isinstance(path, str) else ""


def build_graph(
    program: ExportedProgram | fx.Graph,
    model: torch.nn.Module,
    rules: RuleTables,
    inputs,
    head_dims: bool = False,
    query_heads: bool = False,
    boundary: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> DependencyGraph:
    """Run every op's rule over the exported (or recorded, already annotated) graph.

    ``boundary`` gives the reasons the graph's inputs and outputs freeze, in their order
    (a partitioned trace names the untraced code on the other side); the default reasons
    fill the rest.

    The rules run again while a pass learns something that changes them: splits whose
    equal parts the resulting units cannot shrink equally are relaxed (see
    :func:`slimgraph.graph.kinds.shape.split`), and reshape factors found coupled with an
    attention's head dim stop carrying units (see :mod:`slimgraph.graph.kinds.reshape`).
    """
    relaxed: frozenset[str] = frozenset()
    heads: frozenset[tuple[str, int]] = frozenset()
    indexed: frozenset[tuple[str, int]] = frozenset()
    modes = {name: m.training for name, m in model.named_modules()}  # as traced
    if isinstance(program, ExportedProgram):
        _annotate(program)
    fx_graph = program.graph if isinstance(program, ExportedProgram) else program
    for _ in range(12):
        b, lines, ops, output_shapes = _run_rules(
            fx_graph, model, rules, relaxed, heads, head_dims, indexed, query_heads, boundary
        )
        graph = DependencyGraph(b, model, inputs, fingerprint(lines), ops, output_shapes, modes)
        unbalanced = graph.unbalanced - relaxed
        found = heads | _head_dim_factors(graph, b)
        held = indexed | _indexed_factors(graph, b)
        if not unbalanced and found == heads and held == indexed:
            return graph
        relaxed, heads, indexed = relaxed | unbalanced, found, held
    raise TraceError("splits kept needing relaxation; please report this model")


def _indexed_factors(graph: DependencyGraph, b: Builder) -> frozenset[tuple[str, int]]:
    """Reshape factors taken apart index by index (the ``3`` of a fused ``(3, H, D)`` that
    ``select`` or ``unbind`` splits into q, k, v): they cannot carry units, another should."""
    if not b.indexed_slots:
        return frozenset()
    frozen = np.unique(np.concatenate([graph.slot_labels(s) for s in b.indexed_slots]))
    return frozenset(
        key for slot, key in b.factor_keys.items() if np.isin(graph.slot_labels(slot), frozen).any()
    )


def _head_dim_factors(graph: DependencyGraph, b: Builder) -> frozenset[tuple[str, int]]:
    """Reshape factors coupled with an attention's head dim: the ``D`` of ``H*D -> (H, D)``."""
    if not b.head_dim_slots:
        return frozenset()
    marked = np.unique(np.concatenate([graph.slot_labels(s) for s in b.head_dim_slots]))
    return frozenset(
        key for slot, key in b.factor_keys.items() if np.isin(graph.slot_labels(slot), marked).any()
    )


def _annotate(ep: ExportedProgram) -> None:
    """Record in ``node.meta`` (torch.fx's place for analysis results) what the rules read
    of every node: the module whose forward made it and, for a placeholder, its role and
    the parameter or buffer it stands for. The facts hold for every pass of the rules."""
    roles = {
        InputKind.PARAMETER: "param",
        InputKind.BUFFER: "buffer",
        InputKind.CONSTANT_TENSOR: "constant",
        InputKind.USER_INPUT: "input",
    }
    by_name = {node.name: node for node in ep.graph.nodes}
    for spec in ep.graph_signature.input_specs:
        node = by_name.get(getattr(spec.arg, "name", None))
        if node is not None:
            node.meta[META_ROLE] = (roles.get(spec.kind, "input"), spec.target)
    for node in ep.graph.nodes:
        node.meta[META_MODULE] = _module_of(node)


def _run_rules(
    fx_graph: fx.Graph,
    model: torch.nn.Module,
    rules: RuleTables,
    relaxed: frozenset[str],
    heads: frozenset[tuple[str, int]],
    head_dims: bool,
    indexed: frozenset[tuple[str, int]],
    query_heads: bool,
    boundary: tuple[Sequence[str], Sequence[str]] = ((), ()),
):
    b = Builder(relaxed, heads, head_dims, indexed, query_heads)
    ops: dict[str, str] = {}  # kept by the graph, to name ops once the fx graph is gone
    output_shapes: list[tuple[int, ...]] = []
    lines: list[str] = []
    for node in fx_graph.nodes:
        ops[node.name] = str(node.target)
        if node.op in ("placeholder", "call_function"):
            b.register(node)
            role = node.meta.get(META_ROLE, "")
            # the state's shapes, and only the rank of activations: a plan made at batch 1
            # applies at batch 8 (group sizes are checked one by one anyway)
            state = role and role[0] != "input"
            shapes = [tuple(t.shape) if state else t.ndim for t in b.outputs(node)]
            if str(node.target) not in LAYOUT_ONLY | BATCH_ONLY:
                lines.append(f"{node.op} {node.target} {role} {shapes}")
    inputs_seen = 0
    for node in fx_graph.nodes:
        if node.op == "placeholder":
            role, _ = node.meta.get(META_ROLE, ("input", None))
            if role in ("input", "constant"):
                what = "model input" if role == "input" else "tensor constant"
                why = f"{what}: its shape is fixed by the caller"
                if role == "input":
                    why = _nth(boundary[0], inputs_seen, why)
                    inputs_seen += 1
                b.freeze_all(b.outputs(node), why)
        elif node.op == "call_function":
            _apply_rule(b, node, rules)
        elif node.op == "output":
            flat: list[fx.Node] = []
            fx.node.map_arg(node.args, flat.append)
            outs = [t for n in flat for t in b.outputs(n)]
            output_shapes = [t.shape for t in outs]
            for i, t in enumerate(outs):
                why = "model output: its shape is part of the model's contract"
                b.freeze_all([t], _nth(boundary[1], i, why))
    _apply_module_rules(b, model, rules)
    return b, lines, ops, output_shapes


def _nth(reasons: Sequence[str], i: int, default: str) -> str:
    return reasons[i] if i < len(reasons) else default


def _apply_module_rules(b: Builder, model: torch.nn.Module, rules: RuleTables) -> None:
    """Apply the ``freeze`` and ``link`` entries of ``rules/modules.toml``."""
    slots: dict[tuple[str, int], int] = {}
    for i, s in enumerate(b.slots):
        if s.role in ("param", "buffer"):
            slots.setdefault((s.target, s.dim), i)

    def slot_of(prefix: str, key: str) -> int | None:
        param, _, dim = key.rpartition(":")
        return slots.get((f"{prefix}.{param}" if prefix else param, int(dim)))

    for name, module in model.named_modules():
        rule = rules.module_rule(module)
        if rule is None:
            continue
        label = type(module).__name__
        for key, why in rule.freeze.items():
            slot = slot_of(name, key)
            if slot is not None:
                b.freeze(slot, f"{label}: {why}")
        for key, link in rule.link.items():
            if link.only_with_head_dims and not b.head_dims:
                continue
            a, c = slot_of(name, key), slot_of(name, link.to)
            if a is not None and c is not None:
                b.link(a, c, name or "<root>", f"{label}: {link.why}")


def _apply_rule(b: Builder, node: fx.Node, rules: RuleTables) -> None:
    outs = b.outputs(node)
    rule = rules.op_rule(node.target)
    if rule is None:
        ctx = OpContext(node, {}, False, None, b, outs)
        where = node.meta.get(META_MODULE)
        b.freeze_all(
            ctx.tensor_args() + outs,
            f"no rule for {node.target}" + (f" (in {where})" if where else ""),
        )
        return
    kind = KINDS[rule.kind]
    ctx = OpContext(node, {**kind.roles, **rule.args}, rule.exact, rule.why, b, outs)
    if not outs and rule.kind not in ("ignore",):
        return
    first_edge, first_link = len(b.edges), len(b.links)
    try:
        kind.rule(ctx)
    except Exception as err:  # a rule that cannot read this call freezes it, loudly
        b.freeze_all(ctx.tensor_args() + outs, f"rule {rule.kind} failed on {node.target}: {err}")
        return
    # An output dim the rule tied to nothing is computed from constants (a conv's spatial
    # size, a pool's bins): it cannot follow any channel, so it freezes.
    touched = {s for e in b.edges[first_edge:] + b.links[first_link:] for s in (e.a, e.b)}
    for t in outs:
        for slot in t.slots:
            if slot not in touched:
                b.freeze(slot, f"its size is computed by {node.target}, not carried from an input")
