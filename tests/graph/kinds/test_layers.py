"""Kinds ``conv``, ``conv_transpose``, ``linear``, ``matmul``, ``addmm`` and ``einsum``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimgraph as sg
from tests.oracles import assert_dead_units_drop_exactly, assert_slims, frozen_line, prunable

# -- conv: grouped units are offsets in every group or whole groups; kernels carry none.


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


# -- addmm: a weight stored (in, out), as transformers' Conv1D.


X_SEQ = torch.randn(2, 5, 4)


SIX = list(range(6))


class GPT2Like(nn.Module):
    """``addmm(bias, x, w)`` with ``w`` stored (in, out), as transformers' Conv1D."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(4, 6))
        self.b1 = nn.Parameter(torch.randn(6))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y = torch.addmm(self.b1, x.reshape(-1, 4), self.w1).view(*x.shape[:-1], -1)
        return self.head(torch.relu(y))


def test_addmm_couples_the_out_columns_of_its_weight() -> None:
    graph = sg.trace(GPT2Like(), (X_SEQ,))
    assert prunable(graph) == {"w1:1": 6}
    assert graph.unit_map("w1:1") == {"w1:1": SIX, "b1:0": SIX, "head.weight:1": SIX}
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        GPT2Like(), X_SEQ, {"w1:1": ([0, 3, 5], ["w1:1", "b1:0"])}
    )
    assert slim.w1.shape == (4, 3)


# -- matmul and einsum: attention written by hand couples shared letters.


X_TOKENS = torch.randn(2, 5, 3)  # batch, tokens, features


class MatmulAttention(nn.Module):
    """softmax(q @ k^T) then einsum with v: no scale, so q/k stay exact."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(3, 8)
        self.k = nn.Linear(3, 8)
        self.v = nn.Linear(3, 6)
        self.o = nn.Linear(6, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2), -1)
        return self.head(self.o(torch.einsum("bij,bjd->bid", scores, self.v(x))))


def test_matmul_and_einsum_couple_shared_letters() -> None:
    graph = sg.trace(MatmulAttention(), (X_TOKENS,))
    assert prunable(graph) == {"q.weight:0": 8, "v.weight:0": 6, "o.weight:0": 4}
    eight, six = list(range(8)), list(range(6))
    assert graph.unit_map("q.weight:0") == {
        "q.weight:0": eight,
        "q.bias:0": eight,
        "k.weight:0": eight,
        "k.bias:0": eight,
    }
    assert graph.unit_map("v.weight:0") == {"v.weight:0": six, "v.bias:0": six, "o.weight:1": six}
    assert graph.group("q.weight:0").exact and graph.group("v.weight:0").exact


def test_dead_query_key_and_value_units_drop_exactly() -> None:
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        MatmulAttention(),
        X_TOKENS,
        {
            "q.weight:0": ([0, 5], ["q.weight:0", "q.bias:0"]),  # dead in q alone is enough
            "v.weight:0": ([3], ["v.weight:0", "v.bias:0"]),
        },
    )
    assert (slim.q.out_features, slim.k.out_features, slim.v.out_features) == (6, 6, 5)
    assert slim.o.in_features == 5


# -- conv_transpose: weight (in, out/groups, k...); a plain one passes both channel groups.


class Upsample(nn.Module):
    """conv -> relu -> transposed conv (stride 2) -> relu -> conv."""

    def __init__(self, groups: int = 1) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2, groups=groups)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.up(torch.relu(self.a(x)))))


def test_transposed_conv_reads_dim_0_and_writes_dim_1_of_its_weight() -> None:
    graph = sg.trace(Upsample(), (X,))
    assert prunable(graph) == {"a.weight:0": 8, "up.weight:1": 4}
    eight, four = list(range(8)), list(range(4))
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": eight,
        "a.bias:0": eight,
        "up.weight:0": eight,
    }
    assert graph.unit_map("up.weight:1") == {
        "up.weight:1": four,
        "up.bias:0": four,
        "head.weight:1": four,
    }
    assert graph.group("a.weight:0").exact and graph.group("up.weight:1").exact
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        Upsample(),
        X,
        {
            "a.weight:0": ([0, 5], ["a.weight:0", "a.bias:0"]),
            "up.weight:1": ([1], ["up.weight:1", "up.bias:0"]),
        },
    )
    assert (slim.a.out_channels, slim.up.in_channels) == (6, 6)
    assert (slim.up.out_channels, slim.head.in_channels) == (3, 3)


def test_grouped_transposed_conv_freezes_what_it_touches() -> None:
    graph = sg.trace(Upsample(groups=2), (X,))
    assert prunable(graph) == {}
    assert frozen_line(graph, "a.weight:0") == (
        "  frozen by output relu dim 1 (aten.relu.default): "
        "grouped transposed convolution is not pruned through"
    )
