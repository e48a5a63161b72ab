"""Importance criteria by name: one score per unit of a group (low scores are dropped first).

A criterion is a callable ``(graph, groups, config) -> {group id: scores}`` registered by
name; :class:`~slimgraph.criteria.config.PruneConfig` refers to it as ``importance="name"``.
Scores say which units matter, not how many go: a plan for a budget (``target_macs``, …)
calls the criterion once and tries every ratio on the same scores.

>>> from slimgraph.criteria import CRITERIA
>>> sorted(CRITERIA)[:3], CRITERIA["taylor"].needs
(['activation', 'bn_scale', 'fluctuation'], ('gradients',))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from slimgraph.criteria.config import PruneConfig
    from slimgraph.graph.depgraph import DependencyGraph, Group

__all__ = ["CRITERIA", "Criterion", "register"]

Criterion = Callable[["DependencyGraph", list["Group"], "PruneConfig"], dict[str, np.ndarray]]
CRITERIA: dict[str, Criterion] = {}


def register(name: str, needs: tuple[str, ...] = ()) -> Callable[[Criterion], Criterion]:
    """Register a criterion under ``name`` (a later registration replaces an earlier one):
    a function, or an instance of a class with ``__call__(graph, groups, config)``.
    ``needs`` says what it reads besides the weights: ``"gradients"`` (``.grad`` on the
    parameters, per-batch terms on ``graph.taylor``) and/or ``"activations"``
    (``graph.activations``); calibration measures them first (:func:`slimgraph.calibrate`),
    and ``sg.plan`` passes the criterion a view of the graph that carries them
    (:meth:`~slimgraph.graph.views.GraphViews.calibrated`)."""

    def wrap(fn: Criterion) -> Criterion:
        fn.needs = needs
        CRITERIA[name] = fn
        return fn

    return wrap
