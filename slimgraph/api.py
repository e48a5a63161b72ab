"""``sg.slim``: trace, plan and apply in one call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from slimgraph._core.batches import Selector
from slimgraph.criteria.calibration import Calibration, calibrate
from slimgraph.criteria.config import PruneConfig
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.graph.trace import trace
from slimgraph.resolve.plan import PruningPlan
from slimgraph.rewrite.apply import apply
from slimgraph.rewrite.fallback import plan_that_applies

__all__ = ["SlimResult", "slim"]


@dataclass
class SlimResult:
    """The slim model, the plan that made it, and the graph the plan was made on (with
    the calibration attached, when there was one)."""

    model: nn.Module
    plan: PruningPlan
    graph: DependencyGraph


def slim(
    model: nn.Module,
    example_inputs: Any,
    *,
    ratio: float = 0.5,
    importance: str = "l2",
    prune_residual: bool = True,
    calibration: Any = None,
    loss_fn: Any = None,
    inputs: Selector | None = None,
    head_dims: bool = False,
    query_heads: bool = False,
    inplace: bool = False,
    **fields: Any,
) -> SlimResult:
    """Trace ``model``, plan the cuts and return a smaller dense copy.

    ``fields`` are further :class:`PruneConfig` fields (scope, round_to, ignore, ...).
    ``calibration`` (an iterable of batches, or what :func:`slimgraph.calibrate` measured
    on this model) feeds the data-aware criteria: input statistics for
    ``importance="activation"`` / ``"fluctuation"`` and ``bias_compensation=True``;
    gradients of ``loss_fn(model, batch) -> loss`` for ``importance="taylor"`` (without
    them, taylor reads the ``.grad`` the caller has accumulated); ``inputs(batch)``
    selects the model inputs of batches that hold more, such as ``(inputs, labels)``. The plan's
    ``provenance`` says which.
    ``head_dims`` and ``query_heads`` choose the attention units, as for
    :func:`slimgraph.trace`: whole heads (whole key/value groups under grouped-query
    attention) by default.

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> r = sg.slim(net, (torch.randn(1, 4),), ratio=0.5)
    >>> r.model[0].out_features, r.plan.params_after
    (8, 58)
    """
    config = PruneConfig(
        ratio=ratio, importance=importance, prune_residual=prune_residual, **fields
    )
    graph = trace(model, example_inputs, head_dims=head_dims, query_heads=query_heads)
    if calibration is not None:
        if not isinstance(calibration, Calibration):
            calibration = calibrate(graph, calibration, loss_fn, config, inputs=inputs)
        graph = graph.calibrated(calibration)  # what the criteria read
    plan = plan_that_applies(model, graph, config)
    slim_model = apply(model, plan, graph=graph, inplace=inplace, example_inputs=example_inputs)
    return SlimResult(slim_model, plan, graph)
