"""Ops the sweeps found freezing groups: index_select, convolutions with string padding."""

from __future__ import annotations

import torch
from torch import nn

import slimgraph as sg


class PositionTable(nn.Module):
    """A sinusoid-style table read by position ids, added to a projection (XGLM)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 8)
        self.register_buffer("table", torch.randn(16, 8), persistent=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1])
        return self.head(self.proj(x) + self.table.index_select(0, positions))


def test_index_select_passes_the_table_width() -> None:
    torch.manual_seed(0)
    model, x = PositionTable().eval(), torch.randn(2, 5, 6)
    graph = sg.trace(model, x)
    group = graph.group("proj.weight:0")
    assert group.prunable and group.size == 8
    assert "table" in str(graph.unit_map(group.id))
    slim = sg.slim(model, x, ratio=0.5).model
    assert slim.proj.out_features == slim.head.in_features == 4
    assert tuple(slim.table.shape) == (16, 4)


def test_convolution_with_string_padding_prunes() -> None:
    """``padding="same"`` traces to aten.conv2d.padding (SigLIP's patch embedding)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding="same"), nn.ReLU(), nn.Conv2d(8, 4, 1))
    slim = sg.slim(model.eval(), torch.randn(1, 3, 8, 8), ratio=0.5).model
    assert slim[0].out_channels == slim[2].in_channels == 4
