"""Every torchvision classifier slims at ratio 0.5 (acceptance of the core engine).

For each of the 80 models: the slim model keeps its output shape and gives finite
values; MACs (FlopCounterMode) drop to at most 0.35 of the original for CNNs and 0.6
for the transformers; the parameter count equals the plan's prediction; every op has a
rule; and an empty plan is the identity, bit for bit.
"""

from __future__ import annotations

import gc

import pytest
import torch

import slimgraph as sg
from tests.helpers import build_torchvision, first_output, is_transformer, torchvision_names

pytestmark = pytest.mark.zoo


@pytest.mark.parametrize("name", torchvision_names())
def test_slim_half(name: str) -> None:
    model, x = build_torchvision(name)
    result = sg.slim(model, (x,), ratio=0.5)
    # every ATen op of the zoo has a rule that reads it: nothing froze for want of one
    reasons = set(result.graph.frozen_slots.values())
    assert not [r for r in reasons if r.startswith(("no rule for", "rule "))]
    assert not result.plan.skipped
    slim = result.model
    assert type(slim) is type(model)
    model.eval()
    slim.eval()
    with torch.no_grad():
        expected, got = first_output(model(x)), first_output(slim(x))
    assert got.shape == expected.shape
    assert torch.isfinite(got).all()
    macs = sg.count_macs(slim, (x,)) / sg.count_macs(model, (x,))
    assert macs <= (0.6 if is_transformer(name) else 0.35), f"MACs ratio {macs:.3f}"
    assert sg.count_params(slim) == result.plan.params_after
    assert result.plan.params_after < result.plan.params_before
    del model, slim, result
    gc.collect()


@pytest.mark.parametrize("name", torchvision_names())
def test_empty_plan_is_identity(name: str) -> None:
    model, x = build_torchvision(name)
    graph = sg.trace(model, (x,))
    plan = sg.plan(graph, ratio=0.0)
    assert plan.dropped == 0
    same = sg.apply(model, plan, graph=graph)
    model.eval()
    same.eval()
    with torch.no_grad():
        assert torch.equal(first_output(same(x)), first_output(model(x)))
    assert sg.count_params(same) == plan.params_after == plan.params_before
    del model, same
    gc.collect()
