"""Compensation entries are validated like cuts, and an in-place apply that fails at any
step leaves the model exactly as it was (issue 13, item 4)."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import slimgraph as sg

X = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))  # 4.bias takes a non-zero fold


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)
    ).eval()


def planned() -> tuple[nn.Module, sg.DependencyGraph, sg.PruningPlan]:
    model = net()
    graph = sg.trace(model, (X,))
    plan = sg.plan(
        graph, ratio=0.5, importance="fluctuation", calibration=[X], bias_compensation=True
    )
    assert [f.into for f in plan.compensation] == ["2.bias", "4.bias"]
    assert any(plan.compensation[1].means)  # a fold that changes the bias it goes into
    return model, graph, plan


def snapshot(model: nn.Module) -> tuple[dict, dict]:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attrs = {
        name: {k: v for k, v in vars(m).items() if isinstance(v, (int, float, tuple, str, bool))}
        for name, m in model.named_modules()
    }
    return state, attrs


def assert_unchanged(model: nn.Module, before: tuple[dict, dict]) -> None:
    state, attrs = snapshot(model)
    assert state.keys() == before[0].keys()
    for k, v in state.items():
        assert v.shape == before[0][k].shape and torch.equal(v, before[0][k]), k
    assert attrs == before[1]


def with_folds(plan: sg.PruningPlan, **changes) -> dict:
    data = json.loads(plan.model_dump_json())
    data["compensation"][0].update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"means": [float("nan")]}, "its means must be finite numbers"),
        ({"means": [float("inf")]}, "its means must be finite numbers"),
        ({"into": "2.running_var"}, "only a bias or a BatchNorm running_mean"),
        ({"into": "2.weight"}, "only a bias or a BatchNorm running_mean"),
        ({"reads": "2.weight"}, 'expected "<layer>.weight:<dim>"'),
    ],
)
def test_malformed_folds_are_refused_when_read(changes, message) -> None:
    _, _, plan = planned()
    data = with_folds(plan, **changes)
    if "means" in changes:
        data["compensation"][0]["means"] *= len(plan.compensation[0].means)
    with pytest.raises(ValidationError, match=message):
        sg.PruningPlan.model_validate_json(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"into": "7.bias"}, "the model has no tensor 7.bias"),
        ({"into": "0.bias"}, r"0.bias has shape \(8,\), but the layer has 5 outputs"),
        ({"means": [1.0]}, "records 1 means"),
        ({"reads": "0.weight:0"}, "is not the input dim of a layer"),
    ],
)
@pytest.mark.parametrize("inplace", [False, True])
def test_folds_that_do_not_fit_the_model_change_nothing(changes, message, inplace) -> None:
    model, graph, plan = planned()
    bad = sg.PruningPlan.model_validate(with_folds(plan, **changes))
    before = snapshot(model)
    with pytest.raises(sg.PlanError, match=message):
        sg.apply(model, bad, graph=graph, inplace=inplace)
    assert_unchanged(model, before)


def test_in_place_apply_that_fails_on_its_last_step_changes_nothing() -> None:
    model, graph, plan = planned()
    before = snapshot(model)
    wrong_batch = (torch.randn(2, 6),)  # outputs (2, 3), the graph expects (4, 3)
    with pytest.raises(sg.RewriteError, match="output shapes changed"):
        sg.apply(model, plan, graph=graph, inplace=True, example_inputs=wrong_batch)
    assert_unchanged(model, before)
    slim = sg.apply(model, plan, graph=graph, inplace=True, example_inputs=(X,))
    assert slim is model and model[0].out_features == 4  # and it still applies afterwards


def test_in_place_apply_never_writes_to_the_callers_tensors() -> None:
    model, graph, plan = planned()
    bias = model[4].bias  # keeps its shape (model output), and takes a fold
    kept = bias.detach().clone()
    sg.apply(model, plan, graph=graph, inplace=True)
    assert torch.equal(bias.detach(), kept)  # the fold went into a new tensor
    assert not torch.equal(model[4].bias.detach(), kept)
