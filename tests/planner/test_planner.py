"""Planning: ratios, rounding, minimums, ignores, overrides, scopes and criteria."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import slimgraph as sg
from slimgraph.criteria.latency import LayerTable
from slimgraph.criteria.registry import CRITERIA


class Three(nn.Module):
    """stem (16) -> mid (24) -> head (10); two prunable groups."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.mid = nn.Conv2d(16, 24, 3, padding=1)
        self.head = nn.Conv2d(24, 10, 1)

    def forward(self, x):
        return self.head(torch.relu(self.mid(torch.relu(self.stem(x)))))


X = torch.randn(1, 3, 8, 8)


@pytest.fixture(scope="module")
def graph() -> sg.DependencyGraph:
    return sg.trace(Three(), (X,))


def kept(plan: sg.PruningPlan) -> dict[str, int]:
    return {c.group: c.size - len(c.drop) for c in plan.cuts}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"ratio": 0.5}, {"stem.weight:0": 8, "mid.weight:0": 12}),
        ({"ratio": 0.3}, {"stem.weight:0": 12, "mid.weight:0": 17}),  # drop floor(n * ratio)
        ({"ratio": 0.5, "round_to": 8}, {"stem.weight:0": 8, "mid.weight:0": 16}),
        ({"ratio": 0.9, "min_keep": 4}, {"stem.weight:0": 4, "mid.weight:0": 4}),
        ({"ratio": 0.5, "ignore": ("head",)}, {"stem.weight:0": 8}),  # head reads mid: mid stays
        ({"ratio": 0.5, "ignore": ("m*",)}, {}),  # mid reads stem and feeds head
        ({"ratio": 0.5, "overrides": {"mid": 0.25}}, {"stem.weight:0": 12, "mid.weight:0": 18}),
        ({"ratio": 0.0}, {"stem.weight:0": 16, "mid.weight:0": 24}),
    ],
)
def test_kept_counts(graph, config, expected) -> None:
    assert kept(sg.plan(graph, sg.PruneConfig(**config))) == expected


def test_global_scope_keeps_the_total_ratio(graph) -> None:
    plan = sg.plan(graph, ratio=0.5, scope="global")
    assert sum(len(c.drop) for c in plan.cuts) == 20  # floor(0.5 * (16 + 24))
    assert all(c.size - len(c.drop) >= 1 for c in plan.cuts)


def test_global_scope_takes_from_the_weakest_group() -> None:
    model = Three()
    with torch.no_grad():
        model.mid.weight[:12] *= 1e-3  # half of mid is nearly dead
    graph = sg.trace(model, (X,))
    plan = sg.plan(graph, ratio=0.3, scope="global")
    assert kept(plan) == {"stem.weight:0": 16, "mid.weight:0": 12}
    assert plan.cut("mid.weight:0").drop == tuple(range(12))


def test_l1_and_l2_rank_by_every_slice_of_the_unit() -> None:
    model = Three()
    with torch.no_grad():
        model.stem.weight.fill_(1.0)
        model.stem.bias.zero_()
        model.mid.weight.fill_(1.0)
        model.mid.weight[:, 5] = 0.0  # channel 5 of stem is unused by its consumer
    graph = sg.trace(model, (X,))
    for criterion in ("l1", "l2"):
        plan = sg.plan(graph, ratio=1 / 16, importance=criterion)
        assert plan.cut("stem.weight:0").drop == (5,), criterion


def test_random_is_seeded(graph) -> None:
    a = sg.plan(graph, ratio=0.5, importance="random", seed=1)
    b = sg.plan(graph, ratio=0.5, importance="random", seed=1)
    c = sg.plan(graph, ratio=0.5, importance="random", seed=2)
    assert a == b
    assert a.cuts != c.cuts


def test_custom_criterion_by_name(graph, monkeypatch) -> None:
    monkeypatch.setitem(CRITERIA, "reverse-index", None)  # removed again after the test

    @sg.register_importance("reverse-index")
    def reverse_index(graph, groups, config):
        return {g.id: -torch.arange(g.size).double().numpy() for g in groups}

    plan = sg.plan(graph, ratio=0.25, importance="reverse-index")
    assert plan.cut("stem.weight:0").drop == (12, 13, 14, 15)


