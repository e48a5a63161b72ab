"""Bias compensation: the calibration means of dropped channels, recorded in the plan as
folds into the biases (or BatchNorm running means) of the layers that read them."""

from __future__ import annotations

import numpy as np

from slimgraph.criteria.data_aware import consumers
from slimgraph.graph.depgraph import DependencyGraph, Group
from slimgraph.resolve.plan import Fold

__all__ = ["compensation"]


def compensation(
    graph: DependencyGraph, groups: list[Group], drops: dict[str, list[int]]
) -> tuple[list[Fold], list[str]]:
    """What :func:`slimgraph.apply` folds for each consumer that loses inputs: the
    calibration means of its dropped input indices, into its bias (``bias += W[:,
    dropped] @ mean``, a kernel's taps summed) or, for a bias-free layer that a BatchNorm
    reads directly, out of that BatchNorm's running mean; and the consumers with neither."""
    modules = dict(graph.model.named_modules())
    folds: list[Fold] = []
    unbiased: list[str] = []
    for g in groups:
        if not drops.get(g.id):
            continue
        for slot, name, _ in consumers(graph, g):
            stats = graph.activations[name]
            if getattr(modules[name], "bias", None) is not None:
                into = f"{name}.bias"
            elif stats.norm is not None:
                into = f"{stats.norm}.running_mean"
            else:
                unbiased.append(name)
                continue
            info = graph.slots[slot]
            dropped = np.flatnonzero(np.isin(graph.unit_index(g, slot), drops[g.id]))
            means = tuple(stats.mean[dropped].tolist())
            folds.append(Fold(reads=f"{info.target}:{info.dim}", into=into, means=means))
    return folds, unbiased
