"""Convolutions: grouped units are offsets in every group or whole groups; spatial dims carry no channels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimgraph as sg

from ._oracle import assert_dead_units_drop_exactly, assert_slims, prunable

X = torch.randn(2, 3, 6, 6)


class Grouped(nn.Module):
    """1x1 conv -> grouped 3x3 conv -> 1x1 head."""

    def __init__(self, width: int, out: int, groups: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, width, 1)
        self.g = nn.Conv2d(width, out, 3, padding=1, groups=groups)
        self.b = nn.Conv2d(out, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.g(torch.relu(self.a(x)))))


class GroupedThenDepthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.b = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.dw(self.g(self.a(x))))


PAIRS = [0, 0, 1, 1, 2, 2, 3, 3]
PARITY = [0, 1, 0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize(
    ("width", "out", "groups", "produced", "grouped"),
    [
        (8, 8, 8, list(range(8)), list(range(8))),  # depthwise
        (8, 16, 8, list(range(8)), [u for u in range(8) for _ in range(2)]),  # multiplier 2
        (8, 16, 4, PAIRS, [u for u in range(4) for _ in range(4)]),
    ],
    ids=["depthwise", "depthwise-x2", "groups4-x2"],
)
def test_unit_is_a_whole_group(width, out, groups, produced, grouped) -> None:
    graph = sg.trace(Grouped(width, out, groups), (X,))
    assert prunable(graph) == {"a.weight:0": groups}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": produced,
        "a.bias:0": produced,
        "g.weight:0": grouped,
        "g.bias:0": grouped,
        "b.weight:1": grouped,
    }
    assert graph.group("a.weight:0").exact


def test_equal_group_widths_give_one_unit_per_offset() -> None:
    # 4 groups of 2 in, 2 out: unit j is offset j of every group, in and out.
    graph = sg.trace(Grouped(8, 8, 4), (X,))
    assert prunable(graph) == {"a.weight:0": 2}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": PARITY,
        "a.bias:0": PARITY,
        "g.weight:0": PARITY,
        "g.weight:1": [0, 1],
        "g.bias:0": PARITY,
        "b.weight:1": PARITY,
    }
    assert graph.group("a.weight:0").exact


def test_grouped_filter_width_is_frozen() -> None:
    graph = sg.trace(Grouped(8, 16, 4), (X,))
    assert graph.group("g.weight:1").size == 0
    assert graph.group("g.weight:1").frozen == {
        "g.weight dim 1": "grouped convolution keeps its channels per group"
    }
    assert "frozen by g.weight dim 1: grouped convolution keeps its channels per group" in (
        graph.explain("g.weight:1")
    )


def test_depthwise_after_grouped_takes_the_coarser_units() -> None:
    graph = sg.trace(GroupedThenDepthwise(), (X,))
    assert prunable(graph) == {"a.weight:0": 2}
    assert graph.unit_map("a.weight:0") == {
        "g.weight:1": [0, 1],
        **{
            key: PARITY
            for key in (
                "a.weight:0",
                "a.bias:0",
                "g.weight:0",
                "g.bias:0",
                "dw.weight:0",
                "dw.bias:0",
                "b.weight:1",
            )
        },
    }


@pytest.mark.parametrize(
    ("width", "out", "groups", "units", "kept"),
    [(8, 8, 8, [0, 5, 6], (5, 5, 5)), (8, 16, 4, [1, 3], (4, 8, 2)), (12, 12, 4, [1], (8, 8, 4))],
    ids=["depthwise", "groups4-x2", "groups4-offsets"],
)
def test_dead_groups_drop_exactly(width, out, groups, units, kept) -> None:
    torch.manual_seed(0)
    producers = ["a.weight:0", "a.bias:0", "g.weight:0", "g.bias:0"]
    slim = assert_dead_units_drop_exactly(
        Grouped(width, out, groups), X, {"a.weight:0": (units, producers)}
    )
    assert (slim.a.out_channels, slim.g.out_channels, slim.g.groups) == kept
    assert slim.g.in_channels == slim.a.out_channels
    assert slim.a.groups == slim.b.groups == 1


def test_slimming_narrows_groups_halves_depthwise_and_plain_convs_keep_one() -> None:
    torch.manual_seed(0)
    slim = assert_slims(GroupedThenDepthwise(), X).model
    assert (slim.a.out_channels, slim.g.out_channels, slim.dw.out_channels) == (4, 4, 4)
    assert (slim.g.groups, slim.dw.groups) == (4, 4)
    assert slim.g.weight.shape == (4, 1, 3, 3)
    assert slim.a.groups == slim.b.groups == 1


class ReadsWidth(nn.Module):
    """A Linear over the last (width) dim of a conv output: the width is fixed by the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(6, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(self.conv(x))))


def test_conv_output_width_is_not_prunable() -> None:
    graph = sg.trace(ReadsWidth(), (X,))
    assert prunable(graph) == {"fc.weight:0": 5}
    assert graph.group("fc.weight:1").size == 0
