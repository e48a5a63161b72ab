"""A plan is data: made on one checkpoint (trained weights), it applies to another of the
same architecture (the initial weights, for lottery-ticket rewinding) and keeps exactly
the indices it chose on the first."""

from __future__ import annotations

import copy

import torch
from torch import nn

import slimgraph as sg
from slimgraph.resolve.indices import kept_shapes
from tests.hf_models import build

X = torch.randn(2, 3, 8, 8)


def cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def trained(initial: nn.Sequential) -> nn.Sequential:
    """A copy trained a few steps on random data, until its filters rank differently."""
    model = copy.deepcopy(initial).train()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    torch.manual_seed(1)
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 4, (64,))
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def kept(graph: sg.DependencyGraph, plan: sg.PruningPlan, gid: str, dim: str) -> list[int]:
    """Indices of ``dim`` ("param:dim") whose unit the plan keeps."""
    drop = set(plan.cut(gid).drop)
    return [i for i, u in enumerate(graph.unit_map(gid)[dim]) if u >= 0 and u not in drop]


def test_a_plan_from_trained_weights_slices_the_initial_ones() -> None:
    torch.manual_seed(0)
    initial = cnn().eval()
    model_a = trained(initial)
    graph_a = sg.trace(model_a, (X,))
    plan = sg.plan(graph_a, ratio=0.5, importance="l2")
    # the test means something only if the initial weights would choose otherwise
    plan_b = sg.plan(sg.trace(initial, (X,)), ratio=0.5, importance="l2")
    assert [c.drop for c in plan.cuts] != [c.drop for c in plan_b.cuts]

    reloaded = sg.PruningPlan.model_validate_json(plan.model_dump_json())
    slim_b = sg.apply(initial, reloaded)
    first = kept(graph_a, plan, "0.weight:0", "0.weight:0")
    second = kept(graph_a, plan, "3.weight:0", "3.weight:0")
    assert len(first) == len(second) == 4
    assert first == kept(graph_a, plan, "0.weight:0", "3.weight:1")  # one index set per group
    b = initial
    assert torch.equal(slim_b[0].weight, b[0].weight[first])
    assert torch.equal(slim_b[0].bias, b[0].bias[first])
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(slim_b[1], name), getattr(b[1], name)[first]), name
    assert torch.equal(slim_b[3].weight, b[3].weight[second][:, first])
    assert torch.equal(slim_b[4].weight, b[4].weight[second])
    assert torch.equal(slim_b[8].weight, b[8].weight[:, second])
    assert torch.equal(slim_b[8].bias, b[8].bias)
    # the same plan on A keeps the same positions of A's weights
    slim_a = sg.apply(model_a, plan, graph=graph_a)
    assert torch.equal(slim_a[3].weight, model_a[3].weight[second][:, first])
    assert not torch.equal(slim_a[3].weight, slim_b[3].weight)


def test_a_plan_made_at_batch_1_applies_at_batch_8() -> None:
    # the exported program does not depend on the batch size, so neither does the
    # fingerprint; tiny Llama's rotary broadcast is elided by export at batch 1 only
    for model, one, eight in [
        (cnn().eval(), (X[:1],), (torch.cat([X] * 4),)),
        (*_llama_inputs(build("llama")),),
    ]:
        at_1, at_8 = sg.trace(model, one), sg.trace(model, eight)
        assert at_1.fingerprint == at_8.fingerprint
        plan = sg.plan(at_1, ratio=0.5)
        slim = sg.apply(model, plan, graph=at_8, example_inputs=eight)
        assert sg.count_params(slim) == plan.params_after


def _llama_inputs(built):
    model, x = built
    return model, {k: v[:1] for k, v in x.items()}, {k: torch.cat([v] * 4) for k, v in x.items()}


def test_the_kept_indices_of_a_plan_are_resolved_once_per_graph_and_handed_out_fresh() -> None:
    graph = sg.trace(cnn().eval(), (X,))
    half, quarter = sg.plan(graph, ratio=0.5), sg.plan(graph, ratio=0.25)
    first = kept_shapes(graph, half)
    assert {k: [(d, len(i)) for d, i in v] for k, v in first.items()} == {
        "0.weight": [(0, 4)],
        "0.bias": [(0, 4)],
        "1.weight": [(0, 4)],
        "1.bias": [(0, 4)],
        "1.running_mean": [(0, 4)],
        "1.running_var": [(0, 4)],
        "3.weight": [(0, 4), (1, 4)],
        "3.bias": [(0, 4)],
        "4.weight": [(0, 4)],
        "4.bias": [(0, 4)],
        "4.running_mean": [(0, 4)],
        "4.running_var": [(0, 4)],
        "8.weight": [(1, 4)],
    }
    first["3.weight"].clear()  # the caller's copy: the next call is whole again
    copied = half.model_copy(update={"predicted_latency_ms": 1.0})  # same cuts
    again = kept_shapes(graph, copied)
    assert [d for d, _ in again["3.weight"]] == [0, 1]
    assert again["0.weight"][0][1].tolist() == kept_shapes(graph, half)["0.weight"][0][1].tolist()
    assert len(kept_shapes(graph, quarter)["0.weight"][0][1]) == 6  # another plan: resolved anew
