"""Apply a validated plan: slice parameters and buffers, update attributes, verify.

Order of work, so that a plan that cannot apply leaves the model as it was:

1. check the plan against the graph (same model, known groups, sizes, links);
2. without ``example_inputs`` (or on meta weights), the meta dry run: a weightless copy
   is sliced, its attributes updated from ``rules/modules.toml``, and run forward on the
   plan's input shapes;
3. the real model (a copy unless ``inplace=True``) gets the sliced tensors;
4. with ``example_inputs``, a real forward pass checks the output shapes, and on exact
   plans the values (:mod:`slimgraph.rewrite.verify`). It is the dry run, on the real
   weights: a failure discards the copy, or puts the old tensors and attributes back.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from slimgraph._core.halfmeta import in_bfloat16, refuses_float32
from slimgraph._core.inputs import (
    output_shapes,
    preserve_modes,
    split_inputs,
    synthesize,
    without_kv_cache,
)
from slimgraph._core.metakernels import ShapeKernels
from slimgraph._core.modulecopy import module_copy
from slimgraph.errors import PlanError, RewriteError, SlimGraphError
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.graph.trace import trace
from slimgraph.resolve.cost import reads_values
from slimgraph.resolve.indices import check_plan, kept_shapes
from slimgraph.resolve.plan import PruningPlan
from slimgraph.resolve.slicing import (
    Slices,
    assign,
    meta_copy,
    slice_tensor,
    sliced_copy,
    sliced_tensors,
    update_attributes,
)
from slimgraph.rewrite.compensation import bias_shifts
from slimgraph.rewrite.depth import remove_blocks
from slimgraph.rewrite.hf_config import remember_source, update_configs
from slimgraph.rewrite.verify import Reference, check_values, reference_outputs

__all__ = ["apply", "dry_run", "without_blocks"]


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
    again on the meta device from the plan's recorded input shapes. A plan that drops
    whole ``blocks`` (``sg.slim(..., drop_blocks=n)``) takes them out first; its cuts, and
    the graph it was made on, are of the model without them.

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1))
    >>> graph = sg.trace(net, (torch.randn(1, 3, 8, 8),))
    >>> slim = sg.apply(net, sg.plan(graph, ratio=0.5), graph=graph)
    >>> slim[0].out_channels, slim[1].num_features, slim[2].in_channels, net[0].out_channels
    (4, 4, 4, 8)
    """
    if not isinstance(plan, PruningPlan):
        raise PlanError(f"apply() takes a PruningPlan, not {type(plan).__name__}")
    if plan.blocks:
        return _apply_after_blocks(model, plan, graph, inplace, example_inputs)
    if graph is None:
        graph = _retrace(model, plan)
    if example_inputs is not None and not any(p.is_meta for p in model.parameters()):
        # the forward check below runs the slim model on real weights: it is the dry run
        check_plan(graph, plan, model)
        slices = kept_shapes(graph, plan)
    else:
        slices = dry_run(model, plan, graph)
    # every new tensor is computed before any is swapped in: the folds read the weights
    # before slicing, and a refusal here leaves the model as it was
    replacements = _new_tensors(model, slices, bias_shifts(model, plan.compensation, slices))
    expected = graph.output_shapes
    reference = reference_outputs(model, plan, graph, slices, example_inputs)  # before slicing
    if not inplace:
        slim = module_copy(model, dict(replacements))
        _finish(slim, model, slices, plan, example_inputs, expected, graph.modes, reference)
        return slim
    with _restored_on_failure(model):
        old = meta_copy(model)
        assign(model, replacements)
        _finish(model, old, slices, plan, example_inputs, expected, graph.modes, reference)
    return model


def without_blocks(model: nn.Module, plan: PruningPlan) -> PruningPlan:
    """Take ``plan.blocks`` out of ``model`` (in place) and return the rest of the plan,
    whose cuts are of the model without them. A Hugging Face config follows, and first
    records itself as the config :func:`slimgraph.load` rebuilds the model from."""
    remember_source(model)
    remove_blocks(model, plan.blocks)
    return plan.model_copy(update={"blocks": ()})


