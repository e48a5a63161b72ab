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

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from slimgraph._core.batches import Selector
from slimgraph.criteria.calibration import Calibration, calibrate, needs_of
from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.latency import LatencyModel
from slimgraph.criteria.registry import CRITERIA
from slimgraph.errors import PlanError
from slimgraph.graph.depgraph import DependencyGraph, Group
from slimgraph.planner.choose import Chooser, rank_globally, ranked_together
from slimgraph.planner.compensation import compensation
from slimgraph.planner.links import enforce_links
from slimgraph.planner.noop import warn_if_nothing_dropped
from slimgraph.resolve.cost import layer_shapes, plan_macs, weight_shapes
from slimgraph.resolve.indices import param_counts
from slimgraph.resolve.plan import Fold, GroupCut, InputShape, PruningPlan

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
    if config.latency_model is not None:
        _check_tables(config.latency_model, weight_shapes(graph.model))
    if calibration is not None:
        if not isinstance(calibration, Calibration):
            calibration = calibrate(graph, calibration, loss_fn, config, inputs=inputs)
        graph = graph.calibrated(calibration)
    if any(
        t is not None for t in (config.target_macs, config.target_params, config.target_latency)
    ):
        return _plan_for_budget(graph, config, skip)
    result = _planned(graph, config, skip)
    warn_if_nothing_dropped(graph, config, result, stacklevel=2)
    return result


