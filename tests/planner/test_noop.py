"""A plan asked to drop units that drops none warns and says why."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import slimgraph as sg
from tests.planner.test_planner import Three, X


@pytest.fixture(scope="module")
def graph() -> sg.DependencyGraph:
    return sg.trace(Three(), (X,))


@pytest.mark.parametrize(
    ("fields", "setting"),
    [
        ({"round_to": 32}, "round_to=32"),
        ({"min_keep": 32}, "min_keep=32"),
        ({"min_keep": 32, "scope": "global"}, "min_keep=32"),
        ({"round_to": 64, "target_macs": 0.5}, "round_to=64"),
    ],
)
def test_settings_that_keep_everything_warn(graph, fields, setting) -> None:
    with pytest.warns(UserWarning, match=f"the plan drops nothing: {setting} keeps every channel"):
        plan = sg.plan(graph, ratio=0.5, **fields)
    assert plan.dropped == 0


def test_every_group_frozen_warns_in_slim() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    with pytest.warns(UserWarning, match=r"no group can lose units: .* 1 ignored"):
        result = sg.slim(model, (torch.randn(2, 4),), ratio=0.5, ignore=["0"])
    assert result.plan.dropped == 0


def test_a_plan_that_drops_or_was_not_asked_to_is_quiet(graph) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sg.plan(graph, ratio=0.5, round_to=8).dropped > 0
        assert sg.plan(graph, ratio=0.0, round_to=32).dropped == 0
        assert sg.plan(graph, ratio=0.01).dropped == 0  # too small a ratio: no setting to name
        assert sg.plan(graph, target_macs=0.5).dropped > 0
