"""Swin: window partition keeps C prunable; patch merging ties the four slices' channel c."""

from __future__ import annotations

import torch
from torch import nn

import slimgraph as sg

from ._oracle import assert_dead_units_drop_exactly, assert_slims, prunable

X = torch.randn(2, 4, 4, 3)  # B, H, W, C (channels last, as Swin keeps them)


def partition(x: torch.Tensor, w: int) -> torch.Tensor:
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def reverse(x: torch.Tensor, w: int, b: int, h: int, wd: int) -> torch.Tensor:
    x = x.view(b, h // w, wd // w, w, w, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, -1)


class Windows(nn.Module):
    """embed -> partition into 2x2 windows -> per-window linear -> reverse -> residual."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        y = self.embed(x)
        z = reverse(self.proj(partition(y, 2)), 2, b, h, w)
        return self.head(y + z)


class PatchMerging(nn.Module):
    """cat of the four 2x2 neighbours on C -> LayerNorm(4C) -> Linear(4C, 2C)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(16)
        self.reduction = nn.Linear(16, 8, bias=False)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.embed(x)
        parts = [y[:, 0::2, 0::2], y[:, 1::2, 0::2], y[:, 0::2, 1::2], y[:, 1::2, 1::2]]
        return self.head(self.reduction(self.norm(torch.cat(parts, -1))))


def test_window_partition_keeps_channels_prunable() -> None:
    graph = sg.trace(Windows(), (X,))
    assert prunable(graph) == {"embed.weight:0": 8}
    c = list(range(8))
    assert graph.unit_map("embed.weight:0") == {
        "embed.weight:0": c,
        "embed.bias:0": c,
        "proj.weight:0": c,
        "proj.weight:1": c,
        "proj.bias:0": c,
        "head.weight:1": c,
    }
    assert graph.group("embed.weight:0").exact


def test_dead_window_channels_drop_exactly() -> None:
    torch.manual_seed(0)
    producers = ["embed.weight:0", "embed.bias:0", "proj.weight:0", "proj.bias:0"]
    slim = assert_dead_units_drop_exactly(Windows(), X, {"embed.weight:0": ([0, 3, 4], producers)})
    assert (slim.embed.out_features, slim.proj.in_features, slim.head.in_features) == (5, 5, 5)


def test_patch_merging_unit_has_four_norm_indices() -> None:
    graph = sg.trace(PatchMerging(), (X,))
    assert prunable(graph) == {"embed.weight:0": 4, "reduction.weight:0": 8}
    four = [0, 1, 2, 3]
    assert graph.unit_map("embed.weight:0") == {
        "embed.weight:0": four,
        "embed.bias:0": four,
        "norm.weight:0": four * 4,
        "norm.bias:0": four * 4,
        "reduction.weight:1": four * 4,
    }
    assert graph.unit_map("reduction.weight:0") == {
        "reduction.weight:0": list(range(8)),
        "head.weight:1": list(range(8)),
    }
    assert graph.group("embed.weight:0").exact is False
    assert graph.group("reduction.weight:0").exact is True


def test_patch_merging_slims_end_to_end() -> None:
    torch.manual_seed(0)
    slim = assert_slims(PatchMerging(), X).model
    assert slim.embed.out_features == 2
    assert slim.norm.normalized_shape == (8,)
    assert slim.reduction.weight.shape == (4, 8)


def test_windows_slim_end_to_end() -> None:
    torch.manual_seed(0)
    slim = assert_slims(Windows(), X).model
    assert (slim.embed.out_features, slim.proj.out_features) == (4, 4)
