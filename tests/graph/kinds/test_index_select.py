"""index_select picks computed positions along one dim; the other dims pass through."""

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
