"""A latency budget met on the runtime, not only in the model: ``sg.slim(...,
target_latency=T, latency_model=lm, latency_tries=N)`` times each slim model against the
original on the latency model's runtime (the two taking turns), and while the latency
kept misses ``T`` by more than :data:`ON_TARGET` of it, the measurement joins the
model's knots (:meth:`~slimgraph.criteria.latency.LatencyModel.with_knot`) and the
width is planned again. So the model learns its error where the plan lands, which the
uniform slims it was fitted on need not show (a small depthwise network's latency is
not smooth in its widths). Of at most ``N`` tries, the one closest to ``T`` counts; its
plan records what was measured (``plan.measured_latency_kept``, and every try's in
``plan.latency_tries``) beside the prediction it was made on
(``plan.predicted_latency_ms``, by the knots of the tries before it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from slimgraph.criteria.config import PruneConfig
from slimgraph.errors import PlanError
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.resolve.cost import layer_shapes
from slimgraph.resolve.plan import PruningPlan
from slimgraph.tools.latency import interleaved_ms, runner

__all__ = ["ON_TARGET", "fit_latency"]

ON_TARGET = 0.03  # a slim model whose latency kept is this close to the target (of it) is on it

M = TypeVar("M", bound=nn.Module)


def fit_latency(
    original: nn.Module,
    example_inputs: Any,
    graph: DependencyGraph,
    config: PruneConfig,
    asked: PruneConfig,
    slim_once: Callable[[PruneConfig], tuple[PruningPlan, M]],
    tries: int,
    runs: int = 8,
) -> tuple[PruningPlan, M]:
    """The plan and slim model of up to ``tries`` rounds of ``slim_once(config)``, each
    measured against ``original`` (see the module docstring). ``asked`` is the budget
    of ``original``; ``config`` plans the width on ``graph``: the same, or when blocks
    were dropped first, the budget and latency model of the model without them. Each
    is the median of five rounds of at least ``runs`` runs (see
    :func:`~slimgraph.tools.latency.interleaved_ms`; a network of a few milliseconds
    gets more, to fill its rounds' :data:`~slimgraph.tools.latency.MIN_SECONDS`)."""
    lm, whole = config.latency_model, asked.latency_model
    if lm is None or whole is None or asked.target_latency is None or tries < 1:
        raise PlanError("fit_latency needs a budget: target_latency with its latency_model")
    target, original_ms = asked.target_latency, whole.predict({})
    tried: list[tuple[float, PruningPlan, M]] = []
    with tempfile.TemporaryDirectory() as folder:
        base = runner(original, example_inputs, lm.runtime, Path(folder) / "original.onnx")
        for attempt in range(tries):
            plan, slim = slim_once(config)
            if any(plan.cuts == seen.cuts for _, seen, _ in tried):
                break  # the knot moved the plan by less than a step of round_to
            path = Path(folder) / f"slim{attempt}.onnx"
            runners = {"original": base, "slim": runner(slim, example_inputs, lm.runtime, path)}
            ms = interleaved_ms(runners, example_inputs, lm.threads, runs)
            kept = ms["slim"] / ms["original"]
            tried.append((kept, plan, slim))
            if abs(kept / target - 1.0) <= ON_TARGET or attempt == tries - 1:
                break
            lm = lm.with_knot(lm.layer_ms(layer_shapes(graph, plan)), kept * original_ms)
            width = target * original_ms / lm.predict({})
            if width >= 1.0:  # blocks dropped first already run under the budget
                break
            config = config.model_copy(update={"latency_model": lm, "target_latency": width})
    # the closest to the target; of two as close, the faster. Its plan keeps the
    # prediction it was made on (by the knots of the tries before it)
    kept, plan, slim = min(tried, key=lambda t: (abs(t[0] / target - 1.0), t[0]))
    measured = {"measured_latency_kept": kept, "latency_tries": tuple(k for k, _, _ in tried)}
    return plan.model_copy(update=measured), slim
