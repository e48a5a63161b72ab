"""The plan for a budget (``target_macs``, ``target_params`` or ``target_latency``): a
bisection over the ratio, each candidate measured on a meta-device copy, and the checks
and warnings around it (a latency model of another model, a budget out of reach)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np

from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.latency import LatencyModel
from slimgraph.errors import PlanError
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.graph.partition import Parts
from slimgraph.planner.noop import warn_if_nothing_dropped
from slimgraph.planner.ratio import planned_at, planned_groups, scored
from slimgraph.resolve.cost import layer_dtypes, layer_shapes, plan_macs, weight_shapes
from slimgraph.resolve.plan import PruningPlan
from slimgraph.resolve.summary import dims

__all__ = ["check_latency_model", "plan_for_budget"]


def plan_for_budget(
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
    and ``plan.config.ratio`` is the others'. Where no group jumps but many step at
    once (widths that are all multiples of 64 take their ``round_to`` steps at the same
    ratios: ResNet-50 at ``target_latency=0.5`` goes from 0.519 to 0.475 of its predicted
    latency), some take the deeper step and the others are held (see
    :func:`_split_step`)."""

    scores = scored(graph, config, planned_groups(graph, config, skip)[1])  # once, not per ratio

    def planned(ratio: float, held: Mapping[str, tuple[int, ...]] | None = None) -> PruningPlan:
        update = {"ratio": ratio, "target_macs": None, "target_params": None}
        fixed = config.model_copy(update=update | {"target_latency": None})
        return planned_at(graph, fixed, skip, held, scores)

    # the whole model, the budget's base: overrides cut even at ratio 0
    whole = config.model_copy(update={"ratio": 0.0, "overrides": {}})
    uncut = planned_at(graph, whole, skip, scores=scores)
    latency = config.latency_model
    if config.target_latency is not None and latency is not None:
        _warn_if_knots_differ(latency.scope, config.scope)
        target, full = config.target_latency, latency.predict(layer_shapes(graph, uncut))
        # widths the runtime is slow at would make the prediction, and the model, slower
        config = config.model_copy(update={"round_to": max(config.round_to, latency.round_to)})

        def kept(p: PruningPlan) -> float:
            return latency.predict(layer_shapes(graph, p)) / full
    elif config.target_macs is not None:
        target, total = config.target_macs, plan_macs(graph, uncut)

        def kept(p: PruningPlan) -> float:
            return plan_macs(graph, p) / total
    elif config.target_params is not None:
        target = config.target_params

        def kept(p: PruningPlan) -> float:
            return p.params_after / p.params_before
    else:
        raise PlanError("a budget plan needs target_macs, target_params or target_latency")

    top = min(0.99, config.max_ratio or 1.0)
    (miss, chosen), above, below = _bisect(planned, kept, target, 0.0, top)
    if miss > _CLOSE * target and above and below:
        held = _jumpers(graph, above, below, config.round_to)
        if held and len(held) < len(above.cuts):
            # in local scope the others cut at least as deep as in ``above``; in global
            # scope the ratio now spreads over fewer groups, so it starts again from 0
            lo = _ratio_of(above) if config.scope == "local" else 0.0
            (closer, refined), _, _ = _bisect(lambda r: planned(r, held), kept, target, lo, top)
            if closer < miss:
                chosen = refined.model_copy(update={"held": tuple(held)})
        elif config.scope == "local":  # every group steps at once: only some step
            (closer, refined), stepped = _split_step(planned, kept, target, above, below, scores)
            if closer < miss:
                chosen = refined.model_copy(update={"held": tuple(stepped)})
    fraction = kept(chosen)
    _warn_if_out_of_reach(config, fraction, target, deeper=below is not None or fraction < target)
    found = config.model_copy(update={"ratio": _ratio_of(chosen)})  # the ratio it took
    final = chosen.model_copy(update={"config": found})
    if latency is not None:
        predicted = latency.predict(layer_shapes(graph, chosen))
        final = final.model_copy(update={"predicted_latency_ms": predicted})
    warn_if_nothing_dropped(graph, found, final, stacklevel=3)
    return final.for_graph(graph)