def _apply_after_blocks(
    model: nn.Module,
    plan: PruningPlan,
    graph: DependencyGraph | None,
    inplace: bool,
    example_inputs: Any,
) -> nn.Module:
    """The plan's blocks out of a copy (or of ``model`` itself, restored if anything
    fails), then its cuts; ``graph`` serves if it is of the model without the blocks."""
    target = model if inplace else copy.deepcopy(model)
    with _restored_on_failure(target) if inplace else contextlib.nullcontext():
        cuts = without_blocks(target, plan)
        if graph is not None and graph.fingerprint == cuts.fingerprint:
            graph = graph.for_model(target)
        else:  # none, or the original model's
            graph = _retrace(target, cuts)
        return apply(target, cuts, graph=graph, inplace=True, example_inputs=example_inputs)


def _new_tensors(
    model: nn.Module, slices: Slices, shifts: dict[str, torch.Tensor]
) -> dict[int, torch.Tensor]:
    """id(tensor) -> its replacement: sliced, then with the folds' shifts added (on new
    tensors, never on the caller's)."""
    replacements = sliced_tensors(model, slices, meta=False)
    named = dict(model.named_parameters(remove_duplicate=False)) | dict(
        model.named_buffers(remove_duplicate=False)
    )
    with torch.no_grad():
        for name, shift in shifts.items():
            t = named[name]
            base = replacements.get(id(t), t)
            moved = slice_tensor(shift, slices.get(name, []), meta=False)
            new = base.detach() + moved.to(device=base.device, dtype=base.dtype)
            if isinstance(t, nn.Parameter):
                new = nn.Parameter(new, requires_grad=t.requires_grad)
            replacements[id(t)] = new
    return replacements


def _finish(
    slim: nn.Module,
    old: nn.Module,
    slices: Slices,
    plan: PruningPlan,
    example_inputs: Any,
    expected: list[tuple[int, ...]],
    modes: dict[str, bool],
    reference: Reference | None,
) -> None:
    """Attributes, configs, and the shape and value checks of a model holding the new
    tensors."""
    update_attributes(slim, old, slices, plan.head_dims)
    update = update_configs(slim, old) if slices else None
    if update is not None and not update.exact:
        warnings.warn(
            f"model.config ({update.model_type}) cannot describe the slim shapes"
            + (f" (per-layer {', '.join(update.differing)} differ)" if update.differing else "")
            + "; save with sg.save(model, directory, plan) and reload with sg.load(directory)",
            stacklevel=3,
        )
    if example_inputs is not None:
        out = _check_forward(slim, example_inputs, expected, "forward check", modes)
        check_values(slim, reference, out)


@contextlib.contextmanager
def _restored_on_failure(model: nn.Module) -> Iterator[None]:
    """Undo an in-place rewrite that fails part way: every module's attributes and
    tensor tables, and the model configs, go back to what they were. The old tensors
    themselves are never written to (new ones replace them), so this is cheap."""
    tables = ("_parameters", "_buffers", "_modules")
    saved = []
    configs: dict[int, tuple[Any, dict[str, Any]]] = {}
    for module in model.modules():
        state = dict(module.__dict__)
        for key in tables:
            state[key] = type(state[key])(state[key])
        saved.append((module, state))
        config = state.get("config")
        if config is not None and hasattr(config, "to_dict"):
            configs.setdefault(id(config), (config, copy.deepcopy(dict(config.__dict__))))
    try:
        yield
    except BaseException:
        for module, state in saved:
            module.__dict__.clear()
            module.__dict__.update(state)
        for config, fields in configs.values():
            config.__dict__.clear()
            config.__dict__.update(fields)
        raise


# The last dry run that passed, per graph: ``plan_that_applies`` dry-runs the plan it
# returns, and ``apply`` would otherwise run the same plan on the same model once more.
# An entry holds the plan (matched by identity: plans are frozen) and the model weakly,
# and the model's structure, so that a model changed in between runs again. Nothing in
# it may hold the graph strongly (a plan does): the entry would keep its own key alive.
_PASSED: weakref.WeakKeyDictionary[
    DependencyGraph, tuple[weakref.ref[PruningPlan], weakref.ref[nn.Module], tuple, Slices]
] = weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> tuple:
    """What a dry run's outcome depends on that can change in place: the modules'
    classes, and the shapes, dtypes and devices of their tensors."""
    modules = tuple((name, type(m)) for name, m in model.named_modules())
    tensors = tuple(
        (name, tuple(t.shape), t.dtype, t.device.type)
        for named in (model.named_parameters(), model.named_buffers())
        for name, t in named
    )
    return modules, tensors


