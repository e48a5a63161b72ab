"""Broadcast multiply: a per-channel gate couples C, a spatial gate couples nothing."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import slimgraph as sg

from ._oracle import assert_dead_units_drop_exactly, assert_slims, prunable

X = torch.randn(2, 3, 6, 6)
EIGHT = list(range(8))


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
