"""Torch-Pruning, the peer the differential test and the benchmarks compare against, set
up one way: ``MetaPruner`` at local scope, the last ``nn.Linear`` (the classifier) left
whole, as a user of Torch-Pruning would write it."""

from __future__ import annotations

from typing import Any

from torch import nn


def meta_pruner(
    model: nn.Module, x: Any, ratio: float, importance: str = "l2", **options: Any
) -> Any:
    """Torch-Pruning's ``MetaPruner`` over ``model`` (cut in place by ``.step()``), local
    scope at ``ratio``; ``importance`` is "l2" (``GroupMagnitudeImportance(p=2)``) or
    "taylor" (``GroupTaylorImportance``, which reads the ``.grad`` already summed);
    ``options`` go to ``MetaPruner`` as they are (``round_to=...``)."""
    # torch-pruning is a test extra: imported here so that modules importing this one
    # (collected by pytest for doctests, run as scripts) load without it.
    import torch_pruning as tp

    scores = {
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
    }
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return tp.pruner.MetaPruner(
        model,
        x,
        importance=scores[importance](),
        pruning_ratio=ratio,
        ignored_layers=[classifier],
        global_pruning=False,
        **options,
    )
