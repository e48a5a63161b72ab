"""Concatenation: input k's index i is the output's index offset_k + i along the cat dim."""

from __future__ import annotations

import torch
from torch import nn

import slimgraph as sg

from ._oracle import assert_dead_units_drop_exactly, assert_slims, prunable

X = torch.randn(2, 3, 6, 6)


class TwoConvCat(nn.Module):
    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 6 if dim == 1 else 4, 3, padding=1)
        self.head = nn.Conv2d(10 if dim == 1 else 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x), self.b(x)], self.dim))


class Dense(nn.Module):
    """DenseNet: each layer's output is appended to everything before it (input included)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(7, 2, 3, padding=1)
        self.head = nn.Conv2d(9, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([x, torch.relu(self.a(x))], 1)
        y = torch.cat([y, torch.relu(self.b(y))], 1)
        return self.head(y)


class Fire(nn.Module):
    """SqueezeNet fire module: squeeze, then 1x1 and 3x3 expands side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(3, 4, 1)
        self.expand1 = nn.Conv2d(4, 5, 1)
        self.expand3 = nn.Conv2d(4, 3, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.squeeze(x))
        y = torch.cat([torch.relu(self.expand1(s)), torch.relu(self.expand3(s))], 1)
        return self.head(y)


class SelfCat(nn.Module):
    """The same tensor twice: channel c is the output's c and c + C."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.head(torch.cat([y, y], 1))


def test_channel_cat_offsets_the_second_input() -> None:
    graph = sg.trace(TwoConvCat(), (X,))
    assert prunable(graph) == {"a.weight:0": 10}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": [0, 1, 2, 3],
        "a.bias:0": [0, 1, 2, 3],
        "b.weight:0": [4, 5, 6, 7, 8, 9],
        "b.bias:0": [4, 5, 6, 7, 8, 9],
        "head.weight:1": list(range(10)),
    }


def test_cat_on_height_couples_channels_one_to_one() -> None:
    graph = sg.trace(TwoConvCat(dim=2), (X,))
    assert prunable(graph) == {"a.weight:0": 4}
    same = [0, 1, 2, 3]
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": same,
        "a.bias:0": same,
        "b.weight:0": same,
        "b.bias:0": same,
        "head.weight:1": same,
    }


def test_dense_block_keeps_the_model_input_slice_frozen() -> None:
    graph = sg.trace(Dense(), (X,))
    assert prunable(graph) == {"a.weight:0": 6}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": [0, 1, 2, 3],
        "a.weight:1": [-1, -1, -1],
        "a.bias:0": [0, 1, 2, 3],
        "b.weight:0": [4, 5],
        "b.weight:1": [-1, -1, -1, 0, 1, 2, 3],
        "b.bias:0": [4, 5],
        "head.weight:1": [-1, -1, -1, 0, 1, 2, 3, 4, 5],
    }
    assert graph.group("a.weight:0").frozen == {
        "model input x dim 1 (x)": "model input: its shape is fixed by the caller"
    }


def test_fire_expands_share_one_group_and_squeeze_its_own() -> None:
    graph = sg.trace(Fire(), (X,))
    assert prunable(graph) == {"squeeze.weight:0": 4, "expand1.weight:0": 8}
    assert graph.unit_map("squeeze.weight:0") == {
        "squeeze.weight:0": [0, 1, 2, 3],
        "squeeze.bias:0": [0, 1, 2, 3],
        "expand1.weight:1": [0, 1, 2, 3],
        "expand3.weight:1": [0, 1, 2, 3],
    }
    assert graph.unit_map("expand1.weight:0") == {
        "expand1.weight:0": [0, 1, 2, 3, 4],
        "expand1.bias:0": [0, 1, 2, 3, 4],
        "expand3.weight:0": [5, 6, 7],
        "expand3.bias:0": [5, 6, 7],
        "head.weight:1": list(range(8)),
    }


def test_self_cat_unit_appears_twice_in_the_consumer() -> None:
    graph = sg.trace(SelfCat(), (X,))
    assert prunable(graph) == {"a.weight:0": 4}
    assert graph.unit_map("a.weight:0")["head.weight:1"] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_dead_concat_channels_drop_exactly() -> None:
    torch.manual_seed(0)
    producers = ["expand1.weight:0", "expand1.bias:0", "expand3.weight:0", "expand3.bias:0"]
    slim = assert_dead_units_drop_exactly(Fire(), X, {"expand1.weight:0": ([1, 4, 6], producers)})
    assert (slim.expand1.out_channels, slim.expand3.out_channels) == (3, 2)
    assert slim.head.in_channels == 5


def test_dead_dense_channels_drop_exactly() -> None:
    torch.manual_seed(0)
    producers = ["a.weight:0", "a.bias:0", "b.weight:0", "b.bias:0"]
    slim = assert_dead_units_drop_exactly(Dense(), X, {"a.weight:0": ([0, 5], producers)})
    assert (slim.a.out_channels, slim.b.in_channels, slim.b.out_channels) == (3, 6, 1)
    assert slim.head.in_channels == 7


def test_self_cat_dead_channels_drop_exactly() -> None:
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        SelfCat(), X, {"a.weight:0": ([2], ["a.weight:0", "a.bias:0"])}
    )
    assert (slim.a.out_channels, slim.head.in_channels) == (3, 6)


def test_concat_models_slim_end_to_end() -> None:
    torch.manual_seed(0)
    for model in (TwoConvCat(), TwoConvCat(dim=2), Dense(), Fire(), SelfCat()):
        assert_slims(model, X)
