"""Resolve a plan against its graph: which indices of which tensors it keeps.

Shared by the planner (parameter counts) and the rewriter (slices, checks).
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from slimgraph.errors import PlanError
from slimgraph.resolve.slicing import Slices, width_key

if TYPE_CHECKING:
    from slimgraph.graph.depgraph import DependencyGraph
    from slimgraph.resolve.plan import PruningPlan

__all__ = ["check_plan", "check_traced_shapes", "kept_shapes", "param_counts"]


def _dropped(graph: DependencyGraph, plan: PruningPlan) -> np.ndarray:
    """A mask over element labels: True for labels of dropped units."""
    is_dropped = np.zeros(graph.num_elements, dtype=bool)
    for c in plan.cuts:
        if c.drop:
            is_dropped[graph.group(c.group).units[list(c.drop)]] = True
    return is_dropped


def check_plan(graph: DependencyGraph, plan: PruningPlan, model: nn.Module | None = None) -> None:
    """Raise :class:`PlanError` unless ``plan`` fits ``graph``: same model, known groups,
    no parameter dim emptied, linked dims keeping the same fraction, and ``model`` (the
    graph's own by default) still of the shapes it was traced with."""
    plan.check(graph)
    check_traced_shapes(graph, model)
    is_dropped = _dropped(graph, plan)
    for target, slots in graph.param_slots().items():
        for slot in slots:
            if is_dropped[graph.slot_labels(slot)].all():
                raise PlanError(
                    f"the plan drops every index of {target} dim {graph.slots[slot].dim}"
                )
    for link in graph.links:
        kept = []
        for slot in (link.a, link.b):
            size = graph.slots[slot].size
            kept.append((size - int(is_dropped[graph.slot_labels(slot)].sum()), size))
        (ka, na), (kb, nb) = kept
        if ka * nb != kb * na:
            raise PlanError(
                f"{graph.describe_slot(link.a)} keeps {ka}/{na} but {graph.describe_slot(link.b)} "
                f"keeps {kb}/{nb}; they must keep the same fraction ({link.why})"
            )


def check_traced_shapes(graph: DependencyGraph, model: nn.Module | None = None) -> None:
    """Raise :class:`PlanError` where ``model`` (the graph's own by default) has a
    parameter or buffer of another shape than the traced model had: a model cut in
    place after tracing no longer fits the graph, and a plan resolved on it would
    slice the wrong widths or report them.

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    >>> graph = sg.trace(net, (torch.randn(1, 4),))
    >>> _ = sg.apply(net, sg.plan(graph, ratio=0.5), graph=graph, inplace=True)
    >>> check_traced_shapes(graph)
    Traceback (most recent call last):
    ...
    slimgraph.errors.PlanError: the model changed after it was traced (0.weight dim 0 has 2, 4 when traced), as an in-place apply changes it: trace it again with sg.trace
    """
    model = graph.model if model is None else model
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors |= dict(model.named_buffers(remove_duplicate=False))
    for target, slots in graph.param_slots().items():
        tensor = tensors.get(target)
        for slot in (graph.slots[s] for s in slots):
            if tensor is None or slot.dim >= tensor.ndim:  # named otherwise here: not a shape
                break
            if tensor.shape[slot.dim] != slot.size:
                raise PlanError(
                    f"the model changed after it was traced ({target} dim {slot.dim} has "
                    f"{tensor.shape[slot.dim]}, {slot.size} when traced), as an in-place apply "
                    "changes it: trace it again with sg.trace"
                )


# graph -> (cuts, slices) of the last plan resolved on it: the planner counts the plan's
# parameters and the rewrite slices it, the same cuts on the same (immutable) graph
_KEPT: weakref.WeakKeyDictionary[DependencyGraph, tuple[tuple, Slices]] = (
    weakref.WeakKeyDictionary()
)


def kept_shapes(
    graph: DependencyGraph, plan: PruningPlan
) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Parameter/buffer name -> [(dim, kept indices)] for every dim the plan shrinks; and
    for a constant the code reads from a module attribute (an affine-less norm's
    ``normalized_shape``, split sizes), ``"module#values"`` -> [(element, kept indices)]
    (see :func:`slimgraph.resolve.slicing.width_key`). A new dict each call; the last
    plan's is remembered per graph."""
    if not any(c.drop for c in plan.cuts):
        return {}
    seen = _KEPT.get(graph)
    if seen is None or seen[0] != plan.cuts:  # a copied plan shares its cuts: `is` first
        seen = (plan.cuts, _kept(graph, plan))
        _KEPT[graph] = seen
    return {name: list(kept) for name, kept in seen[1].items()}


def _kept(graph: DependencyGraph, plan: PruningPlan) -> Slices:
    is_dropped = _dropped(graph, plan)
    result: dict[str, list[tuple[int, np.ndarray]]] = {}
    for target, slots in graph.param_slots().items():
        for slot in slots:
            gone = is_dropped[graph.slot_labels(slot)]
            if gone.any():
                result.setdefault(target, []).append((graph.slots[slot].dim, np.flatnonzero(~gone)))
    for width in getattr(graph, "widths", ()):
        kept = [np.flatnonzero(~is_dropped[graph.slot_labels(s)]) for s in width.slots]
        if any(len(k) < n for k, n in zip(kept, width.values)):
            result[width_key(width.module, width.values)] = list(enumerate(kept))
    return _tied(graph.model, result)


def _tied(model: nn.Module, result: dict[str, list[tuple[int, np.ndarray]]]) -> Slices:
    """Every name of a tensor shared under several names (tied embeddings, one module
    registered twice) gets the union of the cuts on any of them: per dim, the indices all
    of them keep. The rewrite slices such a tensor once and the counts count it once, so
    both must see the same cuts whichever name they read."""
    names: dict[int, list[str]] = {}
    for name, t in [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]:
        names.setdefault(id(t), []).append(name)
    merged: Slices = {}
    for tied in names.values():
        cuts = [c for name in tied for c in result.get(name, [])]
        if not cuts:
            continue
        by_dim: dict[int, np.ndarray] = {}
        for dim, idx in cuts:
            by_dim[dim] = np.intersect1d(by_dim[dim], idx) if dim in by_dim else np.asarray(idx)
        for name in tied:
            merged[name] = sorted(by_dim.items(), key=lambda kv: kv[0])
    # names the model does not hold (a graph bound to another copy) keep their own cuts
    return merged | {k: v for k, v in result.items() if k not in merged}


def param_counts(graph: DependencyGraph, plan: PruningPlan) -> tuple[int, int]:
    """Parameter elements before and after ``plan``: a tensor shared under several names
    counted once, sliced by every cut that touches any of its names (what
    :func:`slimgraph.resolve.cost.count_params` finds on the applied model)."""
    kept = kept_shapes(graph, plan)
    before = after = 0
    for name, p in graph.model.named_parameters():
        shape = list(p.shape)
        before += math.prod(shape)
        for dim, idx in kept.get(name, []):
            shape[dim] = len(idx)
        after += math.prod(shape)
    return before, after