def test_a_budget_search_scores_the_groups_once(graph, monkeypatch) -> None:
    """The bisection plans a dozen ratios; the scores do not depend on the ratio."""
    calls = []
    monkeypatch.setitem(CRITERIA, "counted", None)  # removed again after the test

    @sg.register_importance("counted")
    def counted(graph, groups, config):
        calls.append(config.ratio)
        return CRITERIA["l2"](graph, groups, config)

    plan = sg.plan(graph, target_params=0.5, importance="counted")
    assert len(calls) == 1
    assert plan.cuts == sg.plan(graph, target_params=0.5, importance="l2").cuts


def test_predicted_parameter_count_is_exact(graph) -> None:
    plan = sg.plan(graph, ratio=0.5)
    model = Three()
    slim = sg.apply(model, plan, graph=graph)
    assert (
        sg.count_params(slim) == plan.params_after == 8 * 3 * 9 + 8 + 12 * 8 * 9 + 12 + 10 * 12 + 10
    )
    assert plan.params_before == sg.count_params(model)


def test_magnitude_on_meta_weights_asks_for_random() -> None:
    with torch.device("meta"):
        model = Three()
    graph = sg.trace(model, (torch.randn(1, 3, 8, 8, device="meta"),))
    with pytest.raises(
        sg.PlanError, match="need real weights: .* or plan with importance='random'"
    ):
        sg.plan(graph, ratio=0.5)
    assert kept(sg.plan(graph, ratio=0.5, importance="random")) == {
        "stem.weight:0": 8,
        "mid.weight:0": 12,
    }


def test_prune_residual_false_leaves_residual_streams_alone() -> None:
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).eval()
    graph = sg.trace(model, (torch.randn(1, 3, 32, 32),))
    residual = [g.id for g in graph.prunable_groups() if g.residual]
    assert residual == [
        "conv1.weight:0",
        "layer2.0.conv2.weight:0",
        "layer3.0.conv2.weight:0",
        "layer4.0.conv2.weight:0",
    ]
    plan = sg.plan(graph, ratio=0.5, prune_residual=False)
    assert sorted(plan.skipped) == sorted(residual)
    assert set(plan.skipped.values()) == {"residual stream (prune_residual=False)"}
    assert {c.group for c in plan.cuts} == {
        f"layer{i}.{j}.conv1.weight:0" for i in range(1, 5) for j in range(2)
    }
    slim = sg.apply(model, plan, graph=graph)
    assert (
        slim.conv1.out_channels,
        slim.layer1[0].conv1.out_channels,
        slim.layer4[1].conv2.out_channels,
    ) == (64, 32, 512)


def test_a_parameter_added_to_a_stream_is_not_a_residual() -> None:
    class Biased(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)
            self.shift = nn.Parameter(torch.zeros(8))

        def forward(self, x):
            return self.b(self.a(x) + self.shift)

    graph = sg.trace(Biased(), (torch.randn(1, 4),))
    assert [(g.id, g.residual) for g in graph.prunable_groups()] == [("a.weight:0", False)]


@pytest.mark.parametrize("target", [0.5, 0.3])
def test_target_macs_lands_within_one_percent(target: float) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    result = sg.slim(model, (x,), target_macs=target)
    kept = sg.count_macs(result.model, (x,)) / sg.count_macs(model, (x,))
    assert abs(kept - target) <= 0.01 * target
    assert result.plan.config.target_macs == target
    assert 0.0 < result.plan.config.ratio < 1.0  # the ratio the search settled on


def test_a_budget_counts_from_the_whole_model_when_overrides_cut_at_ratio_0() -> None:
    # the override cuts layer1 by half whatever the ratio; the MACs kept are still a
    # fraction of the whole model's (they were of the model with layer1 already cut)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = (torch.randn(1, 3, 64, 64),)
    result = sg.slim(model, x, target_macs=0.5, overrides={"layer1.*": 0.5})
    kept = sg.count_macs(result.model, x) / sg.count_macs(model, x)
    assert abs(kept - 0.5) <= 0.005
    assert result.model.layer1[0].conv1.out_channels == 32  # the override's half of 64
    assert result.plan.config.ratio < 0.5  # the rest is cut less to meet 0.5


