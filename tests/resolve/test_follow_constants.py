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
