"""One cost counter: parameters and multiply-accumulates (MACs), per module and in all,
measured by ``FlopCounterMode`` on meta-device copies (no real compute).

>>> import torch
>>> count_macs(torch.nn.Linear(4, 3), (torch.randn(2, 4),))
24
>>> sorted(module_macs(torch.nn.Sequential(torch.nn.Linear(4, 3)), (torch.randn(2, 4),)).items())
[('', 24), ('0', 24)]
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from slimgraph._core.halfmeta import in_bfloat16, refuses_float32
from slimgraph._core.inputs import dtype_name, preserve_modes, split_inputs, synthesize
from slimgraph.resolve.indices import kept_shapes
from slimgraph.resolve.slicing import Slices, meta_copy, sliced_copy, update_attributes

if TYPE_CHECKING:
    from slimgraph.graph.depgraph import DependencyGraph
    from slimgraph.resolve.plan import PruningPlan

__all__ = [
    "count_macs",
    "count_params",
    "layer_dtypes",
    "layer_shapes",
    "layer_weights",
    "module_macs",
    "plan_macs",
    "plan_module_macs",
    "reads_values",
    "slim_meta_copy",
    "weight_shapes",
]


def count_params(model: torch.nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, example_inputs: Any) -> int:
    """Multiply-accumulates of one forward pass, measured by ``FlopCounterMode`` / 2.

    The model is copied to the meta device first, so this costs no real compute; code
    that reads values (an attention mask's ``.all()``) cannot run on meta tensors, and is
    counted once on the real model instead, in eval mode.
    """
    args, kwargs = split_inputs(example_inputs)
    to_meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t  # noqa: E731
    meta_inputs = {k: to_meta(v) for k, v in kwargs.items()} or tuple(map(to_meta, args))
    try:
        return module_macs(meta_copy(model), meta_inputs)[""]
    except RuntimeError as err:
        if not reads_values(err) or any(p.is_meta for p in model.parameters()):
            raise
    return module_macs(model, example_inputs)[""]


def module_macs(model: torch.nn.Module, inputs: Any) -> dict[str, int]:
    """Module name -> multiply-accumulates of one eval-mode forward pass (``""``: the
    whole model)."""
    counter = _counter()
    try:
        _count(model, inputs, counter)
    except RuntimeError as err:
        if not refuses_float32(err) or not all(p.is_meta for p in model.parameters()):
            raise
        # a kernel checks its dtype even on meta tensors (grouped GEMM of MoE experts)
        counter = _counter()
        _count(*in_bfloat16(copy.deepcopy(model), inputs), counter)
    root = type(model).__name__
    found = {}
    for key, ops in counter.get_flop_counts().items():
        if key == root:
            found[""] = sum(ops.values()) // 2
        elif key.startswith(root + "."):
            found[key.removeprefix(root + ".")] = sum(ops.values()) // 2
    return found


def _grouped_mm_flops(a_shape: Any, b_shape: Any, *args: Any, **kwargs: Any) -> int:
    """Each row of ``a`` (rows, in) meets one expert's (in, out) matrix: torch counts none."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[-1]


def _counter() -> FlopCounterMode:
    return FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten._grouped_mm: _grouped_mm_flops}
    )


def _count(model: torch.nn.Module, inputs: Any, counter: FlopCounterMode) -> None:
    args, kwargs = split_inputs(inputs)
    with preserve_modes(model), _frozen(model), torch.no_grad(), counter:
        model.eval()(*args, **kwargs)


@contextlib.contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """Parameters not requiring grad for the duration: under ``no_grad`` a view of a
    parameter still requires grad but has no grad_fn, and ``FlopCounterMode``'s module
    tracker fails on a submodule given one (a kernel layer given ``conv.weight.squeeze(1)``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def plan_macs(graph: DependencyGraph, plan: PruningPlan) -> int:
    """Multiply-accumulates of the model ``plan`` would make, on a sliced meta copy."""
    return plan_module_macs(graph, plan, before=False)[1][""]


def plan_module_macs(
    graph: DependencyGraph, plan: PruningPlan, before: bool = True
) -> tuple[dict[str, int], dict[str, int]]:
    """Module name -> MACs, before (empty unless ``before``) and after ``plan``, measured
    on meta copies; on the real model and a real sliced copy when its code reads tensor
    values, which meta tensors cannot give (DeBERTa checks its input ids for padding)."""
    slices = kept_shapes(graph, plan)
    specs = plan.inputs or graph.inputs
    model = graph.model
    try:
        inputs = synthesize(specs, "meta")
        after = module_macs(_slim_copy(model, slices, plan.head_dims, meta=True), inputs)
        return (module_macs(meta_copy(model), inputs) if before else {}), after
    except RuntimeError as err:
        if not reads_values(err) or any(p.is_meta for p in model.parameters()):
            raise
    inputs = synthesize(specs)
    after = module_macs(_slim_copy(model, slices, plan.head_dims, meta=False), inputs)
    return (module_macs(model, inputs) if before else {}), after


def reads_values(err: BaseException) -> bool:
    """Whether a forward pass failed because the model reads tensor values, which meta
    tensors do not have."""
    text = f"{err} {err.__cause__ or ''}"
    return any(
        mark in text
        for mark in ("meta tensors", "data-dependent", "meta tensor.item", "copy out of meta")
    )


def layer_shapes(graph: DependencyGraph, plan: PruningPlan) -> dict[str, tuple[int, ...]]:
    """Module name -> the weight shape ``plan`` leaves it: its ``weight``, or the packed
    query/key/value ``in_proj_weight`` of an attention module such as
    :class:`torch.nn.MultiheadAttention`."""
    return weight_shapes(slim_meta_copy(graph, plan))


def weight_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Module name -> the shape of its ``weight`` (or packed ``in_proj_weight``): the
    shapes a latency model's tables are keyed by."""
    return {name: tuple(w.shape) for name, w in layer_weights(model).items()}


def layer_dtypes(model: torch.nn.Module, names: Iterable[str]) -> tuple[str, ...]:
    """The dtypes of the weights of layers ``names`` (see :func:`layer_weights`), sorted:
    a latency model's tables time kernels of these.

    >>> layer_dtypes(torch.nn.Sequential(torch.nn.Linear(2, 2).bfloat16()), ["0"])
    ('bfloat16',)
    """
    weights = layer_weights(model)
    return tuple(sorted({dtype_name(weights[n].dtype) for n in names if n in weights}))


def layer_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Module name -> its ``weight``, or the packed ``in_proj_weight`` of an attention
    module such as :class:`torch.nn.MultiheadAttention`."""
    found = {}
    for name, m in model.named_modules():
        weight = getattr(m, "weight", None)
        if not isinstance(weight, torch.Tensor):
            weight = getattr(m, "in_proj_weight", None)
        if isinstance(weight, torch.Tensor):
            found[name] = weight
    return found


def slim_meta_copy(graph: DependencyGraph, plan: PruningPlan) -> torch.nn.Module:
    """The model ``plan`` would make, weightless: sliced, with its attributes updated."""
    return _slim_copy(graph.model, kept_shapes(graph, plan), plan.head_dims, meta=True)


def _slim_copy(
    model: torch.nn.Module, slices: Slices, head_dims: bool, meta: bool
) -> torch.nn.Module:
    after = sliced_copy(model, slices, meta=meta)
    update_attributes(after, model, slices, head_dims)
    return after
