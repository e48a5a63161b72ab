"""Kinds that move indices without arithmetic: ``cat``, ``stack``, ``split``, ``slice``,
``index``, ``unbind``, ``select``, ``pad`` and ``roll``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import slimgraph as sg
from tests.oracles import (
    assert_dead_units_drop_exactly,
    assert_slims,
    drop_plan,
    frozen_line,
    prunable,
)

# -- cat: input k's index i is the output's index offset_k + i along the cat dim.


X = torch.randn(2, 3, 6, 6)


class TwoConvCat(nn.Module):
    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 6 if dim == 1 else 4, 3, padding=1)
        self.head = nn.Conv2d(10 if dim == 1 else 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x), self.b(x)], self.dim))


class Dense(nn.Module):
    """DenseNet: each layer's output is appended to everything before it (input included)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(7, 2, 3, padding=1)
        self.head = nn.Conv2d(9, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([x, torch.relu(self.a(x))], 1)
        y = torch.cat([y, torch.relu(self.b(y))], 1)
        return self.head(y)


class Fire(nn.Module):
    """SqueezeNet fire module: squeeze, then 1x1 and 3x3 expands side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(3, 4, 1)
        self.expand1 = nn.Conv2d(4, 5, 1)
        self.expand3 = nn.Conv2d(4, 3, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.squeeze(x))
        y = torch.cat([torch.relu(self.expand1(s)), torch.relu(self.expand3(s))], 1)
        return self.head(y)


class SelfCat(nn.Module):
    """The same tensor twice: channel c is the output's c and c + C."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.head(torch.cat([y, y], 1))


def test_channel_cat_offsets_the_second_input() -> None:
    graph = sg.trace(TwoConvCat(), (X,))
    assert prunable(graph) == {"a.weight:0": 10}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": [0, 1, 2, 3],
        "a.bias:0": [0, 1, 2, 3],
        "b.weight:0": [4, 5, 6, 7, 8, 9],
        "b.bias:0": [4, 5, 6, 7, 8, 9],
        "head.weight:1": list(range(10)),
    }


def test_cat_on_height_couples_channels_one_to_one() -> None:
    graph = sg.trace(TwoConvCat(dim=2), (X,))
    assert prunable(graph) == {"a.weight:0": 4}
    same = [0, 1, 2, 3]
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": same,
        "a.bias:0": same,
        "b.weight:0": same,
        "b.bias:0": same,
        "head.weight:1": same,
    }


def test_dense_block_keeps_the_model_input_slice_frozen() -> None:
    graph = sg.trace(Dense(), (X,))
    assert prunable(graph) == {"a.weight:0": 6}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": [0, 1, 2, 3],
        "a.weight:1": [-1, -1, -1],
        "a.bias:0": [0, 1, 2, 3],
        "b.weight:0": [4, 5],
        "b.weight:1": [-1, -1, -1, 0, 1, 2, 3],
        "b.bias:0": [4, 5],
        "head.weight:1": [-1, -1, -1, 0, 1, 2, 3, 4, 5],
    }
    assert graph.group("a.weight:0").frozen == {
        "model input x dim 1 (x)": "model input: its shape is fixed by the caller"
    }


def test_fire_expands_share_one_group_and_squeeze_its_own() -> None:
    graph = sg.trace(Fire(), (X,))
    assert prunable(graph) == {"squeeze.weight:0": 4, "expand1.weight:0": 8}
    assert graph.unit_map("squeeze.weight:0") == {
        "squeeze.weight:0": [0, 1, 2, 3],
        "squeeze.bias:0": [0, 1, 2, 3],
        "expand1.weight:1": [0, 1, 2, 3],
        "expand3.weight:1": [0, 1, 2, 3],
    }
    assert graph.unit_map("expand1.weight:0") == {
        "expand1.weight:0": [0, 1, 2, 3, 4],
        "expand1.bias:0": [0, 1, 2, 3, 4],
        "expand3.weight:0": [5, 6, 7],
        "expand3.bias:0": [5, 6, 7],
        "head.weight:1": list(range(8)),
    }


