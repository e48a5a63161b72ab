"""Say why a plan that was asked to drop units drops none.

A plan that drops nothing gives back the model unchanged; when the config asked for
pruning, that is almost always a surprise: ``round_to`` or ``min_keep`` larger than every
group, or no group left to cut (the graph froze them all, or ``ignore``, ``skip`` and
``prune_residual=False`` left none).
"""

from __future__ import annotations

import warnings

from slimgraph.criteria.config import PruneConfig
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.planner.choose import channel_budget
from slimgraph.resolve.plan import PruningPlan

__all__ = ["asks_to_drop", "warn_if_nothing_dropped", "why_nothing_dropped"]


def asks_to_drop(config: PruneConfig) -> bool:
    """Whether ``config`` asks for any unit to go (a ratio, an override or a budget)."""
    budgets = (config.target_macs, config.target_params)
    return (
        config.ratio > 0
        or any(r > 0 for r in config.overrides.values())
        or any(b is not None and b < 1 for b in budgets)
    )


def why_nothing_dropped(graph: DependencyGraph, config: PruneConfig, plan: PruningPlan) -> str:
    """Why ``plan`` drops no unit although ``config`` asks it to ("" when it drops some,
    or when the ratio is simply too small for the groups).

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2))
    >>> graph = sg.trace(net, (torch.randn(1, 4),))
    >>> config = sg.PruneConfig(ratio=0.5, round_to=16)
    >>> why_nothing_dropped(graph, config, sg.plan(graph, ratio=0.0))[:57]
    'round_to=16 keeps every channel of all 1 group(s) planned'
    """
    if plan.dropped or not asks_to_drop(config):
        return ""
    planned = [graph.group(c.group) for c in plan.cuts]
    if not planned:
        frozen = sum(1 for g in graph.groups if not g.prunable)
        skipped = len(plan.skipped)
        ignored = max(0, len(graph.prunable_groups()) - skipped)
        return (
            f"no group can lose units: {frozen} frozen by the graph (graph.explain says why), "
            f"{skipped} skipped (plan.skipped says why), {ignored} ignored by ignore=[...]"
        )
    settings = [
        f"{k}={getattr(config, k)}" for k in ("round_to", "min_keep") if getattr(config, k) > 1
    ]
    if not settings:
        return ""
    relaxed = config.model_copy(update={"round_to": 1, "min_keep": 1})
    channels = [int(graph.channel_counts(g).sum()) for g in planned]
    ratios = [config.ratio_for(g.modules) for g in planned]
    if not any(channel_budget(n, r, relaxed) for n, r in zip(channels, ratios)):
        return ""
    return (
        f"{' and '.join(settings)} keeps every channel of all {len(planned)} group(s) planned "
        f"(the widest has {max(channels)} channels); lower it or raise the ratio"
    )


def warn_if_nothing_dropped(
    graph: DependencyGraph, config: PruneConfig, plan: PruningPlan, stacklevel: int
) -> None:
    """Warn with :func:`why_nothing_dropped`'s reason, if there is one."""
    reason = why_nothing_dropped(graph, config, plan)
    if reason:
        warnings.warn(
            f"the plan drops nothing: {reason}; the model would come back unchanged",
            stacklevel=stacklevel + 1,
        )
