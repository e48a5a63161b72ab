"""Kind ``attention`` (scaled_dot_product_attention): q and k share units, v's go to the
output; whole heads are the units unless traced with ``head_dims=True``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import slimgraph as sg
from tests.oracles import assert_dead_units_drop_exactly, assert_slims, prunable

X = torch.randn(2, 5, 3)  # batch, tokens, features


class Attention(nn.Module):
    """Linear q, k, v -> heads -> sdpa -> merge heads -> output projection."""

    def __init__(self, heads: int, head_dim: int) -> None:
        super().__init__()
        width = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.embed = nn.Linear(3, 8)
        self.q = nn.Linear(8, width)
        self.k = nn.Linear(8, width)
        self.v = nn.Linear(8, width)
        self.o = nn.Linear(width, 8)
        self.head = nn.Linear(8, 2)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        # The larger of (heads, head_dim) carries the units, so that one is inferred.
        if self.head_dim >= self.heads:
            return t.view(b, n, self.heads, -1).transpose(1, 2)
        return t.view(b, n, -1, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.embed(x)
        a = F.scaled_dot_product_attention(
            self.split(self.q(y)), self.split(self.k(y)), self.split(self.v(y))
        )
        return self.head(self.o(a.transpose(1, 2).flatten(2)))


EIGHT = list(range(8))


EMBED_MAP = {
    "embed.weight:0": EIGHT,
    "embed.bias:0": EIGHT,
    "q.weight:1": EIGHT,
    "k.weight:1": EIGHT,
    "v.weight:1": EIGHT,
}


def test_whole_heads_are_the_units_by_default_even_when_heads_are_fewer() -> None:
    graph = sg.trace(Attention(heads=2, head_dim=4), (X,))
    assert prunable(graph) == {"embed.weight:0": 8, "q.weight:0": 2, "o.weight:0": 8}
    assert graph.unit_map("q.weight:0")["o.weight:1"] == [0, 0, 0, 0, 1, 1, 1, 1]
    reasons = set(graph.frozen_slots.values())
    assert "attention heads are the units (trace with head_dims=True to prune head dims)" in reasons


def test_head_dim_units_couple_q_with_k_and_v_with_the_output() -> None:
    graph = sg.trace(Attention(heads=2, head_dim=4), (X,), head_dims=True)
    assert prunable(graph) == {
        "embed.weight:0": 8,
        "q.weight:0": 4,
        "v.weight:0": 4,
        "o.weight:0": 8,
    }
    offsets = [0, 1, 2, 3] * 2  # the same offset in every head
    assert graph.unit_map("q.weight:0") == {
        "q.weight:0": offsets,
        "q.bias:0": offsets,
        "k.weight:0": offsets,
        "k.bias:0": offsets,
    }
    assert graph.unit_map("v.weight:0") == {
        "v.weight:0": offsets,
        "v.bias:0": offsets,
        "o.weight:1": offsets,
    }
    assert graph.unit_map("embed.weight:0") == EMBED_MAP
    assert graph.group("q.weight:0").inexact == {
        "output transpose dim 3 (aten.transpose.int)": "attention scale depends on the head dim"
    }
    assert graph.group("v.weight:0").exact


def test_head_units_couple_q_k_v_and_the_output() -> None:
    graph = sg.trace(Attention(heads=4, head_dim=2), (X,))
    assert prunable(graph) == {"embed.weight:0": 8, "q.weight:0": 4, "o.weight:0": 8}
    heads = [0, 0, 1, 1, 2, 2, 3, 3]
    assert graph.unit_map("q.weight:0") == {
        key: heads
        for key in (
            "q.weight:0",
            "q.bias:0",
            "k.weight:0",
            "k.bias:0",
            "v.weight:0",
            "v.bias:0",
            "o.weight:1",
        )
    }
    assert graph.unit_map("embed.weight:0") == EMBED_MAP
    assert graph.group("q.weight:0").exact  # whole heads go: the scale stays


@pytest.mark.parametrize(
    ("heads", "head_dim", "group"),
    [(2, 4, "v.weight:0"), (4, 2, "q.weight:0")],
    ids=["head-dims", "heads"],
)
def test_dead_value_units_drop_exactly(heads: int, head_dim: int, group: str) -> None:
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        Attention(heads, head_dim),
        X,
        {group: ([1, 2], ["v.weight:0", "v.bias:0"])},
        head_dims=group == "v.weight:0",
    )
    assert (slim.v.out_features, slim.o.in_features) == (4, 4)
    assert slim.q.out_features == (8 if group == "v.weight:0" else 4)


@pytest.mark.parametrize(("heads", "head_dim"), [(2, 4), (4, 2)], ids=["head-dims", "heads"])
def test_attention_slims_end_to_end(heads: int, head_dim: int) -> None:
    torch.manual_seed(0)
    slim = assert_slims(Attention(heads, head_dim), X).model
    assert slim.q.out_features == slim.k.out_features == slim.v.out_features == 4


class SinkAttention(nn.Module):
    """GPT-OSS's eager attention: one sink logit per head joins the softmax and its column
    is sliced off after it, before the product with v."""

    def __init__(self, dim: int = 16, heads: int = 4, head_dim: int = 8) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.q, self.k, self.v = (nn.Linear(dim, heads * head_dim) for _ in range(3))
        self.o = nn.Linear(heads * head_dim, dim)
        self.sinks = nn.Parameter(torch.randn(heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (
            p(x).view(b, n, -1, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v)
        )
        logits = q @ k.transpose(2, 3) * self.head_dim**-0.5
        sinks = self.sinks.reshape(1, -1, 1, 1).expand(b, -1, n, -1)
        logits = torch.cat([logits, sinks], dim=-1)
        logits = logits - logits.max(dim=-1, keepdim=True).values
        weights = F.softmax(logits, dim=-1)[..., :-1]
        return self.o((weights @ v).transpose(1, 2).reshape(b, n, -1))


def test_the_head_unit_owns_its_attention_sink() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    graph = sg.trace(SinkAttention().eval(), (x,))
    assert prunable(graph)["q.weight:0"] == 4  # whole heads, not head-dim offsets
    assert graph.unit_map("q.weight:0")["sinks:0"] == [0, 1, 2, 3]
    # a head whose values are zero adds nothing: dropping it (with its sink) is exact
    slim = assert_dead_units_drop_exactly(
        SinkAttention(), x, {"q.weight:0": ([1], ["v.weight:0", "v.bias:0"])}
    )
    assert (slim.v.out_features, slim.sinks.shape[0]) == (24, 3)
    result = assert_slims(SinkAttention().eval(), x)
    assert result.model.sinks.shape[0] == result.model.q.out_features // 8
