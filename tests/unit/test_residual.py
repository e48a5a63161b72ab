"""Residual adds couple the channels of both branches, out of place and in place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimgraph as sg

from ._oracle import assert_dead_units_drop_exactly, assert_slims, prunable


class Residual(nn.Module):
    """stem -> conv -> bn -> relu -> conv, plus the stem as skip, then a head."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.stem = nn.Conv2d(3, 8, 1)
        self.conv1 = nn.Conv2d(8, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.stem(x)
        y = self.conv2(torch.relu(self.bn(self.conv1(skip))))
        if self.inplace:
            y += skip
        else:
            y = y + skip
        return self.head(y)


class NoSkip(Residual):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(torch.relu(self.bn(self.conv1(self.stem(x))))))


X = torch.randn(2, 3, 6, 6)
EIGHT = list(range(8))
SIX = list(range(6))


@pytest.mark.parametrize("inplace", [False, True], ids=["add", "add_"])
def test_add_couples_both_branches(inplace: bool) -> None:
    graph = sg.trace(Residual(inplace), (X,))
    assert prunable(graph) == {"stem.weight:0": 8, "conv1.weight:0": 6}
    assert graph.unit_map("stem.weight:0") == {
        "stem.weight:0": EIGHT,
        "stem.bias:0": EIGHT,
        "conv1.weight:1": EIGHT,
        "conv2.weight:0": EIGHT,
        "conv2.bias:0": EIGHT,
        "head.weight:1": EIGHT,
    }
    assert graph.unit_map("conv1.weight:0") == {
        "conv1.weight:0": SIX,
        "conv1.bias:0": SIX,
        "bn.weight:0": SIX,
        "bn.bias:0": SIX,
        "conv2.weight:1": SIX,
        "bn.running_mean:0": SIX,
        "bn.running_var:0": SIX,
    }
    assert all(g.exact for g in graph.prunable_groups())


def test_without_skip_the_branches_are_separate_groups() -> None:
    graph = sg.trace(NoSkip(False), (X,))
    assert prunable(graph) == {"stem.weight:0": 8, "conv1.weight:0": 6, "conv2.weight:0": 8}
    assert graph.unit_map("stem.weight:0") == {
        "stem.weight:0": EIGHT,
        "stem.bias:0": EIGHT,
        "conv1.weight:1": EIGHT,
    }


@pytest.mark.parametrize("inplace", [False, True], ids=["add", "add_"])
def test_dead_residual_channels_drop_exactly(inplace: bool) -> None:
    torch.manual_seed(0)
    producers = ["stem.weight:0", "stem.bias:0", "conv2.weight:0", "conv2.bias:0"]
    bn = ["conv1.weight:0", "conv1.bias:0", "bn.weight:0", "bn.bias:0"]
    slim = assert_dead_units_drop_exactly(
        Residual(inplace),
        X,
        {"stem.weight:0": ([1, 4, 6], producers), "conv1.weight:0": ([0, 5], bn)},
    )
    assert (slim.stem.out_channels, slim.conv2.out_channels, slim.head.in_channels) == (5, 5, 5)
    assert (slim.conv1.out_channels, slim.bn.num_features, slim.conv2.in_channels) == (4, 4, 4)


@pytest.mark.parametrize("inplace", [False, True], ids=["add", "add_"])
def test_residual_slims_end_to_end(inplace: bool) -> None:
    torch.manual_seed(0)
    result = assert_slims(Residual(inplace).eval(), X)
    slim = result.model
    assert slim.stem.out_channels == slim.conv2.out_channels == slim.head.in_channels == 4
    assert slim.conv1.out_channels == slim.bn.num_features == 3
