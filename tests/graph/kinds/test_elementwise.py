"""Kinds ``add``, ``elementwise``, ``expand`` and ``repeat``: residual adds couple both
branches, broadcast gates couple what they broadcast over, tiled dims freeze."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import slimgraph as sg
from tests.oracles import assert_dead_units_drop_exactly, assert_slims, prunable

# -- add: residual adds couple the channels of both branches, out of place and in place.


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


# -- broadcast multiply: a per-channel gate couples C, a spatial gate couples nothing.


class SqueezeExcite(nn.Module):
    """y * sigmoid(fc2(relu(fc1(pool(y))))): the gate is [B, C, 1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Conv2d(8, 4, 1)
        self.fc2 = nn.Conv2d(4, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        return self.head(y * gate)


class SpatialGate(nn.Module):
    """y * sigmoid(conv(y)) with a [B, 1, H, W] gate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.spatial = nn.Conv2d(8, 1, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.head(y * torch.sigmoid(self.spatial(y)))


def test_channel_gate_couples_its_channels_with_the_gated_tensor() -> None:
    graph = sg.trace(SqueezeExcite(), (X,))
    assert prunable(graph) == {"conv.weight:0": 8, "fc1.weight:0": 4}
    assert graph.unit_map("conv.weight:0") == {
        "conv.weight:0": EIGHT,
        "conv.bias:0": EIGHT,
        "fc1.weight:1": EIGHT,
        "fc2.weight:0": EIGHT,
        "fc2.bias:0": EIGHT,
        "head.weight:1": EIGHT,
    }
    assert graph.unit_map("fc1.weight:0") == {
        "fc1.weight:0": [0, 1, 2, 3],
        "fc1.bias:0": [0, 1, 2, 3],
        "fc2.weight:1": [0, 1, 2, 3],
    }
    assert graph.group("conv.weight:0").exact


def test_spatial_gate_couples_no_channels() -> None:
    graph = sg.trace(SpatialGate(), (X,))
    assert prunable(graph) == {"conv.weight:0": 8}
    # The gate's single channel is broadcast: it ties conv's channels to no producer.
    assert graph.unit_map("conv.weight:0") == {
        "conv.weight:0": EIGHT,
        "conv.bias:0": EIGHT,
        "spatial.weight:1": EIGHT,
        "head.weight:1": EIGHT,
    }
    gate = graph.group("spatial.weight:0")
    assert (gate.size, gate.params) == (1, [("spatial.weight", 0), ("spatial.bias", 0)])


def test_dead_gated_channels_drop_exactly() -> None:
    torch.manual_seed(0)
    # A dead channel: conv makes zeros, and the gate of a zero is irrelevant.
    slim = assert_dead_units_drop_exactly(
        SqueezeExcite(),
        X,
        {
            "conv.weight:0": ([0, 3, 7], ["conv.weight:0", "conv.bias:0"]),
            "fc1.weight:0": ([2], ["fc1.weight:0", "fc1.bias:0"]),
        },
    )
    assert (slim.conv.out_channels, slim.fc1.in_channels, slim.fc2.out_channels) == (5, 5, 5)
    assert (slim.fc1.out_channels, slim.fc2.in_channels) == (3, 3)


def test_gates_slim_end_to_end() -> None:
    torch.manual_seed(0)
    assert assert_slims(SqueezeExcite(), X).model.fc2.out_channels == 4
    assert assert_slims(SpatialGate(), X).model.spatial.in_channels == 4


# -- repeat: a broadcast dim follows, a tiled one freezes.


X_SEQ = torch.randn(2, 5, 4)


class Tiled(nn.Module):
    """A (1, 1, C) token repeated over the batch, and a stream tiled twice along
    channels: the broadcast dim follows, the tiled one freezes."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.token = nn.Parameter(torch.randn(1, 1, 6))
        self.b = nn.Linear(4, 3)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y = torch.cat([self.token.repeat(x.shape[0], 1, 1), self.a(x)], dim=1)
        return self.head(y[:, 1:] + self.b(x).repeat(1, 1, 2))


def test_repeat_broadcasts_size_one_dims_and_freezes_tiled_ones() -> None:
    graph = sg.trace(Tiled(), (X_SEQ,))
    assert prunable(graph) == {}  # a's channels meet b's tiled ones
    assert "tiled 2 times by repeat" in graph.explain("a.weight:0")
    assert graph.unit_map("a.weight:0")["token:2"] == [-1] * 6