def test_self_cat_unit_appears_twice_in_the_consumer() -> None:
    graph = sg.trace(SelfCat(), (X,))
    assert prunable(graph) == {"a.weight:0": 4}
    assert graph.unit_map("a.weight:0")["head.weight:1"] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_dead_concat_channels_drop_exactly() -> None:
    torch.manual_seed(0)
    producers = ["expand1.weight:0", "expand1.bias:0", "expand3.weight:0", "expand3.bias:0"]
    slim = assert_dead_units_drop_exactly(Fire(), X, {"expand1.weight:0": ([1, 4, 6], producers)})
    assert (slim.expand1.out_channels, slim.expand3.out_channels) == (3, 2)
    assert slim.head.in_channels == 5


def test_dead_dense_channels_drop_exactly() -> None:
    torch.manual_seed(0)
    producers = ["a.weight:0", "a.bias:0", "b.weight:0", "b.bias:0"]
    slim = assert_dead_units_drop_exactly(Dense(), X, {"a.weight:0": ([0, 5], producers)})
    assert (slim.a.out_channels, slim.b.in_channels, slim.b.out_channels) == (3, 6, 1)
    assert slim.head.in_channels == 7


def test_self_cat_dead_channels_drop_exactly() -> None:
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        SelfCat(), X, {"a.weight:0": ([2], ["a.weight:0", "a.bias:0"])}
    )
    assert (slim.a.out_channels, slim.head.in_channels) == (3, 6)


def test_concat_models_slim_end_to_end() -> None:
    torch.manual_seed(0)
    for model in (TwoConvCat(), TwoConvCat(dim=2), Dense(), Fire(), SelfCat()):
        assert_slims(model, X)


# -- chunk / split / slice: equal parts couple by offset and stay balanced; fixed sizes freeze.


