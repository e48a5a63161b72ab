"""Ops that used to freeze whole models for want of a rule (resizes, 3-D pools, instance
norm, ``x.T``, ``tensor_split``, ``gather``, comparisons), and the ops torch tags
``pointwise``, which are elementwise without a table entry. Each passes channels through:
the dead-unit oracle holds across it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import slimgraph as sg
from slimgraph.graph.ruletable import load_rules
from tests.oracles import assert_dead_units_drop_exactly, frozen_line

X = torch.randn(2, 3, 6, 6)
DEAD = [1, 4, 6]  # of the 8 channels between a and b


class Between(nn.Module):
    """Conv ``a`` (8 channels), the op under test, conv ``b`` reading the 8 channels."""

    def __init__(self, op: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.a, self.b, self.op = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1), op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.op(self.a(x)))


def _in_3d(pool: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda h: F.interpolate(pool(h.unsqueeze(2)), size=(1, 6, 6)).squeeze(2)


def _gather_rows(h: torch.Tensor) -> torch.Tensor:  # pick rows by computed positions
    index = torch.arange(6).flip(0).view(1, 1, 6, 1).expand(h.shape[0], h.shape[1], 6, 6)
    return torch.gather(h, 2, index)


def _resample(h: torch.Tensor) -> torch.Tensor:  # RAFT's lookup: a grid of coordinates
    line = torch.linspace(-1, 1, 6, device=h.device)
    ys, xs = torch.meshgrid(line, line.flip(0), indexing="ij")
    grid = torch.stack([xs, ys], dim=-1).unsqueeze(0).expand(h.shape[0], 6, 6, 2)
    return F.grid_sample(h, grid, mode="bilinear", align_corners=True)


OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "upsample_bilinear2d": lambda h: F.interpolate(h, scale_factor=2, mode="bilinear"),
    "upsample_nearest2d": lambda h: F.interpolate(h, scale_factor=2, mode="nearest"),
    "upsample_bicubic2d": lambda h: F.interpolate(h, size=(9, 9), mode="bicubic"),
    "max_pool3d": _in_3d(lambda v: F.max_pool3d(v, (1, 2, 2))),
    "avg_pool3d": _in_3d(lambda v: F.avg_pool3d(v, (1, 2, 2))),
    "adaptive_avg_pool3d": _in_3d(lambda v: F.adaptive_avg_pool3d(v, (1, 2, 2))),
    "instance_norm": lambda h: F.instance_norm(h),
    "tensor_split.indices": lambda h: torch.cat(torch.tensor_split(h, [2, 5], dim=2), dim=2),
    "gather": _gather_rows,
    "ge.Scalar": lambda h: h * (h >= 0.1),
    "le.Scalar": lambda h: h * (h <= 0.1),
    "floor (pointwise tag)": lambda h: h.floor(),
    "floor_ (pointwise tag)": lambda h: h.clone().floor_(),
    "clamp_max (pointwise tag)": lambda h: h.clamp(max=0.5),
    "grid_sampler (linspace, meshgrid)": _resample,
    "zeros_like": lambda h: h + torch.zeros_like(h),
    "ones_like": lambda h: h * torch.ones_like(h),
}


@pytest.mark.parametrize("name", OPS)
def test_dead_channels_drop_exactly_across(name: str) -> None:
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        Between(OPS[name]), X, {"a.weight:0": (DEAD, ["a.weight:0", "a.bias:0"])}
    )
    assert (slim.a.out_channels, slim.b.in_channels) == (5, 5)


class Tokens(nn.Module):
    """Falcon's ``x @ w.T``: tokens (B, HW, C) times a weight stored (out, in)."""

    def __init__(self, transpose: str) -> None:
        super().__init__()
        self.a, self.b, self.transpose = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1), transpose
        self.w = nn.Parameter(torch.randn(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        tokens = h.flatten(2).mT  # (B, HW, C)
        w = self.w.T if self.transpose == "T" else self.w.mT
        return self.b((tokens @ w).mT.reshape(h.shape[0], -1, *h.shape[2:]))


@pytest.mark.parametrize("transpose", ["T", "mT"])
def test_dead_channels_drop_exactly_across_a_transposed_weight(transpose: str) -> None:
    torch.manual_seed(0)
    producers = ["a.weight:0", "a.bias:0"]
    slim = assert_dead_units_drop_exactly(Tokens(transpose), X, {"a.weight:0": (DEAD, producers)})
    assert (slim.a.out_channels, tuple(slim.w.shape)) == (5, (8, 5))


def test_tensor_split_at_positions_freezes_the_split_dim() -> None:
    # the cut positions are constants in the code: the split dim cannot lose indices
    class Parts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(2, 2, 1), nn.Conv2d(6, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            first, rest = torch.tensor_split(self.a(x), [2], dim=1)
            return self.b(first).sum(1) + self.c(rest).sum(1)

    graph = sg.trace(Parts().eval(), (X,))
    assert "a.weight:0" not in {g.id for g in graph.prunable_groups()}
    assert "unequal parts [2, 6]" in frozen_line(graph, "a.weight:0")


def test_pointwise_tag_is_the_fallback_and_the_table_wins() -> None:
    rules = load_rules()
    aten = torch.ops.aten
    assert rules.op_rule(aten.ge.Scalar).kind == "elementwise"
    assert rules.op_rule(aten.add.Tensor).kind == "add"  # tagged pointwise; the table says add
    assert rules.op_rule(aten.cumsum.default).kind == "frozen"
    assert rules.op_rule(aten.nonzero.default) is None  # neither listed nor pointwise
    assert rules.op_rule(aten.add.out) is None  # out= overloads never reach a graph