def tiny_vit() -> nn.Module:
    """Two encoder layers of 4 heads over a 32-wide residual stream (8 per head)."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=128
    ).eval()


def test_target_macs_keeps_whole_heads_at_the_lighter_cut_and_cuts_the_rest_deeper() -> None:
    # nn.MultiheadAttention ties the residual stream to its heads, so that stream narrows
    # 8 channels at a time: one ratio for every group goes from 4 heads (0.55 of the
    # MACs) to 3 heads (0.46) between neighbouring ratios. The heads stay at the lighter
    # cut and the MLPs go on to 54 of 128.
    model, x = tiny_vit(), (torch.randn(1, 3, 32, 32),)
    result = sg.slim(model, x, target_macs=0.5)
    kept = sg.count_macs(result.model, x) / sg.count_macs(model, x)
    assert round(kept, 4) == 0.499
    widths = {c.group.split(".")[-2]: c.size - len(c.drop) for c in result.plan.cuts}
    assert widths == {"conv_proj": 24, "self_attention": 3, "0": 54}  # heads: 3 of 4
    assert result.model.encoder.layers[0].self_attention.num_heads == 3
    # the recorded ratio is the MLPs': at it, every group cut alike keeps far less
    uniform = sg.plan(sg.trace(model, x), ratio=result.plan.config.ratio)
    assert {c.size - len(c.drop) for c in uniform.cuts} == {16, 2, 54}
    # the plan names the held groups, and its review says whose the ratio is
    heads = [f"encoder.layers.encoder_layer_{i}.self_attention.in_proj_weight:0" for i in (0, 1)]
    assert result.plan.held == ("conv_proj.weight:0", *heads)
    assert result.plan.summary().held_line() == (
        f"held at a lighter cut (one step deeper oversteps the budget): conv_proj.weight:0, {', '.join(heads)}"
        f"; the ratio {result.plan.config.ratio:.4f} is the other groups'"
    )
    assert sg.plan(sg.trace(model, x), target_macs=0.6).held == ()  # 0.6 needs no hold


@pytest.mark.parametrize("scope", ["global", "isomorphic"])
def test_a_ranked_budget_plan_holds_whole_heads_and_ranks_the_rest_again(scope: str) -> None:
    # the same jump in a ranked scope (one ratio kept 0.512 globally, 0.528 isomorphically):
    # the heads and the residual stream keep the lighter cut, the MLPs alone rank again
    model, x = tiny_vit(), (torch.randn(1, 3, 32, 32),)
    result = sg.slim(model, x, target_macs=0.5, scope=scope)
    kept = sg.count_macs(result.model, x) / sg.count_macs(model, x)
    assert round(kept, 4) == 0.5004
    assert [c.size - len(c.drop) for c in result.plan.cuts] == [24, 3, 57, 3, 52]
    assert result.model.encoder.layers[1].self_attention.num_heads == 3
    assert result.model.encoder.layers[1].mlp[0].out_features == 52
    assert [gid.split(".")[-2] for gid in result.plan.held] == [
        "conv_proj",
        *["self_attention"] * 2,
    ]


def _steps_at_once() -> nn.Sequential:
    """16 -> 64 -> 64 -> 64 -> 4: three 64-wide groups, which step at the same ratios."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
        nn.Linear(64, 4),
    ).eval()  # fmt: skip


def test_when_every_group_steps_at_once_some_step_and_the_rest_are_held() -> None:
    # 16 -> 64 -> 64 -> 64 -> 4 at round_to=8: each 64-wide group takes its 8-channel
    # steps at the same ratios, so one ratio for all keeps 48 each (0.588 of the MACs)
    # or 40 each (0.422). The middle group's step alone saves the most (8 channels off
    # two 48-wide layers: 768 MACs, against 512 and 416), so it steps first: 0.507
    net = _steps_at_once()
    x = (torch.randn(8, 16),)
    graph = sg.trace(net, x)
    plan = sg.plan(graph, target_macs=0.5, round_to=8)
    assert [c.size - len(c.drop) for c in plan.cuts] == [48, 40, 48]
    assert set(plan.held) == {"0.weight:0", "4.weight:0"}
    slim = sg.apply(net, plan, graph=graph)
    # 16·48 + 48·40 + 40·48 + 48·4 = 4800 of 16·64 + 2·64·64 + 64·4 = 9472
    assert sg.count_macs(slim, x) == 4800 * 8 and sg.count_macs(net, x) == 9472 * 8
    assert {c.size - len(c.drop) for c in sg.plan(graph, ratio=0.375, round_to=8).cuts} == {40}
    assert {c.size - len(c.drop) for c in sg.plan(graph, ratio=0.37, round_to=8).cuts} == {48}