def check_latency_model(latency: LatencyModel, graph: DependencyGraph) -> None:
    """Refuse a latency model not profiled on ``graph``'s model at its inputs: it would
    price other layers, or the same ones at other shapes, silently."""
    _check_tables(latency, weight_shapes(graph.model))
    here = layer_dtypes(graph.model, latency.layers)
    weightless = any(p.is_meta for p in graph.model.parameters())  # its dtype may not be
    if latency.dtypes and latency.dtypes != here and not weightless:
        raise PlanError(
            f"the latency model was profiled with {', '.join(latency.dtypes)} weights, and the "
            f"model has {', '.join(here)}: its tables time other kernels; profile the model "
            "in the dtype it runs in"
        )
    traced = tuple(spec.shape for spec in graph.inputs)
    # the parts of a model traced part by part are traced at their boundary inputs
    if latency.inputs and latency.inputs != traced and not isinstance(graph.model, Parts):
        raise PlanError(
            f"the latency model was profiled at inputs {_listed(latency.inputs)}, and the "
            f"model is traced at {_listed(traced)}: its tables time the layers at other "
            "shapes; profile at these inputs"
        )


def _listed(shapes: tuple[tuple[int, ...], ...]) -> str:
    return ", ".join(dims(s) for s in shapes)


def _check_tables(latency: LatencyModel, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse a latency model whose tables are not of this model's layers (``shapes``:
    module -> its full weight shape)."""
    if not latency.layers:
        raise PlanError(
            "the latency model tables no layer: profile this model (sg.profile_latency, "
            "or slimgraph profile)"
        )
    differ = [
        f"{name} {dims(t.shape)} in the tables, "
        + (dims(shapes[name]) if name in shapes else "absent")
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


_CLOSE = 0.002  # a budget plan this close to its target (as a fraction of it) is on it
_FAR = 0.05  # and one this far off warns: the budget is out of the planner's reach


def _warn_if_out_of_reach(config: PruneConfig, kept: float, target: float, deeper: bool) -> None:
    """Say so when the closest plan the search found is far from the budget (a plan for
    ``target_macs=0.01`` that keeps 0.075 of the MACs is no plan for 0.01), and why: no
    plan cuts deeper, or (``deeper``: some plan went below the target) the steps between
    plans are too coarse."""
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
        if not deeper
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
            lo, above = _ratio_of(candidate), candidate
        else:
            hi, below = _ratio_of(candidate), candidate
    closest = min(seen, key=lambda found: found[0])
    if below is None and closest[0] > _CLOSE * target:  # every ratio tried keeps too much
        deepest = planned(hi)  # the deepest the search may go, which halving never reaches
        closest = min(closest, (abs(kept(deepest) - target), deepest), key=lambda f: f[0])
    return closest, above, below


def _ratio_of(candidate: PruningPlan) -> float:
    """The ratio a candidate was planned at (every one records its config)."""
    if candidate.config is None:
        raise PlanError("a budget search candidate has no config")
    return candidate.config.ratio


def _split_step(
    planned: Callable[[float, Mapping[str, tuple[int, ...]]], PruningPlan],
    kept: Callable[[PruningPlan], float],
    target: float,
    above: PruningPlan,
    below: PruningPlan,
    scores: Mapping[str, np.ndarray],
) -> tuple[tuple[float, PruningPlan], list[str]]:
    """Between two plans of neighbouring ratios that many groups step between at once
    (widths that are multiples of one base, as ResNet's 64: at ratio 0.375 each drops
    3/8 of it, one ``round_to`` step more than at 0.3725), the plan where some of those
    groups take ``below``'s cut while the rest keep ``above``'s. A knapsack's greedy
    (HALP) picks them: in the order of the score their extra units lose (against their
    group's mean) per unit of budget their step alone saves, each steps while the plan
    stays above the target; the closest plan seen wins. Returns it with its miss, and the
    groups it held."""
    lighter = {c.group: tuple(sorted(c.drop)) for c in above.cuts}
    extra = {c.group: sorted(set(c.drop) - set(lighter[c.group])) for c in below.cuts}
    extra = {group: units for group, units in extra.items() if units}
    ratio, full = _ratio_of(below), kept(above)

    def stepping(groups: list[str]) -> PruningPlan:
        return planned(ratio, {g: lighter[g] for g in lighter.keys() - set(groups)})

    alone = {group: stepping([group]) for group in extra}  # each group's step priced alone

    def lost_per_saved(group: str) -> float:
        unit = scores[group]
        lost = float(unit[extra[group]].sum() / max(float(unit.mean()), 1e-12))
        saved = full - kept(alone[group])
        return lost / saved if saved > 0 else np.inf  # a step that saves nothing goes last

    stepped: list[str] = []
    seen = [(abs(full - target), stepped, above)]
    for group in sorted(extra, key=lost_per_saved):
        candidate = stepping([*stepped, group]) if stepped else alone[group]
        fraction = kept(candidate)
        seen.append((abs(fraction - target), [*stepped, group], candidate))
        if fraction > target:
            stepped = [*stepped, group]
        if abs(fraction - target) <= _CLOSE * target:
            break
    miss, groups, closest = min(seen, key=lambda found: found[0])
    return (miss, closest), [g for g in extra if g not in groups]


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
