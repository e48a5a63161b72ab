"""Routing statistics: how often and how strongly a mixture-of-experts router picks each
expert on calibration batches.

A *routed expert group* holds stacked expert weights (3-D parameters cut on dim 0) and
one router weight (a 2-D ``weight`` cut on dim 0: one row per expert). On each batch the
router's input ``x`` gives ``softmax(x @ router.T)``; its ``top_k`` largest entries per
token are the picks (``top_k`` read from the router module, else from the graph's
``topk``, else the config's ``num_experts_per_tok``, else 1). An expert scores the probability mass routed to it,
summed over tokens: never picked scores 0, often and strongly picked scores high.

``importance="routing"`` scores routed expert groups so and every other group by ``l2``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from slimgraph._core.batches import Selector, call_on_batch
from slimgraph._core.inputs import preserve_modes
from slimgraph._core.progress import counted
from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.registry import CRITERIA, register
from slimgraph.errors import PlanError
from slimgraph.graph.depgraph import DependencyGraph, Group

__all__ = ["collect_routing", "routed_groups"]


def routed_groups(graph: DependencyGraph) -> dict[str, str]:
    """Routed expert group id -> the name of its router weight."""
    shapes = {n: p.shape for n, p in graph.named_parameters().items()}
    found = {}
    for g in graph.prunable_groups():
        on_rows = [n for n, d in g.params if d == 0 and n in shapes]
        routers = [n for n in on_rows if len(shapes[n]) == 2 and n.endswith("weight")]
        if len(routers) == 1 and any(len(shapes[n]) == 3 for n in on_rows):
            found[g.id] = routers[0]
    return found


def _top_k(router: nn.Module, graph: DependencyGraph) -> int:
    """The router's ``top_k``; else the one k of every ``topk`` in the graph; else the
    config's ``num_experts_per_tok``; else 1."""
    k = getattr(router, "top_k", None)
    if not isinstance(k, int):
        last: dict[str, tuple[int, int]] = {}  # topk node -> (dim, size) of its last dim
        for info in graph.slots:
            if info.item == 1 and graph.node_ops.get(info.node) == "aten.topk.default":
                last[info.node] = max(last.get(info.node, (-1, 0)), (info.dim, info.size))
        ks = {size for _, size in last.values()}
        k = ks.pop() if len(ks) == 1 else None
    if not isinstance(k, int):
        k = getattr(getattr(graph.model, "config", None), "num_experts_per_tok", None)
    return k if isinstance(k, int) and k > 0 else 1


def collect_routing(
    graph: DependencyGraph, batches: Iterable[Any], inputs: Selector | None = None
) -> dict[str, np.ndarray]:
    """Router weight name -> per expert (router row), the routed probability mass summed
    over every token of ``batches``."""
    model, routers = graph.model, routed_groups(graph)
    modules = dict(model.named_modules())
    mass: dict[str, np.ndarray] = {}
    hooks = []

    def observe(name: str, router: nn.Module, weight: torch.Tensor, k: int):
        def hook(module: nn.Module, args: tuple) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            x = args[0].reshape(-1, weight.shape[1]).to(weight.dtype)
            probs = F.softmax(F.linear(x, weight).double(), dim=-1)
            top = probs.topk(min(k, probs.shape[-1]), dim=-1)
            picked = torch.zeros_like(probs).scatter_(-1, top.indices, top.values)
            mass[name] = mass.get(name, 0) + picked.sum(0).cpu().numpy()

        return hook

    for name in routers.values():
        owner, _, leaf = name.rpartition(".")
        router = modules[owner]
        weight = getattr(router, leaf)
        hook = observe(name, router, weight, _top_k(router, graph))
        hooks.append(router.register_forward_pre_hook(hook))
    used = 0
    try:
        with preserve_modes(model), torch.no_grad():
            model.eval()
            for batch in counted(batches, "calibration batches (routing)"):
                call_on_batch(model, batch, inputs)
                used += 1
    finally:
        for h in hooks:
            h.remove()
    if not used:
        raise PlanError("calibration gave no batches; pass an iterable of model inputs")
    return mass


@register("routing", needs=("routing",))
def routing(graph: DependencyGraph, groups: list[Group], config: PruneConfig) -> dict[str, Any]:
    """Routed expert groups: the probability mass the router sends each expert on the
    calibration batches; every other group: ``l2``."""
    mass = graph.routing
    if mass is None:
        raise PlanError(
            "importance='routing' needs calibration inputs: pass calibration=batches to "
            "sg.slim (or sg.calibrate(graph, batches, config=config) to sg.plan)"
        )
    routers = routed_groups(graph)
    scores, plain = {}, []
    for g in groups:
        name = routers.get(g.id)
        if name is None or name not in mass:
            plain.append(g)
            continue
        slot = next(
            s for s in g.slots if graph.slots[s].target == name and graph.slots[s].role == "param"
        )
        unit, values = graph.unit_index(g, slot), np.zeros(g.size)
        np.add.at(values, unit[unit >= 0], mass[name][unit >= 0])
        scores[g.id] = values
    return scores | (CRITERIA["l2"](graph, plain, config) if plain else {})