def test_a_step_that_loses_no_score_goes_first() -> None:
    # the same network, with 24 of the last group's units near zero: its next step (the
    # lighter cut drops 16 of them) loses almost no score, so it steps first though it
    # saves the least (416 MACs). The middle group's step would then overstep the budget
    # (0.470 of the MACs), the first one's not as far (0.490): it steps, the middle is held
    net = _steps_at_once()
    with torch.no_grad():
        for weight in (net[4].weight[:24], net[4].bias[:24], net[6].weight[:, :24]):
            weight *= 1e-3
    x = (torch.randn(8, 16),)
    graph = sg.trace(net, x)
    plan = sg.plan(graph, target_macs=0.5, round_to=8)
    assert [c.size - len(c.drop) for c in plan.cuts] == [40, 48, 40]
    assert plan.held == ("2.weight:0",)
    # 16·40 + 40·48 + 48·40 + 40·4 = 4640 of 9472
    assert sg.count_macs(sg.apply(net, plan, graph=graph), x) == 4640 * 8


def test_a_latency_budget_steps_the_group_that_saves_the_most_time() -> None:
    # tables of out·in µs, the first layer's 20× that: its group's step saves the most
    # time (2.88 ms against 0.64 and 0.352), though the middle one's saves the most MACs
    net = _steps_at_once()
    graph = sg.trace(net, (torch.randn(8, 16),))
    layers = {}
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            (o, i), cost = m.weight.shape, (20.0 if name == "0" else 1.0) / 1000
            grid = tuple(tuple(cost * a * b for b in (1, i)) for a in (1, o))
            layers[name] = LayerTable(shape=(o, i), outs=(1, o), ins=(1, i), ms=grid)
    lm = sg.LatencyModel(runtime="torch", version="-", machine="-", threads=1, layers=layers)
    # 28.928 ms whole; 40 each keep 0.559, 32 each 0.429; the first group's step alone
    # 13.28 ms (0.459): 20·32·16 + 32·40 + 40·40 + 40·4, over 1000
    plan = sg.plan(graph, target_latency=0.47, latency_model=lm, round_to=8)
    assert [c.size - len(c.drop) for c in plan.cuts] == [32, 40, 40]
    assert set(plan.held) == {"2.weight:0", "4.weight:0"}
    assert plan.predicted_latency_ms == pytest.approx(13.28)
    by_macs = sg.plan(graph, target_macs=0.5, round_to=8)  # the middle group steps
    assert [c.size - len(c.drop) for c in by_macs.cuts] == [48, 40, 48]


def test_target_macs_on_a_tiny_llama() -> None:
    from tests.hf_models import build

    model, x = build("llama")
    result = sg.slim(model, x, target_macs=0.5)
    kept = sg.count_macs(result.model, x) / sg.count_macs(model, x)
    assert abs(kept - 0.5) <= 0.005


@pytest.mark.parametrize("target", [0.5, 0.3])
def test_target_params_lands_within_one_percent(target: float) -> None:
    model = torchvision.models.mobilenet_v2().eval()
    x = torch.randn(1, 3, 64, 64)
    result = sg.slim(model, (x,), target_params=target)
    kept = sg.count_params(result.model) / sg.count_params(model)
    assert abs(kept - target) <= 0.01 * target
    assert result.plan.params_after == sg.count_params(result.model)


def test_one_budget_at_a_time() -> None:
    with pytest.raises(ValueError, match="give one budget, not target_macs and target_params"):
        sg.PruneConfig(target_macs=0.5, target_params=0.5)
