"""PruningPlan: JSON round trip, validation messages, and fuzzed JSON."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import slimgraph as sg

X = torch.randn(1, 3, 32, 32)


def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def traced():
    model = resnet()
    graph = sg.trace(model, (X,))
    return model, graph, sg.plan(graph, ratio=0.5)


def edited(plan: sg.PruningPlan, **cut_fields) -> dict:
    """The plan as JSON data with its first cut changed."""
    data = json.loads(plan.model_dump_json())
    data["cuts"][0].update(cut_fields)
    return data


def test_json_round_trip_is_equal(traced) -> None:
    _, _, plan = traced
    assert sg.PruningPlan.model_validate_json(plan.model_dump_json()) == plan


def test_reloaded_plan_gives_identical_weights_on_a_fresh_model(traced) -> None:
    model, graph, plan = traced
    slim = sg.apply(model, plan, graph=graph)
    reloaded = sg.PruningPlan.model_validate_json(plan.model_dump_json())
    again = sg.apply(resnet(), reloaded)  # traced anew on the meta device
    assert slim.state_dict().keys() == again.state_dict().keys()
    for key, value in slim.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_plan_records_what_it_was_made_from(traced) -> None:
    _, graph, plan = traced
    assert plan.fingerprint == graph.fingerprint
    assert plan.criterion == "l2"
    assert plan.config == sg.PruneConfig(ratio=0.5)
    assert [s.shape for s in plan.inputs] == [(1, 3, 32, 32)]
    assert plan.cut("conv1.weight:0").size == 64
    assert len(plan.cut("conv1.weight:0").drop) == 32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"drop": [0, 64]},
            "group conv1.weight:0 (conv1, bn1, layer1.0.conv1): drop indices [64] out of range for 64 units",
        ),
        (
            {"drop": [3, 3]},
            "group conv1.weight:0 (conv1, bn1, layer1.0.conv1): duplicate drop indices [3]",
        ),
        (
            {"drop": list(range(64))},
            "group conv1.weight:0 (conv1, bn1, layer1.0.conv1): drops all 64 units",
        ),
        (
            {"drop": [5, 2]},
            "group conv1.weight:0 (conv1, bn1, layer1.0.conv1): drop indices must be sorted",
        ),
        ({"drop": [-1]}, "drop indices [-1] out of range for 64 units"),
        ({"size": 0}, "Input should be greater than or equal to 1"),
        ({"group": ""}, "String should have at least 1 character"),
    ],
)
def test_invalid_cuts_are_rejected_naming_the_layer(traced, change, message) -> None:
    _, _, plan = traced
    with pytest.raises(ValidationError) as err:
        sg.PruningPlan.model_validate(edited(plan, **change))
    assert message in str(err.value)


def test_unknown_group_is_rejected(traced) -> None:
    _, graph, plan = traced
    with pytest.raises(sg.PlanError, match="no group 'conv9.weight:0' in this graph"):
        sg.PruningPlan.model_validate(
            edited(plan, group="conv9.weight:0"), context={"graph": graph}
        )


def test_size_mismatch_is_rejected(traced) -> None:
    _, graph, plan = traced
    data = edited(plan, size=65, drop=[1])
    with pytest.raises(
        sg.PlanError,
        match=r"group conv1.weight:0 \(conv1, bn1, layer1.0.conv1\) has 64 prunable units, the plan expects 65",
    ):
        sg.PruningPlan.model_validate(data, context={"graph": graph})


def test_plan_for_another_model_is_rejected(traced) -> None:
    _, _, plan = traced
    other = torchvision.models.resnet34(num_classes=10).eval()
    with pytest.raises(sg.PlanError, match="this plan was made for another model"):
        sg.apply(other, plan)


def test_group_twice_is_rejected(traced) -> None:
    _, _, plan = traced
    data = json.loads(plan.model_dump_json())
    data["cuts"].append(data["cuts"][0])
    with pytest.raises(ValidationError, match="group conv1.weight:0 appears twice"):
        sg.PruningPlan.model_validate(data)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("fingerprint", "xyz", "String should match pattern"),
        ("version", 2, "Input should be 1"),
        ("dropp", [], "Extra inputs are not permitted"),
        ("latency_tries", [0.6, -0.5], "Input should be greater than 0"),
        ("latency_tries", [0.6, 0.52], "measured_latency_kept None is not one of the latency_"),
        ("held", ["fc.weight:0"], "held group fc.weight:0 is not one of the plan's cuts"),
        ("held", ["conv1.weight:0"] * 2, "held group conv1.weight:0 appears twice"),
    ],
)
def test_invalid_plan_fields_are_rejected(traced, field, value, message) -> None:
    _, _, plan = traced
    data = json.loads(plan.model_dump_json()) | {field: value}
    with pytest.raises(ValidationError, match=message):
        sg.PruningPlan.model_validate(data)


def test_the_latency_tries_round_trip_with_the_one_chosen(traced) -> None:
    _, _, plan = traced
    tried = plan.model_copy(update={"measured_latency_kept": 0.52, "latency_tries": (0.6, 0.52)})
    again = sg.PruningPlan.model_validate_json(tried.model_dump_json())
    assert again.latency_tries == (0.6, 0.52) and again.measured_latency_kept == 0.52


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"ratio": 1.5}, "Input should be less than 1"),
        ({"ratio": -0.1}, "Input should be greater than or equal to 0"),
        ({"importance": "l3"}, "unknown importance 'l3'"),
        ({"round_to": 0}, "Input should be greater than or equal to 1"),
        ({"overrides": {"layer4*": 1.0}}, "override 'layer4*': ratio 1.0 is not in [0, 1)"),
        ({"scope": "galactic"}, "Input should be 'local', 'global' or 'isomorphic'"),
        ({"ratoi": 0.5}, "Extra inputs are not permitted"),
    ],
)
def test_bad_config_is_rejected(config, message) -> None:
    with pytest.raises(ValidationError) as err:
        sg.PruneConfig(**config)
    assert message in str(err.value)


def test_plan_that_empties_a_concat_part_is_rejected() -> None:
    class Cat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 2, 1), torch.nn.Conv2d(3, 4, 1)
            self.head = torch.nn.Conv2d(6, 5, 1)

        def forward(self, x):
            return self.head(torch.cat([self.a(x), self.b(x)], dim=1))

    model = Cat()
    graph = sg.trace(model, (torch.randn(1, 3, 4, 4),))
    plan = sg.plan(graph, ratio=0.0)
    empties_a = plan.model_copy(
        update={"cuts": (sg.GroupCut(group="a.weight:0", size=6, drop=(0, 1)),)}
    )
    with pytest.raises(sg.PlanError, match="the plan drops every index of a.weight dim 0"):
        sg.apply(model, empties_a, graph=graph)


def test_plan_that_breaks_a_link_is_rejected() -> None:
    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    graph = sg.trace(model, (X,))
    plan = sg.plan(graph, ratio=0.5)
    linked = sorted(graph.linked_groups()[0])
    broken = plan.model_copy(update={"cuts": tuple(c for c in plan.cuts if c.group != linked[0])})
    with pytest.raises(sg.PlanError, match="they must keep the same fraction"):
        sg.apply(model, broken, graph=graph)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
plan_like = st.fixed_dictionaries(
    {},
    optional={
        "version": json_values,
        "fingerprint": st.text(alphabet="0123456789abcdef", min_size=15, max_size=17) | json_values,
        "criterion": json_values,
        "cuts": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "group": json_values,
                    "size": st.integers(-2, 8) | json_values,
                    "drop": st.lists(st.integers(-2, 9), max_size=9) | json_values,
                },
            ),
            max_size=3,
        ),
        "params_before": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(data=plan_like | json_values)
def test_random_json_only_ever_fails_validation(data) -> None:
    text = json.dumps(data)
    try:
        sg.PruningPlan.model_validate_json(text)
    except ValidationError as err:  # anything else escapes and fails the test
        assert err.errors(), "a validation error says what is wrong"


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_only_ever_fails_validation(text: str) -> None:
    try:
        sg.PruningPlan.model_validate_json(text)
    except ValidationError as err:  # anything else escapes and fails the test
        assert err.errors(), "a validation error says what is wrong"


def test_duplicates_in_a_large_group_are_named() -> None:
    # validation counts indices in one pass (tests/benchmarks/bench_plan_validation.py
    # times a million units); the refusal still names the repeated ones, smallest first
    drop = (*range(0, 20_000), 7, 3, *range(20_000, 30_000))
    with pytest.raises(ValidationError, match=r"duplicate drop indices \[3, 7\]"):
        sg.GroupCut(group="g", size=40_000, drop=drop)
