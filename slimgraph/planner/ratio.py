"""The plan at one ratio: every group's units scored, chosen in the config's scope, and
the links between groups enforced (no budget search: :mod:`slimgraph.planner.budget`)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from slimgraph.criteria.calibration import needs_of
from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.registry import CRITERIA
from slimgraph.errors import PlanError
from slimgraph.graph.depgraph import DependencyGraph, Group
from slimgraph.planner.choose import Chooser, rank_globally, ranked_together
from slimgraph.planner.compensation import compensation
from slimgraph.planner.links import enforce_links
from slimgraph.resolve.indices import param_counts
from slimgraph.resolve.plan import Fold, GroupCut, InputShape, PruningPlan

__all__ = ["planned_at", "planned_groups", "scored"]


def planned_at(
    graph: DependencyGraph,
    config: PruneConfig,
    skip: dict[str, str] | None,
    held: Mapping[str, tuple[int, ...]] | None = None,
    scores: Mapping[str, np.ndarray] | None = None,
) -> PruningPlan:
    """The plan at ``config``'s ratio (no budget search, no warning that it is empty); the
    groups in ``held`` (id -> units) drop those units instead, and in global or isomorphic
    scope stay out of the ranking, so the ratio spreads over the others. ``scores``
    (group id -> unit scores, as :func:`_scored` gives them) spares a search that plans
    many ratios from scoring the same groups again."""
    skip, groups = planned_groups(graph, config, skip)
    if scores is None:
        scores = scored(graph, config, groups)
    choosers = {g.id: Chooser(graph, g, scores[g.id]) for g in groups}
    held = held or {}
    drops = {gid: list(units) for gid, units in held.items()}
    free = [g for g in groups if g.id not in held]
    if config.scope == "local":
        for g in free:
            drops[g.id] = choosers[g.id].local(config.ratio_for(g.modules), config)
    else:
        costs = None
        if config.latency_model is not None:
            lm = config.latency_model
            costs = {g.id: lm.ms_per_channel(g, choosers[g.id].channels) for g in free}
        for together in ranked_together(graph, free, config.scope):
            drops |= rank_globally(together, choosers, config, costs)
    drops = enforce_links(graph, groups, choosers, drops)
    cuts = tuple(
        GroupCut(group=g.id, size=g.size, drop=tuple(drops[g.id]), modules=tuple(g.modules))
        for g in groups
    )
    result = PruningPlan(
        fingerprint=graph.fingerprint,
        criterion=config.importance,
        config=config,
        inputs=tuple(InputShape(shape=s.shape, dtype=s.dtype, name=s.name) for s in graph.inputs),
        training=graph.modes.get("", False),
        head_dims=graph.head_dims,
        query_heads=graph.query_heads,
        cuts=cuts,
        skipped=skip,
        provenance=_provenance(graph, config),
        compensation=_compensation(graph, groups, drops) if config.bias_compensation else (),
    )
    before, after = param_counts(graph, result)
    final = result.model_copy(update={"params_before": before, "params_after": after})
    return final.for_graph(graph)  # for plan.summary() and the notebook view


def planned_groups(
    graph: DependencyGraph, config: PruneConfig, skip: dict[str, str] | None
) -> tuple[dict[str, str], list[Group]]:
    """The groups skipped (id -> why) and the groups ``config`` plans."""
    skip = dict(skip or {})
    if not config.prune_residual:
        residual = "residual stream (prune_residual=False)"
        skip.update({g.id: residual for g in graph.prunable_groups() if g.residual})
    groups = [
        g
        for g in graph.prunable_groups()
        if g.id not in skip and not any(config.is_ignored(m) for m in g.modules)
    ]
    return skip, groups


def scored(
    graph: DependencyGraph, config: PruneConfig, groups: list[Group]
) -> dict[str, np.ndarray]:
    """Each group's unit scores by ``config.importance``: they depend on the weights and
    the calibration, never on how many units a plan drops."""
    return CRITERIA[config.importance](graph, groups, config) if groups else {}


def _provenance(graph: DependencyGraph, config: PruneConfig) -> dict[str, str]:
    """Where the data the plan's scores read came from."""
    found = {}
    for need in sorted(needs_of(config)):
        default = "the .grad already on the parameters" if need == "gradients" else None
        source = graph.provenance.get(need, default)
        if source is not None:
            found[need] = source
    return found


def _compensation(
    graph: DependencyGraph, groups: list[Group], drops: dict[str, list[int]]
) -> tuple[Fold, ...]:
    if graph.activations is None:
        raise PlanError(
            "bias_compensation needs calibration inputs: pass "
            "calibration=sg.calibrate(graph, batches), or the batches themselves, "
            "to sg.plan (calibration=batches to sg.slim)"
        )
    found, unbiased = compensation(graph, groups, drops)
    if unbiased:
        warnings.warn(
            f"bias_compensation: {len(unbiased)} layer(s) reading dropped channels have no "
            f"bias or BatchNorm to fold their means into ({', '.join(unbiased[:3])}"
            f"{', …' if len(unbiased) > 3 else ''}); they lose those channels uncompensated",
            stacklevel=4,
        )
    return tuple(found)
