"""The plan that applies: skip the groups whose cut fails the meta dry run.

Code that hard-codes a width (``x.split(4, 1)``, ``view(b, 3, c // 3, ...)`` with a literal
group count) is invisible in the traced graph; the dry run finds the groups that trip over
it, and the plan skips them with the reason.
"""

from __future__ import annotations

import warnings

from torch import nn

from slimgraph.criteria.config import PruneConfig
from slimgraph.errors import PlanError, RewriteError
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.planner import plan as make_plan
from slimgraph.resolve.plan import PruningPlan
from slimgraph.rewrite.apply import dry_run

__all__ = ["failing_groups", "plan_that_applies"]


def plan_that_applies(model: nn.Module, graph: DependencyGraph, config: PruneConfig) -> PruningPlan:
    """``sg.plan``, then skip the groups whose cut fails the meta dry run: code
    that hard-codes a width the graph cannot see (``x.split(4, 1)``). Warns, and records
    why in ``plan.skipped``."""
    plan = make_plan(graph, config)
    try:
        dry_run(model, plan, graph)
    except RewriteError:
        skip = failing_groups(model, plan, graph)
        if not skip:
            raise
        warnings.warn(
            f"slimgraph skipped {len(skip)} group(s) because the model hard-codes their "
            f"width: {', '.join(sorted(skip)[:5])}; see plan.skipped",
            stacklevel=3,
        )
        plan = make_plan(graph, config, skip=skip)
    return plan


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
        alone = plan.model_copy(update={"cuts": tuple(c for c in plan.cuts if c.group in members)})
        try:
            dry_run(model, alone, graph)
        except (PlanError, RewriteError) as err:
            reason = str(err).splitlines()[0]
            failing.update(dict.fromkeys(members, reason))
    return failing
