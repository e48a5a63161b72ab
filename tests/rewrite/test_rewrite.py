"""Applying plans: new module or in place, attributes, and refusals that change nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimgraph as sg


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.norm = nn.GroupNorm(4, 16)
        self.fc1 = nn.Linear(16, 32)
        self.ln = nn.LayerNorm(32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x):
        x = self.norm(self.dw(torch.relu(self.bn(self.conv(x)))))
        x = x.mean((2, 3))
        return self.fc2(self.ln(torch.relu(self.fc1(x))))


X = torch.randn(2, 3, 8, 8)


@pytest.fixture
def net_and_plan():
    model = Net().eval()
    graph = sg.trace(model, (X,))
    return model, graph, sg.plan(graph, ratio=0.5)


def test_attributes_follow_the_new_shapes(net_and_plan) -> None:
    model, graph, plan = net_and_plan
    slim = sg.apply(model, plan, graph=graph, example_inputs=(X,))
    assert (slim.conv.out_channels, slim.bn.num_features) == (8, 8)
    assert (slim.dw.in_channels, slim.dw.out_channels, slim.dw.groups) == (8, 8, 8)
    assert (slim.norm.num_channels, slim.norm.num_groups) == (8, 2)
    assert (slim.fc1.in_features, slim.fc1.out_features, slim.ln.normalized_shape) == (8, 16, (16,))
    assert slim.fc2.in_features == 16
    assert slim.bn.running_mean.shape == (8,)
    assert slim(X).shape == (2, 5)


def test_original_is_untouched_by_default(net_and_plan) -> None:
    model, graph, plan = net_and_plan
    before = {k: v.clone() for k, v in model.state_dict().items()}
    slim = sg.apply(model, plan, graph=graph)
    assert slim is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.conv.out_channels == 16


def test_inplace_changes_the_model_itself(net_and_plan) -> None:
    model, graph, plan = net_and_plan
    expected = sg.apply(model, plan, graph=graph)
    same = sg.apply(model, plan, graph=graph, inplace=True)
    assert same is model
    assert model.conv.out_channels == 8 and model.norm.num_groups == 2
    for key, value in expected.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_kept_weights_are_the_original_slices(net_and_plan) -> None:
    model, graph, plan = net_and_plan
    slim = sg.apply(model, plan, graph=graph)
    units = graph.unit_map("conv.weight:0")["conv.weight:0"]  # GroupNorm: 4 units of 4
    assert units == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    keep = [i for i, u in enumerate(units) if u not in plan.cut("conv.weight:0").drop]
    assert len(keep) == 8
    torch.testing.assert_close(slim.conv.weight, model.conv.weight[keep])
    torch.testing.assert_close(slim.dw.weight, model.dw.weight[keep])


class HardCoded(nn.Sequential):
    """Reads a width the graph cannot see (a literal 16): the dry run must refuse."""

    def forward(self, x):
        return self[2](self[1](self[0](x)).reshape(x.shape[0], 16, 8, 8))


@pytest.mark.parametrize(
    ("inplace", "inputs", "check"),
    [
        (False, None, "meta dry run"),
        (True, None, "meta dry run"),
        (False, (X,), "forward check"),  # the check on the real weights is the dry run
        (True, (X,), "forward check"),
    ],
)
def test_failed_dry_run_changes_nothing(inplace: bool, inputs, check: str) -> None:
    model = HardCoded(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 4, 1)).eval()
    graph = sg.trace(model, (X,))
    plan = sg.plan(graph, ratio=0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sg.RewriteError, match=f"{check} of the slimmed model failed"):
        sg.apply(model, plan, graph=graph, inplace=inplace, example_inputs=inputs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model[0].out_channels == 16


def test_apply_refuses_what_is_not_a_plan(net_and_plan) -> None:
    model, graph, plan = net_and_plan
    with pytest.raises(sg.PlanError, match="apply\\(\\) takes a PruningPlan, not dict"):
        sg.apply(model, plan.model_dump(), graph=graph)


def test_multihead_attention_attributes() -> None:
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(6, 16)
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
            self.out = nn.Linear(16, 3)

        def forward(self, x):
            h = self.inp(x)
            return self.out(h + self.attn(h, h, h, need_weights=False)[0])

    model = Encoder().eval()
    x = torch.randn(2, 5, 6)
    result = sg.slim(model, (x,), ratio=0.5)  # whole heads go
    attn = result.model.attn
    assert (attn.embed_dim, attn.num_heads, attn.head_dim, attn.in_proj_weight.shape) == (
        8,
        2,
        4,
        (24, 8),
    )
    assert result.model(x).shape == (2, 5, 3)
    result = sg.slim(model, (x,), ratio=0.5, head_dims=True)  # every head narrows
    attn = result.model.attn
    assert (attn.embed_dim, attn.num_heads, attn.head_dim) == (8, 4, 2)
    assert result.model(x).shape == (2, 5, 3)


def test_modules_without_optional_tensors_still_get_their_attributes() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8, affine=False), nn.Conv2d(8, 4, 1)
    ).eval()
    slim = sg.slim(model, (X,), ratio=0.5).model
    assert (slim[0].out_channels, slim[1].num_features, slim[1].running_mean.shape) == (4, 4, (4,))
    assert slim[0].bias is None and slim[1].weight is None
    assert slim(X).shape == (2, 4, 6, 6)