def dry_run(model: nn.Module, plan: PruningPlan, graph: DependencyGraph) -> Slices:
    """Check ``plan`` and run it on a weightless copy; return the slices it makes.

    Raises :class:`PlanError` or :class:`RewriteError`; ``model`` is never touched. The
    same plan dry-run again on the same, unchanged model and graph returns the slices of
    the run that passed without running again.
    """
    structure = _structure(model)
    passed = _PASSED.get(graph)
    if passed is not None:
        plan_, model_, structure_, slices = passed
        if plan_() is plan and model_() is model and structure_ == structure:
            return {name: list(kept) for name, kept in slices.items()}
    slices, on_meta = _dry_run(model, plan, graph)
    if on_meta:  # a run on the real weights may depend on their values: not remembered
        _PASSED[graph] = (weakref.ref(plan), weakref.ref(model), structure, slices)
    return {name: list(kept) for name, kept in slices.items()}


def _dry_run(model: nn.Module, plan: PruningPlan, graph: DependencyGraph) -> tuple[Slices, bool]:
    """The slices, and whether the run was on the meta device (weightless)."""
    check_plan(graph, plan, model)
    slices = kept_shapes(graph, plan)
    dry = sliced_copy(model, slices, meta=True)
    update_attributes(dry, model, slices, plan.head_dims)
    update_configs(dry, verify=False)  # code may read widths from the config
    # the graph's own input shapes first: they made the output shapes checked below (a
    # plan made at batch 1 applies to the model traced at batch 8)
    specs = graph.inputs or plan.inputs
    try:
        try:
            with ShapeKernels():  # norms and activations check widths without their meta kernels
                inputs = synthesize(specs, "meta")
                _check_forward(dry, inputs, graph.output_shapes, "meta dry run", graph.modes)
        except RewriteError as err:
            if not refuses_float32(err):
                raise
            # a kernel checks its dtype even on meta tensors (grouped GEMM of MoE experts)
            half, inputs = in_bfloat16(dry, synthesize(specs, "meta"))
            _check_forward(half, inputs, graph.output_shapes, "meta dry run", graph.modes)
    except RewriteError as err:
        # Code that branches on values (an attention mask's ``.all()``) cannot run on the
        # meta device: dry-run on a real sliced copy instead, when the weights are real.
        if not reads_values(err):
            raise
        if any(p.is_meta for p in model.parameters()):
            # weightless (a checkpoint planned on the meta device): code that reads values
            # for a fast path (transformers' packed-sequence check) skips it on fake
            # tensors, as it does under torch.export
            with FakeTensorMode(allow_non_fake_inputs=True):
                inputs = synthesize(specs, "meta")
                _check_forward(dry, inputs, graph.output_shapes, "meta dry run", graph.modes)
            return slices, True
        real = sliced_copy(model, slices, meta=False)
        update_attributes(real, model, slices, plan.head_dims)
        update_configs(real, verify=False)
        _check_forward(real, synthesize(specs), graph.output_shapes, "dry run", graph.modes)
        return slices, False
    return slices, True


def _retrace(model: nn.Module, plan: PruningPlan) -> DependencyGraph:
    """Trace a weightless copy in the mode the plan was made in, on its input shapes, and
    bind the graph to ``model`` (the copy has its structure)."""
    copy_ = meta_copy(model).train(plan.training)
    graph = trace(
        copy_,
        synthesize(plan.inputs, "meta"),
        head_dims=plan.head_dims,
        query_heads=plan.query_heads,
    )
    return graph.for_model(model)


def _check_forward(
    model: nn.Module,
    inputs: Any,
    expected: list[tuple[int, ...]],
    what: str,
    modes: dict[str, bool],
) -> Any:
    """Run ``model`` in the train/eval modes it was traced in, compare output shapes, and
    return the outputs. The key/value cache is off, as it was for the trace (RWKV returns
    its state as extra outputs when it is on)."""
    with preserve_modes(model), without_kv_cache(model):
        for name, module in model.named_modules():
            module.training = modes.get(name, module.training)
        return _forward_shapes(model, inputs, expected, what)


def _forward_shapes(
    model: nn.Module, inputs: Any, expected: list[tuple[int, ...]], what: str
) -> Any:
    args, kwargs = split_inputs(inputs)
    # A check in train mode must not move BatchNorm running statistics (eval moves none).
    trained = any(m.training for m in model.modules())
    saved = {n: b.clone() for n, b in model.named_buffers() if trained and not b.is_meta}
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
            "not update; add its class there, or ignore the module with PruneConfig(ignore=[...])."
        ) from err
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in saved:
                    b.copy_(saved[name])
    got = output_shapes(out)
    if got != expected:
        raise RewriteError(f"{what}: output shapes changed from {expected} to {got}")
    return out
