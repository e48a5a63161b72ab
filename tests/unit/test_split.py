"""chunk / split / slice: equal parts couple by offset and stay balanced; fixed sizes freeze."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimgraph as sg

from ._oracle import assert_dead_units_drop_exactly, assert_slims, drop_plan, prunable

X = torch.randn(2, 3, 6, 6)
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
