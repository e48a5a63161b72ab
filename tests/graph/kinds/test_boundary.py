"""Kinds ``filled``, ``creation`` and ``frozen``: a tensor of one repeated value follows
the dims it meets (the rewrite sizes it again from the attribute it was built from); one
made from constant sizes (arange) freezes them; an op the table declares frozen freezes
everything it touches, with the table's reason."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimgraph as sg
from tests.oracles import assert_dead_units_drop_exactly, frozen_line, prunable

X = torch.randn(2, 5, 4)
SIX = list(range(6))

# Each combines y (B, N, C) with a filled tensor sized from ``a.out_features`` so that a
# dead channel of y stays dead; on y's device, as the meta dry run of the rewrite needs.
FILLED = {
    "zeros": lambda y, c: y + torch.zeros(*y.shape[:2], c, device=y.device, dtype=y.dtype),
    "ones": lambda y, c: y * torch.ones(*y.shape[:2], c, device=y.device, dtype=y.dtype),
    "full": lambda y, c: y * torch.full((*y.shape[:2], c), 0.5, device=y.device, dtype=y.dtype),
    "new_zeros": lambda y, c: y + y.new_zeros(1, 1, c),
    "new_ones": lambda y, c: y * y.new_ones(1, 1, c),
}


class Filled(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(FILLED[self.how](self.a(x), self.a.out_features))


@pytest.mark.parametrize("how", sorted(FILLED))
def test_filled_tensor_follows_the_channels_it_meets(how: str) -> None:
    graph = sg.trace(Filled(how), (X,))
    assert prunable(graph) == {"a.weight:0": 6}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": SIX,
        "a.bias:0": SIX,
        "head.weight:1": SIX,
    }
    assert graph.group("a.weight:0").exact


@pytest.mark.parametrize("how", sorted(FILLED))
def test_dead_channels_drop_exactly_past_a_filled_tensor(how: str) -> None:
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        Filled(how), X, {"a.weight:0": ([0, 2], ["a.weight:0", "a.bias:0"])}
    )
    assert (slim.a.out_features, slim.head.in_features) == (4, 4)


class Positions(nn.Module):
    """y + arange(n) over ``dim`` (1: positions; 2: channels)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.a = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y = self.a(x)
        shape = [1, 1, 1]
        shape[self.dim] = y.shape[self.dim]
        ramp = torch.arange(y.shape[self.dim], device=y.device, dtype=y.dtype)
        return self.head(y + ramp.view(shape))


def test_created_positions_leave_the_channels_prunable() -> None:
    graph = sg.trace(Positions(1), (X,))
    assert prunable(graph) == {"a.weight:0": 6}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": SIX,
        "a.bias:0": SIX,
        "head.weight:1": SIX,
    }
    assert "created with constant shape by aten.arange.default" in set(graph.frozen_slots.values())


def test_created_channels_freeze_the_channels_they_meet() -> None:
    graph = sg.trace(Positions(2), (X,))
    assert prunable(graph) == {}
    assert frozen_line(graph, "a.weight:0") == (
        "  frozen by output arange dim 0 (aten.arange.default): "
        "created with constant shape by aten.arange.default"
    )


class PrefixSum(nn.Module):
    """A cumulative sum over the tokens (attention-mask bookkeeping) -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.a(x).cumsum(1))


def test_a_declared_frozen_op_freezes_every_dim_it_touches_with_the_tables_reason() -> None:
    graph = sg.trace(PrefixSum(), (X,))
    assert prunable(graph) == {}
    assert frozen_line(graph, "a.weight:0") == (
        "  frozen by output linear dim 2 (aten.linear.default in a): aten.cumsum.default: "
        "prefix sums mix positions (attention-mask bookkeeping)"
    )
