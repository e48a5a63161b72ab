"""Kinds ``pool``, ``reduce`` and ``softmax``, with the dropout and stochastic depth that
sit before a global pool: channels pass through one to one."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import StochasticDepth

import slimgraph as sg
from tests.oracles import assert_dead_units_drop_exactly, assert_slims, prunable

# -- stochastic depth, dropout and global pooling: channels pass through one to one.


X = torch.randn(2, 3, 4, 4)


C = list(range(8))


POOLS = {
    "adaptive_avg_pool2d": lambda y: F.adaptive_avg_pool2d(y, 1).flatten(1),
    "AdaptiveAvgPool2d": lambda y: nn.AdaptiveAvgPool2d((1, 1))(y).flatten(1),
    "adaptive_max_pool2d": lambda y: F.adaptive_max_pool2d(y, 1).flatten(1),
    "mean": lambda y: y.mean((2, 3)),
    "mean-keepdim": lambda y: y.mean((-2, -1), keepdim=True).flatten(1),
    "sum": lambda y: y.sum((2, 3)),
    "amax": lambda y: y.amax((2, 3)),
}


class Residual(nn.Module):
    """a -> (b -> drop path) + skip -> dropout -> global pool -> linear."""

    def __init__(self, drop: nn.Module, pool: str = "adaptive_avg_pool2d") -> None:
        super().__init__()
        self.pool = pool
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.drop_path = StochasticDepth(0.5, "row")
        self.drop = drop
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        y = y + self.drop_path(self.b(torch.relu(y)))
        return self.head(POOLS[self.pool](self.drop(y)))


RESIDUAL_MAP = {
    "a.weight:0": C,
    "a.bias:0": C,
    "b.weight:0": C,
    "b.weight:1": C,
    "b.bias:0": C,
    "head.weight:1": C,
}


@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("drop", [nn.Dropout(0.5), nn.Identity()], ids=["dropout", "none"])
def test_drop_path_and_dropout_pass_channels_in_train_mode(mode: str, drop: nn.Module) -> None:
    model = Residual(drop).train()
    model.drop_path = StochasticDepth(0.5, mode)
    graph = sg.trace(model, (X,))
    assert prunable(graph) == {"a.weight:0": 8}
    assert graph.unit_map("a.weight:0") == RESIDUAL_MAP
    assert graph.group("a.weight:0").exact
    assert model.training and model.drop_path.training


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_global_pooling_passes_channels(pool: str) -> None:
    graph = sg.trace(Residual(nn.Identity(), pool).eval(), (X,))
    assert prunable(graph) == {"a.weight:0": 8}
    assert graph.unit_map("a.weight:0") == RESIDUAL_MAP
    assert graph.group("a.weight:0").exact


@pytest.mark.parametrize(
    ("op", "inexact"),
    [
        (
            "mean",
            {
                "output conv2d dim 1 (aten.conv2d.default in a)": "aten.mean.dim reduces over this dim"
            },
        ),
        ("sum", {}),
        (
            "amax",
            {
                "output conv2d dim 1 (aten.conv2d.default in a)": "aten.amax.default reduces over this dim"
            },
        ),
    ],
)
def test_reducing_over_channels_is_exact_only_for_a_sum(op: str, inexact: dict) -> None:
    class OverChannels(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.head = nn.Conv2d(1, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(getattr(self.a(x), op)(1, keepdim=True))

    graph = sg.trace(OverChannels(), (X,))
    assert prunable(graph) == {"a.weight:0": 8}
    assert graph.unit_map("a.weight:0") == {"a.weight:0": C, "a.bias:0": C}
    assert graph.group("a.weight:0").inexact == inexact


@pytest.mark.parametrize("pool", ["adaptive_avg_pool2d", "mean", "sum"])
def test_dead_channels_drop_exactly_through_pooling(pool: str) -> None:
    torch.manual_seed(0)
    producers = ["a.weight:0", "a.bias:0", "b.weight:0", "b.bias:0"]
    slim = assert_dead_units_drop_exactly(
        Residual(nn.Dropout(0.5), pool), X, {"a.weight:0": ([2, 3, 6], producers)}
    )
    assert (slim.a.out_channels, slim.b.in_channels, slim.head.in_features) == (5, 5, 5)


def test_slims_in_train_mode_and_keeps_the_mode() -> None:
    torch.manual_seed(0)
    model = Residual(nn.Dropout(0.5)).train()
    slim = assert_slims(model, X).model
    assert slim.training and slim.drop_path.training and slim.drop.training
    assert (slim.a.out_channels, slim.head.in_features) == (4, 4)


def test_channel_dropout_passes_channels_in_train_mode() -> None:
    graph = sg.trace(Residual(nn.Dropout2d(0.5)).train(), (X,))
    assert prunable(graph) == {"a.weight:0": 8}


def test_pooled_width_is_not_prunable() -> None:
    class ReadsPooledWidth(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.fc = nn.Linear(3, 5)
            self.head = nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.fc(F.adaptive_avg_pool2d(self.a(x), (2, 3)))))

    graph = sg.trace(ReadsPooledWidth(), (torch.randn(2, 3, 4, 6),))
    assert prunable(graph) == {"fc.weight:0": 5}
