"""Constants the code passes to an op and reads from a module attribute (an affine-less
norm's ``normalized_shape``, the sizes of a split into unequal parts) follow the widths of
the dims they describe: the graph records them, the rewrite updates the attribute."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import slimgraph as sg
from tests.oracles import drop_plan, prunable


class BareNorm(nn.Module):
    """OLMo's LayerNorm: no affine weight, the shape held in an attribute."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.normalized_shape = (width,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, None, None, 1e-5)


class NormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(8, 16)
        self.bare = BareNorm(16)
        self.plain = nn.LayerNorm(16, elementwise_affine=False)
        self.down = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.plain(self.bare(self.up(x))))


def test_affine_less_layer_norm_width_follows_its_input() -> None:
    net, x = NormNet().eval(), torch.randn(2, 8)
    graph = sg.trace(net, (x,))
    assert prunable(graph) == {"up.weight:0": 16}
    slim = sg.apply(net, drop_plan(graph, {"up.weight:0": range(0, 16, 2)}), graph=graph)
    assert slim.bare.normalized_shape == (8,)
    assert slim.plain.normalized_shape == (8,)
    assert slim(x).shape == (2, 4)
    # the norm of the kept channels alone: what the slim model computes
    keep = torch.arange(1, 16, 2)
    with torch.no_grad():
        h = F.layer_norm(F.layer_norm(net.up(x)[:, keep], (8,)), (8,))
        expected = h @ net.down.weight[:, keep].T + net.down.bias
        torch.testing.assert_close(slim(x), expected)


class UnequalSplit(nn.Module):
    """A fused projection split into a gate of 4 and values of 8 (two per gate), sizes
    held in attributes: unit i is gate i with values 2i and 2i + 1, which keeps the two
    parts in proportion."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_width, self.value_width = 4, 8
        self.fused = nn.Linear(6, 12)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = torch.split(self.fused(x), [self.gate_width, self.value_width], dim=-1)
        mixed = torch.sigmoid(gate).unsqueeze(-1) * value.unflatten(-1, (-1, 2))
        return self.out(mixed.flatten(-2))


def test_split_into_listed_unequal_sizes_keeps_its_parts_in_proportion() -> None:
    torch.manual_seed(0)
    net, x = UnequalSplit().eval(), torch.randn(2, 6)
    graph = sg.trace(net, (x,))
    assert prunable(graph) == {"fused.weight:0": 4}
    units = graph.unit_map("fused.weight:0")["fused.weight:0"]
    assert units == [0, 1, 2, 3, 0, 0, 1, 1, 2, 2, 3, 3]
    # dead units: zero what gates 1 and 3 let through, then drop them
    with torch.no_grad():
        net.fused.weight[[1, 3]] = 0.0
        net.fused.bias[[1, 3]] = -1e4  # sigmoid(-1e4) == 0
        expected = net(x)
    slim = sg.apply(net, drop_plan(graph, {"fused.weight:0": [1, 3]}), graph=graph)
    assert (slim.gate_width, slim.value_width, slim.fused.out_features) == (2, 4, 6)
    torch.testing.assert_close(slim(x), expected)


def test_split_sizes_the_units_cannot_keep_in_proportion_freeze() -> None:
    class Loose(UnequalSplit):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gate, value = torch.split(self.fused(x), [self.gate_width, self.value_width], -1)
            return self.out(value) + gate.sum(-1, keepdim=True)

    graph = sg.trace(Loose().eval(), (torch.randn(2, 6),))
    assert prunable(graph) == {}
    assert "into unequal parts [4, 8]" in graph.explain("fused.weight:0")