# Part sizes computed from the width, as the rules assume (export sees only constants).
PARTS = {
    "chunk": lambda y: y.chunk(2, 1),
    "split": lambda y: y.split(y.shape[1] // 2, 1),
    "slice": lambda y: (y[:, : y.shape[1] // 2], y[:, y.shape[1] // 2 :]),
}


class TwoHeads(nn.Module):
    """One conv, its channels cut in two, each part read by its own conv."""

    def __init__(self, how: str, widths: tuple[int, int] = (4, 4)) -> None:
        super().__init__()
        self.how = how
        self.a = nn.Conv2d(3, sum(widths), 1)
        self.p = nn.Conv2d(widths[0], 2, 1)
        self.q = nn.Conv2d(widths[1], 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = self.parts(torch.relu(self.a(x)))
        return self.p(u) + self.q(v)

    def parts(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.how == "sizes":
            return y.split([3, 5], 1)
        if self.how == "bounds":
            return y[:, :3], y[:, 3:]
        return PARTS[self.how](y)


@pytest.mark.parametrize("how", sorted(PARTS))
def test_equal_parts_couple_by_offset(how: str) -> None:
    graph = sg.trace(TwoHeads(how), (X,))
    assert prunable(graph) == {"a.weight:0": 8}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": list(range(8)),
        "a.bias:0": list(range(8)),
        "p.weight:1": [0, 1, 2, 3],
        "q.weight:1": [4, 5, 6, 7],
    }
    assert graph.group("a.weight:0").exact


@pytest.mark.parametrize("how", sorted(PARTS))
def test_equal_parts_lose_equally_many_units(how: str) -> None:
    graph = sg.trace(TwoHeads(how), (X,))
    drop = sg.plan(graph, ratio=0.5).cut("a.weight:0").drop
    assert len(drop) == 4
    assert sum(u < 4 for u in drop) == 2


def test_unbalanced_hand_made_plan_is_refused() -> None:
    model = TwoHeads("chunk")
    graph = sg.trace(model, (X,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sg.SlimGraphError):
        sg.apply(model, drop_plan(graph, {"a.weight:0": [0, 1]}), graph=graph)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("how", "widths", "reason"),
    [
        ("sizes", (3, 5), "aten.split_with_sizes.default into unequal parts [3, 5]"),
        ("bounds", (3, 5), "sliced with constant bounds"),
    ],
)
def test_unequal_parts_freeze_the_dim(how: str, widths: tuple[int, int], reason: str) -> None:
    graph = sg.trace(TwoHeads(how, widths), (X,))
    assert prunable(graph) == {}
    group = graph.group("a.weight:0")
    assert group.size == 0
    assert list(group.frozen.values()) == [reason]
    assert reason in graph.explain("a.weight:0")
    assert graph.unit_map("a.weight:0")["a.weight:0"] == [-1] * 8


def test_chunk_into_unequal_parts_freezes() -> None:
    class Thirds(TwoHeads):
        def parts(self, y):
            u, v, w = y.chunk(3, 1)  # 8 channels: 3, 3, 2
            return u, torch.cat([v, w], 1)

    graph = sg.trace(Thirds("chunk", (3, 5)), (X,))
    assert prunable(graph) == {}
    assert list(graph.group("a.weight:0").frozen.values()) == [
        "aten.chunk.default into unequal parts [3, 3, 2]"
    ]


@pytest.mark.parametrize("how", sorted(PARTS))
def test_dead_channels_of_both_parts_drop_exactly(how: str) -> None:
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        TwoHeads(how), X, {"a.weight:0": ([1, 2, 4, 7], ["a.weight:0", "a.bias:0"])}
    )
    assert (slim.a.out_channels, slim.p.in_channels, slim.q.in_channels) == (4, 2, 2)


@pytest.mark.parametrize("how", sorted(PARTS))
def test_parts_slim_end_to_end(how: str) -> None:
    torch.manual_seed(0)
    slim = assert_slims(TwoHeads(how), X).model
    assert (slim.a.out_channels, slim.p.in_channels, slim.q.in_channels) == (4, 2, 2)


@pytest.mark.parametrize(
    "parts",
    [lambda y: y.split(4, 1), lambda y: (y[:, :4], y[:, 4:])],
    ids=["split", "slice"],
)
def test_literal_part_sizes_never_break_slim(parts) -> None:
    class Literal(TwoHeads):
        def parts(self, y):
            return parts(y)

    # Literal sizes look like equal parts in the graph; the dry run finds that they are
    # not, and sg.slim leaves that group alone instead of failing.
    torch.manual_seed(0)
    model = Literal("chunk")
    with pytest.warns(UserWarning, match="hard-codes their width"):
        result = sg.slim(model, (X,), ratio=0.5)
    assert list(result.plan.skipped) == ["a.weight:0"]
    assert "meta dry run of the slimmed model failed" in result.plan.skipped["a.weight:0"]
    assert result.model(X).shape == (2, 2, 6, 6)


# -- index, stack, and a fused projection read at offsets (slice).


X_SEQ = torch.randn(2, 5, 4)


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
    graph = sg.trace(TableBias(), (X_SEQ,))
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
    graph = sg.trace(Stacked(), (X_SEQ,))
    assert prunable(graph) == {"a.weight:0": 6}
    assert graph.unit_map("a.weight:0")["b.weight:0"] == SIX
    torch.manual_seed(0)
    assert_dead_units_drop_exactly(
        Stacked(),
        X_SEQ,
        {"a.weight:0": ([1, 4], ["a.weight:0", "a.bias:0", "b.weight:0", "b.bias:0"])},
    )


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
    graph = sg.trace(FusedQKV(), (X_SEQ,))
    group = next(g for g in graph.groups if ("qkv.weight", 0) in g.params)
    assert group.size == 2 and group.exact
    q, k, v = [0] * 8 + [1] * 8, [0] * 4 + [1] * 4, [0] * 4 + [1] * 4
    assert graph.unit_map(group.id)["qkv.weight:0"] == q + k + v
    assert graph.unit_map(group.id)["o.weight:1"] == q


# -- roll, pad, unbind and select: the dim they act on freezes, the others pass through.


class Rolled(nn.Module):
    """A linear's output rolled by a constant shift along ``dim`` (Swin's shifted windows
    roll the tokens), then a head."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.a = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(torch.roll(self.a(x), 2, self.dim))


def test_roll_along_tokens_passes_the_channels() -> None:
    graph = sg.trace(Rolled(1), (X_SEQ,))
    assert prunable(graph) == {"a.weight:0": 6}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": SIX,
        "a.bias:0": SIX,
        "head.weight:1": SIX,
    }
    assert graph.group("a.weight:0").exact
    assert "rolled by a constant shift" in set(graph.frozen_slots.values())
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        Rolled(1), X_SEQ, {"a.weight:0": ([1, 4], ["a.weight:0", "a.bias:0"])}
    )
    assert (slim.a.out_features, slim.head.in_features) == (4, 4)


def test_roll_along_channels_freezes_them() -> None:
    graph = sg.trace(Rolled(2), (X_SEQ,))
    assert prunable(graph) == {}
    assert frozen_line(graph, "a.weight:0") == (
        "  frozen by output linear dim 2 (aten.linear.default in a): rolled by a constant shift"
    )


class Padded(nn.Module):
    """conv -> constant pad of ``pad`` (F.pad order: last dim first) -> conv."""

    def __init__(self, pad: tuple[int, ...]) -> None:
        super().__init__()
        self.pad = pad
        self.a = nn.Conv2d(3, 8, 3)
        self.head = nn.Conv2d(8 + sum(pad[4:6]), 2, 3)

    def forward(self, x):
        return self.head(nn.functional.pad(self.a(x), self.pad))


def test_spatial_padding_passes_the_channels_and_zeros_keep_them_dead() -> None:
    graph = sg.trace(Padded((1, 1, 1, 1)), (X,))
    assert prunable(graph) == {"a.weight:0": 8}
    eight = list(range(8))
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": eight,
        "a.bias:0": eight,
        "head.weight:1": eight,
    }
    assert graph.group("a.weight:0").exact
    assert "padded by a constant amount" in set(graph.frozen_slots.values())
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        Padded((1, 1, 1, 1)), X, {"a.weight:0": ([0, 6], ["a.weight:0", "a.bias:0"])}
    )
    assert (slim.a.out_channels, slim.head.in_channels) == (6, 6)


def test_padding_the_channels_freezes_them() -> None:
    graph = sg.trace(Padded((0, 0, 0, 0, 1, 1)), (X,))
    assert prunable(graph) == {}
    assert frozen_line(graph, "a.weight:0") == (
        "  frozen by output conv2d dim 1 (aten.conv2d.default in a): padded by a constant amount"
    )


class Unbound(nn.Module):
    """A fused projection viewed as (3, 6) and unbound into q, k, v; q * k + v -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 18)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, -1).unbind(2)
        return self.head(q * k + v)


class TokensUnbound(nn.Module):
    """The first and last token, unbound from the sequence, summed -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        tokens = self.a(x).unbind(1)
        return self.head(tokens[0] + tokens[-1])


def test_unbind_pins_its_dim_and_couples_the_parts_channel_by_channel() -> None:
    graph = sg.trace(Unbound(), (X_SEQ,))
    assert prunable(graph) == {"qkv.weight:0": 6}
    assert graph.unit_map("qkv.weight:0") == {
        "qkv.weight:0": SIX * 3,
        "qkv.bias:0": SIX * 3,
        "head.weight:1": SIX,
    }
    assert graph.group("qkv.weight:0").exact
    reasons = set(graph.frozen_slots.values())
    assert {"unbind yields one tensor per index", "reshape factor 3 of a 18-wide dim"} <= reasons
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        Unbound(), X_SEQ, {"qkv.weight:0": ([2, 5], ["qkv.weight:0", "qkv.bias:0"])}
    )
    assert (slim.qkv.out_features, slim.head.in_features) == (12, 4)


def test_unbind_along_tokens_passes_the_channels() -> None:
    graph = sg.trace(TokensUnbound(), (X_SEQ,))
    assert prunable(graph) == {"a.weight:0": 6}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": SIX,
        "a.bias:0": SIX,
        "head.weight:1": SIX,
    }
    torch.manual_seed(0)
    assert_dead_units_drop_exactly(
        TokensUnbound(), X_SEQ, {"a.weight:0": ([0], ["a.weight:0", "a.bias:0"])}
    )


class Selected(nn.Module):
    """Index 0 of ``dim`` (dim 1: the class token) -> head."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.a = nn.Linear(4, 6)
        self.head = nn.Linear(6 if dim == 1 else 5, 2)

    def forward(self, x):
        return self.head(self.a(x).select(self.dim, 0))


def test_select_of_a_token_passes_the_channels() -> None:
    graph = sg.trace(Selected(1), (X_SEQ,))
    assert prunable(graph) == {"a.weight:0": 6}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": SIX,
        "a.bias:0": SIX,
        "head.weight:1": SIX,
    }
    assert "indexed with a constant by select" in set(graph.frozen_slots.values())
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        Selected(1), X_SEQ, {"a.weight:0": ([3, 4, 5], ["a.weight:0", "a.bias:0"])}
    )
    assert slim.head.in_features == 3


