"""The oracles shared by the tests: group tables, hand-made plans, dead units.

The dead-unit oracle: zero every slice a unit writes (or, for a plan, every slice of its
dropped units), then drop exactly those units; on exact paths the slim model computes what
the zeroed model computes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

import slimgraph as sg
from slimgraph.resolve.indices import kept_shapes


def prunable(graph: sg.DependencyGraph) -> dict[str, int]:
    """Group id -> unit count, for every group that can lose units."""
    return {g.id: g.size for g in graph.prunable_groups()}


def frozen_line(graph: sg.DependencyGraph, slot: str) -> str:
    """The line of ``graph.explain(slot)`` that says what froze the group of ``slot``."""
    (line,) = [ln for ln in graph.explain(slot).splitlines() if ln.startswith("  frozen by ")]
    return line


def drop_plan(graph: sg.DependencyGraph, drops: Mapping[str, Sequence[int]]) -> sg.PruningPlan:
    """A plan that drops exactly ``drops`` (group id -> unit indices) and nothing else."""
    base = sg.plan(graph, ratio=0.0)
    cuts = tuple(
        sg.GroupCut(group=gid, size=graph.group(gid).size, drop=tuple(sorted(units)))
        for gid, units in drops.items()
    )
    return base.model_copy(update={"cuts": cuts})


def kill_units(
    model: nn.Module,
    graph: sg.DependencyGraph,
    group_id: str,
    units: Sequence[int],
    producers: Sequence[str],
) -> None:
    """Zero the indices of ``units`` in the ``producers`` ("param:dim") of a group."""
    unit_map = graph.unit_map(group_id)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key in producers:
            name, _, dim = key.rpartition(":")
            idx = [i for i, u in enumerate(unit_map[key]) if u in units]
            assert idx, f"{key} holds none of the units {list(units)}"
            params[name].index_fill_(int(dim), torch.tensor(idx), 0.0)


def kill_dropped(graph: sg.DependencyGraph, plan: sg.PruningPlan) -> None:
    """Zero every parameter slice of the plan's dropped units (the plan-wide form of
    :func:`kill_units`), in the parameters the graph was traced from."""
    params = graph.named_parameters()
    with torch.no_grad():
        for name, kept in kept_shapes(graph, plan).items():
            p = params.get(name)
            if p is None:
                continue
            for dim, keep in kept:
                gone = torch.ones(p.shape[dim], dtype=torch.bool)
                gone[torch.as_tensor(keep)] = False
                p.index_fill_(dim, gone.nonzero().flatten(), 0.0)


def randomize_norm_stats(model: nn.Module) -> None:
    """Give every BatchNorm running statistics that are not the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.5, 2.0)


def assert_dead_units_drop_exactly(
    model: nn.Module,
    x: torch.Tensor,
    kills: Mapping[str, tuple[Sequence[int], Sequence[str]]],
    **trace_options: Any,
) -> nn.Module:
    """Dead-channel oracle: zero the producers of some units, drop exactly those units,
    and the slim model's output equals the original's. ``kills`` is group id ->
    (units, producer "param:dim" keys). Returns the slim model."""
    model.eval()
    randomize_norm_stats(model)
    graph = sg.trace(model, (x,), **trace_options)
    for gid, (units, producers) in kills.items():
        kill_units(model, graph, gid, units, producers)
    with torch.no_grad():
        expected = model(x)
    plan = drop_plan(graph, {gid: units for gid, (units, _) in kills.items()})
    slim = sg.apply(model, plan, graph=graph, example_inputs=(x,)).eval()
    with torch.no_grad():
        got = slim(x)
    torch.testing.assert_close(got, expected)
    return slim


def assert_slims(model: nn.Module, x: torch.Tensor, ratio: float = 0.5) -> sg.SlimResult:
    """``sg.slim`` drops something and keeps the output shape."""
    with torch.no_grad():
        before = model(x).shape
    result = sg.slim(model, (x,), ratio=ratio)
    assert result.plan.dropped > 0
    assert result.plan.params_after < result.plan.params_before
    with torch.no_grad():
        assert result.model(x).shape == before
    assert sum(p.numel() for p in result.model.parameters()) == result.plan.params_after
    return result
