"""``importance="routing"``: whole experts scored by how often and how strongly the
router picks them on calibration batches, not by their weights."""

from __future__ import annotations

import pytest
import torch

import slimgraph as sg
from slimgraph.criteria.routing import routed_groups
from tests.graph.kinds.test_experts import RoutedExperts

X = torch.rand(4, 16, dtype=torch.bfloat16) + 0.5  # positive features


def popular_but_light() -> RoutedExperts:
    """Experts 0 and 1 take every token (their router rows agree with positive inputs)
    but have the smallest weights; experts 2 and 3 are never picked."""
    model = RoutedExperts().to(torch.bfloat16).eval()
    with torch.no_grad():
        model.gate.weight.copy_(torch.tensor([1.0, 0.9, -1.0, -1.0])[:, None].expand(4, 16))
        model.up[:2] *= 0.01
        model.down[:2] *= 0.01
    return model


def test_routing_keeps_the_experts_the_router_picks() -> None:
    model = popular_but_light()
    graph = sg.trace(model, (X,))
    assert routed_groups(graph) == {"gate.weight:0": "gate.weight"}
    batches = [(torch.rand(4, 16, dtype=torch.bfloat16) + 0.5,) for _ in range(3)]
    plan = sg.plan(graph, ratio=0.5, importance="routing", calibration=batches)
    cut = {c.group: c.drop for c in plan.cuts}
    assert cut["gate.weight:0"] == (2, 3)  # never picked
    assert "routing" in plan.provenance  # what the scores came from
    weights_only = sg.plan(graph, ratio=0.5, importance="l2")
    assert {c.group: c.drop for c in weights_only.cuts}["gate.weight:0"] == (0, 1)


def test_routing_without_calibration_says_what_to_pass() -> None:
    graph = sg.trace(popular_but_light(), (X,))
    with pytest.raises(sg.SlimGraphError, match="calibration"):
        sg.plan(graph, ratio=0.5, importance="routing")