def test_select_of_a_channel_pins_the_channels() -> None:
    graph = sg.trace(Selected(2), (X_SEQ,))
    assert prunable(graph) == {}
    assert frozen_line(graph, "a.weight:0") == (
        "  frozen by output linear dim 2 (aten.linear.default in a): "
        "indexed with a constant by select"
    )


class Interleaved(nn.Module):
    """Gate and up rows interleaved in one projection, read by strided slices (GPT-OSS's
    experts): unit i is the block of rows 2i and 2i + 1."""

    def __init__(self) -> None:
        super().__init__()
        self.fused, self.down = nn.Linear(4, 8), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fused(x)
        return self.down(F.silu(y[..., ::2]) * y[..., 1::2])


def test_strided_slices_make_whole_blocks_the_units() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4)
    graph = sg.trace(Interleaved().eval(), (x,))
    assert prunable(graph) == {"fused.weight:0": 4}
    assert graph.unit_map("fused.weight:0")["fused.weight:0"] == [0, 0, 1, 1, 2, 2, 3, 3]
    slim = assert_dead_units_drop_exactly(
        Interleaved(), x, {"fused.weight:0": ([1, 3], ["fused.weight:0", "fused.bias:0"])}
    )
    assert (slim.fused.out_features, slim.down.in_features) == (4, 2)


def test_a_stride_that_skips_part_of_the_blocks_freezes() -> None:
    class Odd(Interleaved):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(self.fused(x)[..., 1:7:2].sum(-1, keepdim=True).expand(-1, 4))

    graph = sg.trace(Odd().eval(), (torch.randn(2, 4),))
    assert "fused.weight:0" not in prunable(graph)


def test_a_select_whose_value_nothing_reads_constrains_nothing() -> None:
    class ShapeOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)
            self.pos = nn.Parameter(torch.randn(16, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            n = h[:, :, -1].shape[1]  # only the shape of the pick is read
            return self.b(h + self.pos[:n])

    torch.manual_seed(0)
    x = torch.randn(2, 5, 4)
    graph = sg.trace(ShapeOnly().eval(), (x,))
    assert prunable(graph) == {"a.weight:0": 8}
    slim = assert_dead_units_drop_exactly(
        ShapeOnly(), x, {"a.weight:0": ([0, 7], ["a.weight:0", "a.bias:0", "pos:1"])}
    )
    assert slim.pos.shape == (16, 6)
