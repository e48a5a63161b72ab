"""Iterative slimming: drop channels over several steps, re-scoring and fine-tuning between.

After step ``k`` of ``steps`` every group keeps what a one-shot ``sg.slim`` at ratio
``ratio * k / steps`` would keep (a linear schedule over each group's *original* channels),
so the last step ends at exactly the widths of ``sg.slim(model, inputs, ratio=ratio)``;
only which channels go differs, chosen step by step on the fine-tuned weights.

>>> import torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 20), torch.nn.ReLU(), torch.nn.Linear(20, 2))
>>> seen = []
>>> r = sg.prune_iteratively(net, (torch.randn(1, 4),), ratio=0.5, steps=2, progress=False,
...                          finetune=lambda model, step: seen.append(model[0].out_features))
>>> seen, r.params
([15, 10], [107, 72])
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from slimgraph._core.batches import Selector
from slimgraph._core.progress import progress_bar
from slimgraph.criteria.calibration import Calibration, calibrate
from slimgraph.criteria.config import PruneConfig
from slimgraph.errors import PlanError
from slimgraph.graph.depgraph import DependencyGraph, Group
from slimgraph.graph.trace import trace
from slimgraph.resolve.cost import count_params
from slimgraph.resolve.plan import PruningPlan
from slimgraph.rewrite.apply import apply
from slimgraph.rewrite.fallback import plan_that_applies

__all__ = ["IterativeResult", "kept_sizes", "prune_iteratively"]

Finetune = Callable[[nn.Module, int], "nn.Module | None"]


@dataclass
class IterativeResult:
    """The final model, the plan of every step (each made on the previous step's model)
    and the parameter count after every step."""

    model: nn.Module
    plans: list[PruningPlan]
    params: list[int]
    params_before: int = 0


def prune_iteratively(
    model: nn.Module,
    example_inputs: Any,
    *,
    ratio: float = 0.5,
    steps: int = 5,
    finetune: Finetune | None = None,
    importance: str = "l2",
    progress: bool = True,
    calibration: Any = None,
    loss_fn: Any = None,
    inputs: Selector | None = None,
    head_dims: bool = False,
    query_heads: bool = False,
    **config_fields: Any,
) -> IterativeResult:
    """Slim ``model`` to ``ratio`` in ``steps`` steps: trace, score, drop, ``finetune``.

    Each step re-traces the current model and scores it afresh: ``calibration`` batches
    are measured again on that model as :func:`slimgraph.slim` measures them (gradients
    of ``loss_fn`` for ``importance="taylor"``, input statistics for the activation
    criteria; ``inputs(batch)`` selects a batch's model inputs), so they must be
    re-iterable: a list or a DataLoader. Without them taylor
    reads the ``.grad`` the previous ``finetune`` left behind. After each step
    ``finetune(model, step)`` (steps count from 1) may train the model in place and return
    None, or return the model to continue with. ``config_fields`` are further
    :class:`PruneConfig` fields (``round_to``, ``ignore``, ``overrides``, ``target_macs``,
    ...), read as for the one-shot :func:`slimgraph.slim` the last step must match.
    ``model`` itself is not changed.

    The widths follow the schedule exactly except in concatenations whose parts each
    lose their share (DenseNet), which can end a few channels off; a warning names them.
    With ``scope="global"`` the schedule holds for the total channel count, and how it
    spreads over groups follows each step's scores.
    """
    if steps < 1:
        raise PlanError(f"steps must be at least 1, not {steps}")
    config = PruneConfig(ratio=ratio, importance=importance, **config_fields)
    if isinstance(calibration, (Iterator, Calibration)):
        what = "a one-pass iterator" if isinstance(calibration, Iterator) else "measured once"
        raise PlanError(
            f"calibration is {what}, but every step measures the model again: "
            "pass a list of batches or a DataLoader"
        )
    graph = trace(model, example_inputs, head_dims=head_dims, query_heads=query_heads)
    config, final = _fixed_ratio(model, graph, config)
    targets = [_one_shot_sizes(model, graph, config, k / steps) for k in range(1, steps + 1)]
    if final is not None:  # the budget plan's own widths, which no step may cut past
        targets = [{n: max(w, final.get(n, w)) for n, w in t.items()} for t in targets[:-1]]
        targets.append(final)
    result = IterativeResult(model, [], [], params_before=count_params(model))
    with progress_bar(steps, "slimming", progress) as update:
        for k, target in enumerate(targets, start=1):
            update(advance=0, description=f"step {k}/{steps}: slimming")
            if k > 1:
                graph = trace(model, example_inputs, head_dims=head_dims, query_heads=query_heads)
            step_config = _step_config(graph, config, target)
            seen = graph  # with this step's calibration attached, for the criteria
            if calibration is not None:
                seen = graph.calibrated(
                    calibrate(graph, calibration, loss_fn, step_config, inputs=inputs)
                )
            plan = plan_that_applies(model, seen, step_config)
            if config.scope == "local":
                _check_schedule(graph, plan, target, k)
            model = apply(model, plan, graph=graph, example_inputs=example_inputs)
            if finetune is not None:
                update(advance=0, description=f"step {k}/{steps}: fine-tuning")
                returned = finetune(model, k)
                if returned is not None and not isinstance(returned, nn.Module):
                    raise PlanError(
                        f"finetune(model, step) must return None or an nn.Module, "
                        f"not {type(returned).__name__}"
                    )
                model = returned if returned is not None else model
            result.plans.append(plan)
            result.params.append(count_params(model))
            update(advance=1, description=f"step {k}/{steps}: {result.params[-1]:,} params")
    result.model = model
    return result


def kept_sizes(graph: DependencyGraph, plan: PruningPlan | None = None) -> dict[str, int]:
    """``"param:dim"`` -> its size once ``plan`` is applied, for every parameter dim in a
    prunable group (parameter names, unlike group ids, never change with the widths).

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    >>> graph = sg.trace(net, (torch.randn(1, 4),))
    >>> kept_sizes(graph, sg.plan(graph, ratio=0.5))
    {'0.weight:0': 3, '0.bias:0': 3, '2.weight:1': 3}
    """
    drops = {c.group: list(c.drop) for c in plan.cuts} if plan is not None else {}
    found: dict[str, int] = {}
    for g in graph.prunable_groups():
        drop = drops.get(g.id, [])
        for slot in g.slots:
            info = graph.slots[slot]
            name = f"{info.target}:{info.dim}"
            if info.role == "param" and name not in found:
                found[name] = info.size - int(np.isin(graph.unit_index(g, slot), drop).sum())
    return found


def _scaled(config: PruneConfig, fraction: float) -> PruneConfig:
    """``config`` with its ratio and every override scaled by ``fraction`` (1: unchanged)."""
    if fraction == 1:
        return config
    return config.model_copy(
        update={
            "ratio": config.ratio * fraction,
            "overrides": {p: r * fraction for p, r in config.overrides.items()},
        }
    )


def _fixed_ratio(
    model: nn.Module, graph: DependencyGraph, config: PruneConfig
) -> tuple[PruneConfig, dict[str, int] | None]:
    """A ``target_macs`` / ``target_params`` config turned into the ratio that reaches it
    on the first model, and the widths of that one-shot plan (None without a budget): in
    local scope its coarse groups can stay at a lighter ratio than the one it records
    (``slimgraph.planner.budget``), so the last step takes these widths, not the ratio's."""
    if config.target_macs is None and config.target_params is None:
        return config, None
    sizing = config.model_copy(update={"importance": "random", "bias_compensation": False})
    one_shot = plan_that_applies(model, graph, sizing)
    update = {"ratio": one_shot.config.ratio, "target_macs": None, "target_params": None}
    return config.model_copy(update=update), kept_sizes(graph, one_shot)


def _one_shot_sizes(
    model: nn.Module, graph: DependencyGraph, config: PruneConfig, fraction: float
) -> dict[str, int]:
    """Parameter dim sizes after the one-shot plan at ``fraction`` of the way. In local
    scope how many channels a group keeps does not depend on the scores, so random ones
    (which need no gradients) size it."""
    sizing = _scaled(config, fraction).model_copy(
        update={"importance": "random", "bias_compensation": False}
    )
    return kept_sizes(graph, plan_that_applies(model, graph, sizing))


def _step_config(
    graph: DependencyGraph, config: PruneConfig, target: dict[str, int]
) -> PruneConfig:
    """The config that takes every group of ``graph`` to the ``target`` size of its widest
    parameter dim.

    Local scope: one override per group, ratio ``drop / channels``, whose budget
    ``floor(channels * ratio)`` is exactly ``drop``. Global scope: one ratio that brings
    the total to the target's total.
    """
    drops: dict[str, int] = {}
    channels: dict[str, int] = {}
    groups = [
        g for g in graph.prunable_groups() if not any(config.is_ignored(m) for m in g.modules)
    ]
    for g in groups:
        info = graph.slots[graph.widest_slot(g)]
        want = target.get(f"{info.target}:{info.dim}", info.size)
        drops[g.id] = max(info.size - want, 0)  # never negative: a step cannot add channels
        channels[g.id] = int(graph.channel_counts(g).sum())
    if config.scope == "global":
        total = sum(channels.values())
        return _validated(config, ratio=sum(drops.values()) / total if total else 0.0, overrides={})
    ratios = {gid: min(drops[gid] / channels[gid], 0.999) for gid in drops}
    return _validated(config, ratio=0.0, overrides=_overrides(groups, ratios))


def _validated(config: PruneConfig, **update: Any) -> PruneConfig:
    return PruneConfig(**{**config.model_dump(), **update})


def _overrides(groups: list[Group], ratios: dict[str, float]) -> dict[str, float]:
    """Module-name patterns giving each group its own ratio.

    An override applies to every group that has a matching module, the first pattern
    first. So each group is named by a module that no group named after it has; groups
    are taken greedily, always one with a module no other remaining group shares (a
    BatchNorm, the first layer of a chain). Where none has, one is named anyway and the
    schedule check reports any group that missed its width.
    """
    remaining = {g.id: set(g.modules) for g in groups}
    found: dict[str, float] = {}
    while remaining:
        choice = None
        for gid, modules in remaining.items():
            shared = set().union(*(m for other, m in remaining.items() if other != gid))
            own = sorted(modules - shared)
            if own:
                choice = gid, own[0]
                break
        if choice is None:
            gid = next(iter(remaining))
            choice = gid, sorted(remaining[gid])[0]
        gid, module = choice
        found[_literal(module)] = ratios[gid]
        del remaining[gid]
    return found


def _literal(name: str) -> str:
    """A glob pattern that matches ``name`` only."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _check_schedule(
    graph: DependencyGraph, plan: PruningPlan, target: dict[str, int], step: int
) -> None:
    kept = kept_sizes(graph, plan)
    missed = {n: (kept[n], t) for n, t in target.items() if n in kept and kept[n] != t}
    if missed:
        shown = ", ".join(
            f"{n} keeps {k} (schedule: {t})" for n, (k, t) in list(missed.items())[:4]
        )
        warnings.warn(
            f"step {step}: {len(missed)} parameter dim(s) miss the schedule, so the last step "
            f"will not match one-shot sg.slim widths: {shown}",
            stacklevel=3,
        )
