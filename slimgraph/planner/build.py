"""Turn a config, a graph and importance scores into a validated :class:`PruningPlan`.

Ratios, ``round_to`` and ``min_keep`` count *channels*: the indices of the widest
parameter dim in a group. A unit usually is one channel; it is a whole group of a
depthwise convolution, one offset of every group of a grouped one, and two channels
paired by a channel shuffle.

``ratio`` and ``max_ratio`` are fractions of channels dropped; ``target_macs``,
``target_params`` and ``target_latency`` fractions of the model's MACs, parameters or
latency (as ``config.latency_model`` predicts it) kept.

In local scope every group drops ``ratio`` of its channels. Global scope ranks the units
of all groups together, isomorphic scope those of groups with the same structure; each
group's scores are first normalised (``normalize``), and no group loses more than
``max_ratio`` of its channels.

A prunable group the plan leaves whole is *skipped* (``plan.skipped`` says why: a failed dry
run, ``prune_residual=False``); one whose module matches ``ignore`` is *ignored*; groups the
graph cannot cut are *frozen* (``graph.explain``) and never planned.
"""

from __future__ import annotations

from typing import Any

from slimgraph._core.batches import Selector
from slimgraph.criteria.calibration import Calibration, calibrate
from slimgraph.criteria.config import PruneConfig
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.planner.budget import check_latency_model, plan_for_budget
from slimgraph.planner.noop import warn_if_nothing_dropped
from slimgraph.planner.ratio import planned_at
from slimgraph.resolve.indices import check_traced_shapes
from slimgraph.resolve.plan import PruningPlan

__all__ = ["plan"]


def plan(
    graph: DependencyGraph,
    config: PruneConfig | None = None,
    *,
    skip: dict[str, str] | None = None,
    calibration: Any = None,
    loss_fn: Any = None,
    inputs: Selector | None = None,
    **fields,
) -> PruningPlan:
    """Decide which units every prunable group drops.

    ``fields`` are :class:`PruneConfig` fields, as a shortcut for ``config``; ``skip``
    maps the ids of groups to skip to the reason, which ``plan.skipped`` records.
    ``calibration`` is what data-aware criteria read: the :class:`Calibration` that
    :func:`slimgraph.calibrate` returned (measure once, plan many), or batches (and
    ``loss_fn(model, batch) -> loss`` for criteria that read gradients) to measure it from
    first (``inputs(batch)`` selects a batch's model inputs, as for
    :func:`slimgraph.calibrate`). The criteria get ``graph.calibrated(calibration)``; ``graph`` is not changed.

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> p = sg.plan(sg.trace(net, (torch.randn(1, 4),)), sg.PruneConfig(ratio=0.25))
    >>> [(c.group, c.size - len(c.drop)) for c in p.cuts], p.params_before, p.params_after
    ([('0.weight:0', 6)], 58, 44)
    """
    config = PruneConfig(**{**(config.model_dump() if config else {}), **fields})
    check_traced_shapes(graph)  # scores read the model's weights at the traced indices
    if config.latency_model is not None:
        check_latency_model(config.latency_model, graph)
    if calibration is not None:
        if not isinstance(calibration, Calibration):
            calibration = calibrate(graph, calibration, loss_fn, config, inputs=inputs)
        graph = graph.calibrated(calibration)
    if any(
        t is not None for t in (config.target_macs, config.target_params, config.target_latency)
    ):
        return plan_for_budget(graph, config, skip)
    result = planned_at(graph, config, skip)
    warn_if_nothing_dropped(graph, config, result, stacklevel=2)
    return result