def _planned(
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
    skip, groups = _planned_groups(graph, config, skip)
    if scores is None:
        scores = _scored(graph, config, groups)
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


def _planned_groups(
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


def _scored(
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
        if need in graph.provenance or default:
            found[need] = graph.provenance.get(need, default)
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


def _plan_for_budget(
    graph: DependencyGraph, config: PruneConfig, skip: dict[str, str] | None
) -> PruningPlan:
    """The plan whose ratio (a fraction dropped) keeps ``config.target_macs`` of the MACs (or
    ``target_params`` of the parameters, or ``target_latency`` of the latency): a bisection
    over the ratio, each candidate measured on a sliced meta-device copy (no compute).
    Overrides keep their own ratios, and the ratio stays within ``max_ratio``; the result
    is the candidate closest to the target.

    A group of coarse units (a ViT's heads, and the residual stream that
    ``nn.MultiheadAttention`` ties to them) narrows in jumps, so one ratio for all groups
    can leave the target between two plans (ViT-B/16 at ``target_macs=0.5``: 0.532 or
    0.455). Then the groups that jump there keep the lighter plan's cut, and a second
    bisection cuts the others deeper until the target is met (in global or isomorphic
    scope they rank again without the held groups); ``plan.held`` names the held groups
    and ``plan.config.ratio`` is the others'."""

    scores = _scored(graph, config, _planned_groups(graph, config, skip)[1])  # once, not per ratio

    def planned(ratio: float, held: Mapping[str, tuple[int, ...]] | None = None) -> PruningPlan:
        update = {"ratio": ratio, "target_macs": None, "target_params": None}
        fixed = config.model_copy(update=update | {"target_latency": None})
        return _planned(graph, fixed, skip, held, scores)

    # the whole model, the budget's base: overrides cut even at ratio 0
    whole = config.model_copy(update={"ratio": 0.0, "overrides": {}})
    uncut = _planned(graph, whole, skip, scores=scores)
    latency = config.latency_model
    if config.target_latency is not None and latency is not None:
        _warn_if_knots_differ(latency.scope, config.scope)
        # widths the runtime is slow at would make the prediction, and the model, slower
        config = config.model_copy(update={"round_to": max(config.round_to, latency.round_to)})
        target, full = config.target_latency, latency.predict(layer_shapes(graph, uncut))

        def kept(p: PruningPlan) -> float:
            return latency.predict(layer_shapes(graph, p)) / full
    elif config.target_macs is not None:
        target, total = config.target_macs, plan_macs(graph, uncut)

        def kept(p: PruningPlan) -> float:
            return plan_macs(graph, p) / total
    else:
        target = config.target_params

        def kept(p: PruningPlan) -> float:
            return p.params_after / p.params_before

    top = min(0.99, config.max_ratio or 1.0)
    (miss, chosen), above, below = _bisect(planned, kept, target, 0.0, top)
    if miss > _CLOSE * target and above and below:
        held = _jumpers(graph, above, below, config.round_to)
        if held and len(held) < len(above.cuts):
            # in local scope the others cut at least as deep as in ``above``; in global
            # scope the ratio now spreads over fewer groups, so it starts again from 0
            lo = above.config.ratio if config.scope == "local" else 0.0
            (closer, refined), _, _ = _bisect(lambda r: planned(r, held), kept, target, lo, top)
            if closer < miss:
                chosen = refined.model_copy(update={"held": tuple(held)})
    _warn_if_out_of_reach(config, kept(chosen), target)
    found = config.model_copy(update={"ratio": chosen.config.ratio})  # the ratio it took
    final = chosen.model_copy(update={"config": found})
    if latency is not None:
        predicted = latency.predict(layer_shapes(graph, chosen))
        final = final.model_copy(update={"predicted_latency_ms": predicted})
    warn_if_nothing_dropped(graph, found, final, stacklevel=3)
    return final.for_graph(graph)


def _check_tables(latency: LatencyModel, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse a latency model whose tables are not of this model's layers (``shapes``:
    module -> its full weight shape): it would price other layers, silently."""
    if not latency.layers:
        raise PlanError(
            "the latency model tables no layer: profile this model (sg.profile_latency, "
            "or slimgraph profile)"
        )
    differ = [
        f"{name} {_dims(t.shape)} in the tables, "
        + (_dims(shapes[name]) if name in shapes else "absent")
        + " here"
        for name, t in latency.layers.items()
        if shapes.get(name) != tuple(t.shape)
    ]
    if differ:
        raise PlanError(
            f"the latency model was profiled on another model: {len(differ)} of its "
            f"{len(latency.layers)} layers differ ({'; '.join(differ[:3])}); profile this "
            "model (sg.profile_latency, or slimgraph profile)"
        )


def _dims(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


_CLOSE = 0.002  # a budget plan this close to its target (as a fraction of it) is on it
_FAR = 0.05  # and one this far off warns: the budget is out of the planner's reach


def _warn_if_out_of_reach(config: PruneConfig, kept: float, target: float) -> None:
    """Say so when the closest plan the search found is far from the budget (a plan for
    ``target_macs=0.01`` that keeps 0.075 of the MACs is no plan for 0.01)."""
    if abs(kept - target) <= _FAR * target:
        return
    names = {"target_latency": "latency", "target_macs": "MACs", "target_params": "parameters"}
    budget, what = next(
        (f"{k}={getattr(config, k)}", name)
        for k, name in names.items()
        if getattr(config, k) is not None
    )
    why = (
        "no plan cuts deeper (max_ratio, min_keep, round_to and the groups frozen, skipped "
        "or ignored bound the cut)"
        if kept > target
        else "the groups narrow in steps too coarse to land closer (a narrow layer's single "
        "channels, round_to, whole heads)"
    )
    warnings.warn(
        f"{budget} is out of reach: the closest plan keeps {kept:.3f} of the {what}; {why}",
        stacklevel=4,
    )


def _warn_if_knots_differ(measured: str, planned: str) -> None:
    """A latency model's knots hold for plans that spread their cut like the slims they
    were measured on (``LatencyModel.scope``)."""
    if measured == planned:
        return
    on = "uniform slims" if measured == "local" else f"{measured}-scope plans"
    warnings.warn(
        f"the latency model's knots were measured on {on}, and this plan is in {planned} "
        f"scope: its predicted latency can miss by 10-20 % (global plans on uniform knots "
        f"ran that much slower). Profile with config=PruneConfig(scope={planned!r}) "
        f"(slimgraph profile --scope {planned}), or measure with latency_tries",
        stacklevel=4,
    )


def _bisect(
    planned: Callable[[float], PruningPlan],
    kept: Callable[[PruningPlan], float],
    target: float,
    lo: float,
    hi: float,
) -> tuple[tuple[float, PruningPlan], PruningPlan | None, PruningPlan | None]:
    """Bisect the ratio in [``lo``, ``hi``] for the plan that keeps ``target``: the closest
    plan with its miss, and the last plans found above and below the target."""
    seen: list[tuple[float, PruningPlan]] = []
    above = below = None
    for _ in range(14):
        candidate = planned((lo + hi) / 2)
        fraction = kept(candidate)
        seen.append((abs(fraction - target), candidate))
        if abs(fraction - target) <= _CLOSE * target:
            break
        if fraction > target:
            lo, above = candidate.config.ratio, candidate
        else:
            hi, below = candidate.config.ratio, candidate
    closest = min(seen, key=lambda found: found[0])
    if below is None and closest[0] > _CLOSE * target:  # every ratio tried keeps too much
        deepest = planned(hi)  # the deepest the search may go, which halving never reaches
        closest = min(closest, (abs(kept(deepest) - target), deepest), key=lambda f: f[0])
    return closest, above, below


def _jumpers(
    graph: DependencyGraph, above: PruningPlan, below: PruningPlan, round_to: int
) -> dict[str, tuple[int, ...]]:
    """The groups whose cut differs between two plans of neighbouring ratios by more than
    ``round_to`` channels (whole heads, not single channels), with their units dropped in
    ``above``, the lighter plan."""
    deeper = {c.group: c.drop for c in below.cuts}
    jumped = {}
    for cut in above.cuts:
        weight = graph.channel_counts(graph.group(cut.group))
        channels = int(weight[list(deeper[cut.group])].sum() - weight[list(cut.drop)].sum())
        if channels > round_to:
            jumped[cut.group] = cut.drop
    return jumped
