"""Kinds ``batch_norm``, ``layer_norm`` and ``group_norm``: a norm joins the group of the
channels it normalises; LayerNorm makes it inexact."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import slimgraph as sg
from tests.oracles import assert_dead_units_drop_exactly, assert_slims, prunable

# -- ConvNeXt block: permute to NHWC, LayerNorm, MLP, layer scale (C, 1, 1), residual.


X = torch.randn(2, 3, 4, 4)


C = list(range(8))


HIDDEN = list(range(16))


class Block(nn.Module):
    def __init__(self, dim: int, norm: str) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), 0.5))
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim) if norm == "layer" else nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 2 * dim)
        self.pwconv2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x)
        if isinstance(self.norm, nn.LayerNorm):
            y = self.norm(y.permute(0, 2, 3, 1))
        else:
            y = self.norm(y).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(y))).permute(0, 3, 1, 2)
        return x + self.gamma * y


class Net(nn.Module):
    def __init__(self, norm: str = "layer") -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.block = Block(8, norm)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


def test_layer_scale_and_norm_join_the_residual_channels() -> None:
    graph = sg.trace(Net(), (X,))
    assert prunable(graph) == {"stem.weight:0": 8, "block.pwconv1.weight:0": 16}
    assert graph.unit_map("stem.weight:0") == {
        "stem.weight:0": C,
        "stem.bias:0": C,
        "block.gamma:0": C,
        "block.dwconv.weight:0": C,
        "block.dwconv.bias:0": C,
        "block.norm.weight:0": C,
        "block.norm.bias:0": C,
        "block.pwconv1.weight:1": C,
        "block.pwconv2.weight:0": C,
        "block.pwconv2.bias:0": C,
        "head.weight:1": C,
    }
    assert graph.unit_map("block.pwconv1.weight:0") == {
        "block.pwconv1.weight:0": HIDDEN,
        "block.pwconv1.bias:0": HIDDEN,
        "block.pwconv2.weight:1": HIDDEN,
    }


def test_layer_norm_makes_its_group_inexact() -> None:
    graph = sg.trace(Net(), (X,))
    residual = graph.group("stem.weight:0")
    assert residual.exact is False
    assert residual.inexact == {
        "output permute dim 3 (aten.permute.default in block)": (
            "layer_norm statistics include every channel of this dim"
        )
    }
    assert graph.group("block.pwconv1.weight:0").exact is True
    assert "not exact at output permute dim 3" in graph.explain("stem.weight:0")


def test_batch_norm_in_its_place_stays_exact() -> None:
    graph = sg.trace(Net("batch"), (X,))
    assert prunable(graph) == {"stem.weight:0": 8, "block.pwconv1.weight:0": 16}
    assert graph.group("stem.weight:0").exact is True
    assert graph.unit_map("stem.weight:0")["block.norm.running_var:0"] == C


def test_dead_hidden_units_drop_exactly() -> None:
    torch.manual_seed(0)
    producers = ["block.pwconv1.weight:0", "block.pwconv1.bias:0"]
    slim = assert_dead_units_drop_exactly(
        Net(), X, {"block.pwconv1.weight:0": ([0, 7, 8, 15], producers)}
    )
    assert (slim.block.pwconv1.out_features, slim.block.pwconv2.in_features) == (12, 12)


def test_dead_residual_channels_drop_exactly_with_batch_norm() -> None:
    torch.manual_seed(0)
    # Dead in the stem, the layer scale and the branch's norm: no path carries them.
    producers = ["stem.weight:0", "stem.bias:0", "block.gamma:0"]
    producers += ["block.norm.weight:0", "block.norm.bias:0"]
    slim = assert_dead_units_drop_exactly(Net("batch"), X, {"stem.weight:0": ([2, 5], producers)})
    assert slim.block.gamma.shape == (6, 1, 1)
    assert (slim.block.dwconv.groups, slim.block.norm.num_features) == (6, 6)


def test_convnext_block_slims_end_to_end() -> None:
    torch.manual_seed(0)
    slim = assert_slims(Net(), X).model
    assert slim.block.gamma.shape == (4, 1, 1)
    assert slim.block.norm.normalized_shape == (4,)
    assert (slim.block.dwconv.groups, slim.block.dwconv.out_channels) == (4, 4)
    assert (slim.block.pwconv1.in_features, slim.block.pwconv1.out_features) == (4, 8)
    assert (slim.block.pwconv2.out_features, slim.head.in_channels) == (4, 4)
