"""Indexing, stacking, tiling, broadcasting, fused projections read at offsets, and
``addmm`` (a weight stored (in, out)): which dims pass, which freeze."""

from __future__ import annotations

import torch
from torch import nn

import slimgraph as sg

from ._oracle import assert_dead_units_drop_exactly, prunable

X = torch.randn(2, 5, 4)
SIX = list(range(6))


class TableBias(nn.Module):
    """A (positions, channels) table gathered by computed positions, added to a stream:
    the channels of the table pass through the index, its positions do not."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.table = nn.Parameter(torch.randn(9, 6))
        self.register_buffer("where", torch.tensor([0, 2, 4, 6, 8]))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.a(x) + self.table[self.where])


def test_index_passes_the_other_dims() -> None:
    graph = sg.trace(TableBias(), (X,))
    assert prunable(graph) == {"a.weight:0": 6}
    assert graph.unit_map("a.weight:0")["table:1"] == SIX
    assert "gathered by computed indices" in graph.explain("table:0")


class Stacked(nn.Module):
    """Two projections stacked on a new dim and summed back: the new dim freezes, the
    channels couple across both inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(torch.stack([self.a(x), -self.b(x)], dim=1).sum(1))


def test_stack_couples_every_input_and_freezes_the_new_dim() -> None:
    graph = sg.trace(Stacked(), (X,))
    assert prunable(graph) == {"a.weight:0": 6}
    assert graph.unit_map("a.weight:0")["b.weight:0"] == SIX
    torch.manual_seed(0)
    assert_dead_units_drop_exactly(
        Stacked(), X, {"a.weight:0": ([1, 4], ["a.weight:0", "a.bias:0", "b.weight:0", "b.bias:0"])}
    )


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
    graph = sg.trace(Tiled(), (X,))
    assert prunable(graph) == {}  # a's channels meet b's tiled ones
    assert "tiled 2 times by repeat" in graph.explain("a.weight:0")
    assert graph.unit_map("a.weight:0")["token:2"] == [-1] * 6


class FusedQKV(nn.Module):
    """One projection read at fixed offsets as q (4 heads), k and v (2 heads each), with
    grouped-query attention, like Phi-3's qkv_proj: the parts keep their proportion, as a
    unit (a key/value head with its 2 query heads) takes from each part in proportion."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 32)  # q: 4 heads x 4, k: 2 x 4, v: 2 x 4
        self.o = nn.Linear(16, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x)
        q = qkv[..., :16].view(b, n, 4, 4).transpose(1, 2)
        k, v = (
            t.view(b, n, 2, 4).transpose(1, 2)[:, :, None].expand(b, 2, 2, n, 4).reshape(b, 4, n, 4)
            for t in (qkv[..., 16:24], qkv[..., 24:])
        )
        a = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.head(self.o(a.transpose(1, 2).reshape(b, n, 16)))


def test_offsets_read_in_proportion_keep_their_parts_together() -> None:
    graph = sg.trace(FusedQKV(), (X,))
    group = next(g for g in graph.groups if ("qkv.weight", 0) in g.params)
    assert group.size == 2 and group.exact
    q, k, v = [0] * 8 + [1] * 8, [0] * 4 + [1] * 4, [0] * 4 + [1] * 4
    assert graph.unit_map(group.id)["qkv.weight:0"] == q + k + v
    assert graph.unit_map(group.id)["o.weight:1"] == q


class GPT2Like(nn.Module):
    """``addmm(bias, x, w)`` with ``w`` stored (in, out), as transformers' Conv1D."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(4, 6))
        self.b1 = nn.Parameter(torch.randn(6))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y = torch.addmm(self.b1, x.reshape(-1, 4), self.w1).view(*x.shape[:-1], -1)
        return self.head(torch.relu(y))


def test_addmm_couples_the_out_columns_of_its_weight() -> None:
    graph = sg.trace(GPT2Like(), (X,))
    assert prunable(graph) == {"w1:1": 6}
    assert graph.unit_map("w1:1") == {"w1:1": SIX, "b1:0": SIX, "head.weight:1": SIX}
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(GPT2Like(), X, {"w1:1": ([0, 3, 5], ["w1:1", "b1:0"])})
    assert slim.w1.shape == (4, 3)
