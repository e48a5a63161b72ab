"""Config + graph + scores -> a validated :class:`~slimgraph.PruningPlan`."""

from slimgraph.planner.build import plan

__all__ = ["plan"]
