"""Apply a validated plan: slice parameters and buffers, update attributes, verify.

Order of work, so that a plan that cannot apply never touches real weights:

1. check the plan against the graph (same model, known groups, sizes, links);
2. meta dry run: a weightless copy is sliced, its attributes updated from
   ``rules/modules.toml``, and run forward on the plan's input shapes;
3. the real model (a copy unless ``inplace=True``) gets the sliced tensors;
4. with ``example_inputs``, a real forward pass checks the output shapes.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from slimgraph._expr import Absent, evaluate
from slimgraph.activation import bias_shifts
from slimgraph.depgraph import DependencyGraph
from slimgraph.errors import PlanError, RewriteError, RuleTableError, SlimGraphError
from slimgraph.hf import update_configs
from slimgraph.plan import PruningPlan
from slimgraph.resolve import check_plan, kept_shapes
from slimgraph.ruletable import load_rules
from slimgraph.trace import preserve_modes, split_inputs, trace

__all__ = ["apply", "dry_run", "failing_groups", "meta_copy", "output_shapes"]

Slices = dict[str, list[tuple[int, np.ndarray]]]


def apply(
    model: nn.Module,
    plan: PruningPlan,
    *,
    graph: DependencyGraph | None = None,
    inplace: bool = False,
    example_inputs: Any = None,
) -> nn.Module:
    """Return a smaller dense ``model`` of the same class with the plan's units dropped.

    ``graph`` is the traced graph the plan was made on; without it the model is traced
    again on the meta device from the plan's recorded input shapes.

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1))
    >>> graph = sg.trace(net, (torch.randn(1, 3, 8, 8),))
    >>> slim = sg.apply(net, sg.plan(graph, ratio=0.5), graph=graph)
    >>> slim[0].out_channels, slim[1].num_features, slim[2].in_channels, net[0].out_channels
    (4, 4, 4, 8)
    """
    if not isinstance(plan, PruningPlan):
        raise PlanError(f"apply() takes a PruningPlan, not {type(plan).__name__}")
    if graph is None:
        graph = _retrace(model, plan)
    slices = dry_run(model, plan, graph)
    shifts = bias_shifts(model, plan.compensation, slices)  # from the weights before slicing
    expected = graph.output_shapes
    if inplace:
        old = meta_copy(model)
        _assign(model, _sliced_tensors(model, slices, meta=False))
        slim = model
    else:
        old = model
        slim = _sliced_copy(model, slices, meta=False)
    with torch.no_grad():
        tensors = dict(slim.named_parameters()) | dict(slim.named_buffers())
        for name, shift in shifts.items():
            t = tensors[name]
            t.add_(_slice(shift, slices.get(name, []), meta=False).to(t.dtype))
    _update_attributes(slim, old, slices, plan.head_dims)
    update = update_configs(slim, old) if slices else None
    if update is not None and not update.exact:
        warnings.warn(
            f"model.config ({update.model_type}) cannot describe the slim shapes"
            + (f" (per-layer {', '.join(update.differing)} differ)" if update.differing else "")
            + "; save with sg.save(model, directory, plan) and reload with sg.load(directory)",
            stacklevel=2,
        )
    if example_inputs is not None:
        _check_forward(slim, example_inputs, expected, "forward check", graph.modes)
    return slim


def dry_run(model: nn.Module, plan: PruningPlan, graph: DependencyGraph) -> Slices:
    """Check ``plan`` and run it on a weightless copy; return the slices it makes.

    Raises :class:`PlanError` or :class:`RewriteError`; ``model`` is never touched.
    """
    check_plan(graph, plan)
    slices = kept_shapes(graph, plan)
    dry = _sliced_copy(model, slices, meta=True)
    _update_attributes(dry, model, slices, plan.head_dims)
    update_configs(dry, verify=False)  # code may read widths from the config
    specs = plan.inputs or graph.inputs
    try:
        _check_forward(dry, _meta_inputs(specs), graph.output_shapes, "meta dry run", graph.modes)
    except RewriteError as err:
        # Code that branches on values (an attention mask's ``.all()``) cannot run on the
        # meta device: dry-run on a real sliced copy instead, when the weights are real.
        if not _reads_values(err) or any(p.is_meta for p in model.parameters()):
            raise
        real = _sliced_copy(model, slices, meta=False)
        _update_attributes(real, model, slices, plan.head_dims)
        update_configs(real, verify=False)
        _check_forward(real, _real_inputs(specs), graph.output_shapes, "dry run", graph.modes)
    return slices


def _reads_values(err: BaseException) -> bool:
    """Whether a meta forward failed because the model reads tensor values."""
    cause = str(err.__cause__ or "")
    return any(mark in cause for mark in ("on meta tensors", "data-dependent", "meta tensor.item"))


def _real_inputs(specs) -> Any:
    """CPU inputs of the recorded shapes: random floats, zero integers (token ids, masks)."""

    def make(s) -> torch.Tensor:
        dtype = getattr(torch, s.dtype)
        if dtype.is_floating_point:
            return torch.randn(s.shape, dtype=dtype)
        return torch.zeros(s.shape, dtype=dtype)

    kwargs = {s.name: make(s) for s in specs if s.name}
    return kwargs or tuple(make(s) for s in specs if not s.name)


def failing_groups(model: nn.Module, plan: PruningPlan, graph: DependencyGraph) -> dict[str, str]:
    """Groups whose cuts fail a dry run on their own (with the groups linked to them).

    Code that hard-codes a width (``x.split(4, 1)``, ``view(b, 3, c // 3, ...)`` with a
    literal group count) is invisible in the traced graph; this finds the groups that
    trip over it, so that they can be left alone.
    """
    linked = {gid: frozenset(c) for c in graph.linked_groups() for gid in c}
    failing: dict[str, str] = {}
    tried: set[frozenset[str]] = set()
    for cut in plan.cuts:
        members = linked.get(cut.group, frozenset([cut.group]))
        if not cut.drop or members in tried:
            continue
        tried.add(members)
        alone = plan.model_copy(update={"cuts": tuple(c for c in plan.cuts if c.group in members)})
        try:
            dry_run(model, alone, graph)
        except (PlanError, RewriteError) as err:
            reason = str(err).splitlines()[0]
            failing.update(dict.fromkeys(members, reason))
    return failing


def _retrace(model: nn.Module, plan: PruningPlan) -> DependencyGraph:
    """Trace a weightless copy in the mode the plan was made in, on its input shapes."""
    copy_ = meta_copy(model).train(plan.training)
    graph = trace(
        copy_, _meta_inputs(plan.inputs), head_dims=plan.head_dims, query_heads=plan.query_heads
    )
    graph.model = model
    return graph


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device."""
    return _sliced_copy(model, {}, meta=True)


def _slice(t: torch.Tensor, kept: list[tuple[int, np.ndarray]], meta: bool) -> torch.Tensor:
    if meta:
        shape = list(t.shape)
        for dim, idx in kept:
            shape[dim] = len(idx)
        return torch.empty(shape, dtype=t.dtype, device="meta")
    out = t.detach()
    for dim, idx in kept:
        out = out.index_select(dim, torch.as_tensor(idx, device=out.device))
    return out.clone()


def _sliced_tensors(model: nn.Module, slices: Slices, meta: bool) -> dict[int, torch.Tensor]:
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
        new = _slice(t, kept.get(key, []), meta)
        if isinstance(t, nn.Parameter):
            new = nn.Parameter(new, requires_grad=t.requires_grad)
        memo[key] = new
    return memo


def _sliced_copy(model: nn.Module, slices: Slices, meta: bool) -> nn.Module:
    memo: dict[int, Any] = dict(_sliced_tensors(model, slices, meta))
    return copy.deepcopy(model, memo)


def _assign(model: nn.Module, replacements: dict[int, torch.Tensor]) -> None:
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for name, t in list(store.items()):
                if t is not None and id(t) in replacements:
                    store[name] = replacements[id(t)]


def _update_attributes(
    slim: nn.Module, old: nn.Module, slices: Slices, head_dims: bool = False
) -> None:
    """Evaluate ``rules/modules.toml`` on every module whose tensors were sliced."""
    old_modules = dict(old.named_modules())
    touched = {name.rpartition(".")[0] for name in slices}
    # children first: a parent's identity may read its children's new attributes
    for name, module in reversed(list(slim.named_modules())):
        prefix = f"{name}." if name else ""
        if not any(t == name or t.startswith(prefix) or not name for t in touched):
            continue
        rule = load_rules().module_rule(module)
        if rule is None:
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


def _meta_inputs(specs) -> Any:
    args = tuple(
        torch.zeros(s.shape, dtype=getattr(torch, s.dtype), device="meta")
        for s in specs
        if s.name is None
    )
    kwargs = {
        s.name: torch.zeros(s.shape, dtype=getattr(torch, s.dtype), device="meta")
        for s in specs
        if s.name
    }
    return kwargs or args


def output_shapes(out: Any) -> list[tuple[int, ...]]:
    """Shapes of every tensor in a (possibly nested) model output, in order."""
    if isinstance(out, torch.Tensor):
        return [tuple(out.shape)]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [s for item in out for s in output_shapes(item)]
    if hasattr(out, "to_tuple"):
        return output_shapes(out.to_tuple())
    return []


def _check_forward(
    model: nn.Module,
    inputs: Any,
    expected: list[tuple[int, ...]],
    what: str,
    modes: dict[str, bool],
) -> None:
    """Run ``model`` in the train/eval modes it was traced in and compare output shapes."""
    with preserve_modes(model):
        for name, module in model.named_modules():
            module.training = modes.get(name, module.training)
        _forward_shapes(model, inputs, expected, what)


def _forward_shapes(
    model: nn.Module, inputs: Any, expected: list[tuple[int, ...]], what: str
) -> None:
    args, kwargs = split_inputs(inputs)
    # A check in train mode must not move BatchNorm running statistics.
    saved = {name: b.clone() for name, b in model.named_buffers() if not b.is_meta}
    try:
        with torch.no_grad():
            out = model(*args, **kwargs)
    except SlimGraphError:
        raise
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise RewriteError(
            f"{what} of the slimmed model failed: {type(err).__name__}: {first}\n"
            "A module probably reads a width from an attribute that rules/modules.toml does "
            "not update; add its class there, or freeze the dim with PruneConfig(ignore=[...])."
        ) from err
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in saved:
                    b.copy_(saved[name])
    got = output_shapes(out)
    if got != expected:
        raise RewriteError(f"{what}: output shapes changed from {expected} to {got}")
