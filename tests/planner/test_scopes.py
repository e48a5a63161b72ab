"""Scopes that rank groups together: score normalisation, isomorphic classes, max_ratio,
and the configs they refuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

import slimgraph as sg
from slimgraph.criteria.registry import CRITERIA
from slimgraph.planner.choose import ranked_together


class Blocks(nn.Module):
    """Two identical residual MLP blocks (8 -> hidden -> 8), then a wide layer and a head.
    The stream reaches the input, so the prunable groups are the two blocks' hidden layers
    (one structure) and the wide layer (another)."""

    def __init__(self, hidden: int = 16, wide: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 8)) for _ in range(2)
        )
        self.wide, self.head = nn.Linear(8, wide), nn.Linear(wide, 2)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.head(torch.relu(self.wide(x)))


def chain() -> sg.DependencyGraph:
    """Two groups of different sizes: ``0.weight:0`` (4 units), ``2.weight:0`` (8 units)."""
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    return sg.trace(net, (torch.randn(1, 4),))


@pytest.fixture
def fixed(monkeypatch):
    """``importance="fixed"`` scores each group with the list the test stores in it."""
    scores: dict[str, list[float]] = {}
    monkeypatch.setitem(CRITERIA, "fixed", None)  # removed again after the test
    sg.register_importance("fixed")(
        lambda graph, groups, config: {g.id: np.array(scores[g.id], float) for g in groups}
    )
    return scores


def drops(plan: sg.PruningPlan) -> dict[str, int]:
    return {c.group: len(c.drop) for c in plan.cuts}


@pytest.mark.parametrize(
    ("normalize", "loser", "unit"),
    [
        ("none", "2.weight:0", 3),  # raw: 4 < 10
        ("mean", "0.weight:0", 0),  # 10/25 = 0.4 < 4/6.75 = 0.59
        ("max", "2.weight:0", 3),  # 4/14 = 0.29 < 10/30 = 0.33
        ("sum", "2.weight:0", 3),  # 4/54 = 0.07 < 10/100 = 0.1
        ("standard", "0.weight:0", 0),  # (10 - 25)/8.66 = -1.73 < (4 - 6.75)/2.82 = -0.98
    ],
)
def test_normalize_decides_which_group_loses_in_global_scope(fixed, normalize, loser, unit) -> None:
    fixed["0.weight:0"] = [10, 30, 30, 30]
    fixed["2.weight:0"] = [6, 6, 6, 4, 6, 6, 6, 14]
    config = sg.PruneConfig(ratio=1 / 12, scope="global", importance="fixed", normalize=normalize)
    plan = sg.plan(chain(), config)  # one unit of the 12 goes
    assert {c.group: c.drop for c in plan.cuts if c.drop} == {loser: (unit,)}


def test_normalize_does_not_matter_in_local_scope(fixed) -> None:
    fixed["0.weight:0"] = [10, 30, 30, 30]
    fixed["2.weight:0"] = [6, 6, 6, 4, 6, 6, 6, 14]
    graph = chain()
    plans = [
        sg.plan(graph, ratio=0.25, importance="fixed", normalize=n) for n in ("mean", "standard")
    ]
    assert plans[0].cuts == plans[1].cuts
    assert {c.group: c.drop for c in plans[0].cuts} == {"0.weight:0": (0,), "2.weight:0": (0, 3)}


def test_isomorphic_scope_ranks_each_class_with_its_own_budget(fixed) -> None:
    fixed["blocks.0.0.weight:0"] = [1] * 8 + [10] * 8  # half of it weak: 1/5.5 = 0.18
    fixed["blocks.1.0.weight:0"] = [5] * 16  # uniform: 1.0
    fixed["wide.weight:0"] = [1] * 16 + [100] * 16  # weakest of all: 1/50.5 = 0.02
    graph = sg.trace(Blocks(), (torch.randn(1, 8),))
    isomorphic = sg.plan(graph, ratio=0.25, importance="fixed", scope="isomorphic")
    assert drops(isomorphic) == {
        "blocks.0.0.weight:0": 8,  # the blocks' class loses 8 of its 32 channels, all weak
        "blocks.1.0.weight:0": 0,
        "wide.weight:0": 8,  # a class of its own: 8 of 32
    }
    assert isomorphic.cut("blocks.0.0.weight:0").drop == tuple(range(8))
    glob = sg.plan(graph, ratio=0.25, importance="fixed", scope="global")
    assert drops(glob) == {"blocks.0.0.weight:0": 0, "blocks.1.0.weight:0": 0, "wide.weight:0": 16}


def test_isomorphic_classes_of_a_transformer_are_its_attention_and_mlp_layers() -> None:
    from tests.hf_models import build

    model, x = build("bert")
    graph = sg.trace(model, x)
    classes = ranked_together(graph, graph.prunable_groups(), "isomorphic")
    assert sorted([g.id for g in members] for members in classes) == [
        ["bert.embeddings.LayerNorm.weight:0"],  # the hidden size
        [f"bert.encoder.layer.{i}.attention.self.query.weight:0" for i in range(2)],
        [f"bert.encoder.layer.{i}.intermediate.dense.weight:0" for i in range(2)],
        ["bert.pooler.dense.weight:0"],
    ]


def test_max_ratio_keeps_a_group_from_collapsing(fixed) -> None:
    fixed["0.weight:0"] = [5, 5, 5, 5]
    fixed["2.weight:0"] = [1] * 7 + [100]  # seven units far below the rest
    graph = chain()
    config = sg.PruneConfig(ratio=0.6, scope="global", importance="fixed")  # 7 of 12 go
    assert drops(sg.plan(graph, config)) == {"0.weight:0": 0, "2.weight:0": 7}  # keeps 1
    capped = sg.plan(graph, config, max_ratio=0.75)
    assert drops(capped) == {"0.weight:0": 1, "2.weight:0": 6}  # 6 = 0.75 * 8


def test_target_macs_with_isomorphic_scope_lands_within_one_percent() -> None:
    model, x = Blocks(hidden=64, wide=128).eval(), torch.randn(1, 8)
    result = sg.slim(model, (x,), target_macs=0.5, scope="isomorphic", max_ratio=0.8)
    kept = sg.count_macs(result.model, (x,)) / sg.count_macs(model, (x,))
    assert abs(kept - 0.5) <= 0.01 * 0.5
    assert result.plan.config.scope == "isomorphic"
    assert 0.0 < result.plan.config.ratio <= 0.8


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"reduction": "median"}, "Input should be 'mean', 'sum' or 'max'"),
        ({"normalize": "zscore"}, "Input should be 'mean', 'max', 'sum', 'standard' or 'none'"),
        ({"max_ratio": 0.0}, "Input should be greater than 0"),
        ({"max_ratio": 1.0}, "Input should be less than 1"),
        ({"scope": "global", "max_ratio": 0.3}, "max_ratio=0.3 is below ratio=0.5"),
        ({"scope": "isomorphic", "ratio": 0.4, "max_ratio": 0.2}, "max_ratio=0.2 is below"),
        ({"scope": "local", "max_ratio": 0.3}, "so ratio cannot be reached"),  # local too
    ],
)
def test_bad_scope_options_are_rejected(config, message) -> None:
    with pytest.raises(ValidationError) as err:
        sg.PruneConfig(**config)
    assert message in str(err.value)


def test_max_ratio_below_ratio_is_fine_when_target_macs_picks_the_ratio() -> None:
    assert sg.PruneConfig(target_macs=0.7, max_ratio=0.3).max_ratio == 0.3
