"""The plan that applies: skip the groups whose cut fails the meta dry run.

Code that hard-codes a width (``x.split(4, 1)``, ``view(b, 3, c // 3, ...)`` with a literal
group count) is invisible in the traced graph; the dry run finds the groups that trip over
it, and the plan skips them with the reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from slimgraph.criteria.config import PruneConfig
from slimgraph.errors import PlanError, RewriteError
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.planner import plan as make_plan
from slimgraph.resolve.plan import PruningPlan
from slimgraph.rewrite.apply import dry_run

__all__ = ["applied_plan", "failing_groups", "plan_that_applies"]

T = TypeVar("T")


def plan_that_applies(model: nn.Module, graph: DependencyGraph, config: PruneConfig) -> PruningPlan:
    """``sg.plan``, then skip the groups whose cut fails the meta dry run: code
    that hard-codes a width the graph cannot see (``x.split(4, 1)``). Warns, and records
    why in ``plan.skipped``."""
    plan = make_plan(graph, config)
    try:
        dry_run(model, plan, graph)
    except RewriteError:
        plan = _skipping_failures(model, plan, graph, config)
    return plan


def applied_plan(
    model: nn.Module,
    graph: DependencyGraph,
    config: PruneConfig,
    apply_plan: Callable[[PruningPlan], T],
) -> tuple[PruningPlan, T]:
    """``sg.plan``, then ``apply_plan`` (``sg.apply`` with example inputs, whose forward
    check on the real weights is the dry run); when that fails where the meta dry run
    fails too, the plan skips the groups that fail it on their own and is applied again,
    as :func:`plan_that_applies` would have planned it. The happy path runs no meta dry
    run at all."""
    plan = make_plan(graph, config)
    try:
        return plan, apply_plan(plan)
    except RewriteError:
        try:
            dry_run(model, plan, graph)
        except RewriteError:
            pass
        else:
            raise  # not a width the dry run sees (the value check): skipping cannot help
        plan = _skipping_failures(model, plan, graph, config)
    return plan, apply_plan(plan)


def _skipping_failures(
    model: nn.Module, plan: PruningPlan, graph: DependencyGraph, config: PruneConfig
) -> PruningPlan:
    """The plan again, without the groups whose cuts fail a dry run on their own; raises
    the dry run's error when no group fails alone."""
    skip = failing_groups(model, plan, graph)
    if not skip:
        dry_run(model, plan, graph)  # the error the whole plan's dry run gives
    warnings.warn(
        f"slimgraph skipped {len(skip)} group(s) because the model hard-codes their "
        f"width: {', '.join(sorted(skip)[:5])}; see plan.skipped",
        stacklevel=4,
    )
    return make_plan(graph, config, skip=skip)


def failing_groups(model: nn.Module, plan: PruningPlan, graph: DependencyGraph) -> dict[str, str]:
    """Groups whose cuts fail a dry run on their own (with the groups linked to them).

    Code that hard-codes a width (``x.split(4, 1)``, ``view(b, 3, c // 3, ...)`` with a
    literal group count) is invisible in the traced graph; this finds the groups that
    trip over it, so that the plan can skip them.
    """
    linked = {gid: frozenset(c) for c in graph.linked_groups() for gid in c}
    failing: dict[str, str] = {}
    tried: set[frozenset[str]] = set()
    for cut in plan.cuts:
        members = linked.get(cut.group, frozenset([cut.group]))
        if not cut.drop or members in tried:
            continue
        tried.add(members)
        cuts = tuple(c for c in plan.cuts if c.group in members)
        held = tuple(gid for gid in plan.held if gid in members)
        alone = plan.model_copy(update={"cuts": cuts, "held": held})
        try:
            dry_run(model, alone, graph)
        except (PlanError, RewriteError) as err:
            reason = str(err).splitlines()[0]
            failing.update(dict.fromkeys(members, reason))
    return failing
