"""flatten -> linear (VGG, AlexNet): channel c owns the inputs c*H*W ... (c+1)*H*W - 1."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import slimgraph as sg

from ._oracle import assert_dead_units_drop_exactly, assert_slims, prunable

FLATTEN = {
    "flatten": lambda y: torch.flatten(y, 1),
    "view": lambda y: y.view(y.size(0), -1),
    "reshape": lambda y: y.reshape(y.shape[0], -1),
    "Flatten": nn.Flatten(),
}


class Classifier(nn.Module):
    """conv -> relu -> max pool -> flatten -> linear -> relu -> linear."""

    def __init__(self, how: str, channels: int = 4, hw: tuple[int, int] = (2, 3)) -> None:
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.fc = nn.Linear(channels * hw[0] * hw[1], 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(torch.relu(self.conv(x)), 2)
        if self.how == "channels-last":
            y = y.permute(0, 2, 3, 1).flatten(1)
        else:
            y = FLATTEN[self.how](y)
        return self.out(torch.relu(self.fc(y)))


X = torch.randn(2, 3, 4, 6)
BLOCKS = [c for c in range(4) for _ in range(6)]


@pytest.mark.parametrize("how", sorted(FLATTEN))
def test_channel_owns_a_block_of_linear_inputs(how: str) -> None:
    graph = sg.trace(Classifier(how), (X,))
    assert prunable(graph) == {"conv.weight:0": 4, "fc.weight:0": 5}
    assert graph.unit_map("conv.weight:0") == {
        "conv.weight:0": [0, 1, 2, 3],
        "conv.bias:0": [0, 1, 2, 3],
        "fc.weight:1": BLOCKS,
    }
    assert graph.group("conv.weight:0").exact


def test_channels_last_flatten_interleaves_channels() -> None:
    graph = sg.trace(Classifier("channels-last"), (X,))
    assert prunable(graph) == {"conv.weight:0": 4, "fc.weight:0": 5}
    assert graph.unit_map("conv.weight:0")["fc.weight:1"] == [0, 1, 2, 3] * 6


@pytest.mark.parametrize("how", [*sorted(FLATTEN), "channels-last"])
def test_spatial_factors_of_the_flattened_dim_are_frozen(how: str) -> None:
    graph = sg.trace(Classifier(how), (X,))
    reasons = sorted(w for w in graph.frozen_slots.values() if w.startswith("reshape factor"))
    assert reasons == ["reshape factor 2 of a 24-wide dim", "reshape factor 3 of a 24-wide dim"]


@pytest.mark.parametrize("how", [*sorted(FLATTEN), "channels-last"])
def test_dead_channels_drop_their_linear_inputs_exactly(how: str) -> None:
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        Classifier(how), X, {"conv.weight:0": ([1, 3], ["conv.weight:0", "conv.bias:0"])}
    )
    assert (slim.conv.out_channels, slim.fc.in_features) == (2, 12)


def test_classifier_slims_end_to_end() -> None:
    torch.manual_seed(0)
    slim = assert_slims(Classifier("flatten"), X).model
    assert (slim.conv.out_channels, slim.fc.in_features, slim.fc.out_features) == (2, 12, 3)


def test_few_channels_on_a_large_map_still_own_their_blocks() -> None:
    model = Classifier("flatten", channels=2, hw=(3, 3))
    x = torch.randn(2, 3, 6, 6)
    graph = sg.trace(model, (x,))
    assert prunable(graph) == {"conv.weight:0": 2, "fc.weight:0": 5}
    assert graph.unit_map("conv.weight:0")["fc.weight:1"] == [0] * 9 + [1] * 9
