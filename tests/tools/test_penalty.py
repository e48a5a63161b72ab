"""group_penalty: the exact group-lasso value on hand-built layers, gradients that flow
(and stay finite at zero), and training that zeroes whole units which l2 then drops."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import slimgraph as sg

X = torch.randn(2, 3, 6, 6)


def conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-1, 1)
    return net.eval()


def by_hand(net: nn.Sequential, p: float) -> torch.Tensor:
    """Per unit i: the p-norm of filter i, its bias, BN scale and shift, and input i of the
    1x1 conv, summed over the four units."""
    conv, bn, last = net[0], net[1], net[3]
    total = torch.zeros(())
    for i in range(4):
        pieces = [conv.weight[i], conv.bias[i : i + 1], bn.weight[i : i + 1], bn.bias[i : i + 1]]
        pieces.append(last.weight[:, i])
        flat = torch.cat([t.detach().flatten() for t in pieces])
        total = total + flat.abs().pow(p).sum().pow(1 / p)
    return total


@pytest.mark.parametrize("p", [1, 2])
def test_value_is_the_sum_of_unit_norms(p: int) -> None:
    net = conv_bn()
    graph = sg.trace(net, (X,))
    torch.testing.assert_close(sg.group_penalty(graph, p=p), by_hand(net, p))


def test_hand_computed_number() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
        net[0].bias.copy_(torch.tensor([2.0, 3.0]))
        net[2].weight.copy_(torch.tensor([[4.0, 4.0]]))
    # unit 0: sqrt(1 + 4 + 4 + 16) = 5; unit 1: sqrt(9 + 16) = 5
    assert sg.group_penalty(sg.trace(net, (torch.randn(1, 2),))).item() == 10.0


def test_gradients_flow_and_stay_finite_at_a_zero_unit() -> None:
    net = conv_bn()
    with torch.no_grad():  # unit 2 all zeros: the root's derivative is infinite there
        net[0].weight[2].zero_()
        net[0].bias[2].zero_()
        net[1].weight[2].zero_()
        net[1].bias[2].zero_()
        net[3].weight[:, 2].zero_()
    graph = sg.trace(net, (X,))
    sg.group_penalty(graph).backward()
    for name in ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all(), name
    assert net[0].weight.grad[2].abs().sum() == 0 and net[0].weight.grad[1].abs().sum() > 0
    # the gradient of ||w|| is w / ||w||
    unit1 = torch.cat(
        [
            net[0].weight[1].flatten(),
            net[0].bias[1:2],
            net[1].weight[1:2],
            net[1].bias[1:2],
            net[3].weight[:, 1].flatten(),
        ]
    ).detach()
    torch.testing.assert_close(net[0].weight.grad[1], net[0].weight[1].detach() / unit1.norm())
    assert net[3].bias.grad is None  # the output layer's bias belongs to no prunable group


def test_model_argument_supplies_the_live_parameters() -> None:
    net = conv_bn()
    graph = sg.trace(net, (X,))
    other = copy.deepcopy(net)
    with torch.no_grad():
        other[0].weight.mul_(3.0)
    penalty = sg.group_penalty(graph, other)
    torch.testing.assert_close(penalty, by_hand(other, 2))
    penalty.backward()
    assert other[0].weight.grad is not None and net[0].weight.grad is None


def test_a_model_of_other_widths_is_refused() -> None:
    graph = sg.trace(conv_bn(), (X,))
    slim = sg.slim(conv_bn(), (X,), ratio=0.5).model
    with pytest.raises(sg.PlanError, match="trace the model again"):
        sg.group_penalty(graph, slim)
    with pytest.raises(sg.PlanError, match="no parameter"):
        sg.group_penalty(graph, nn.Linear(2, 2))


def train(penalty_weight: float) -> tuple[nn.Sequential, torch.Tensor]:
    """300 SGD steps on a target that needs few hidden units; returns the net and the
    norm of each of its 8 hidden units."""
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, :1] - 2 * x[:, 1:2]).relu() + 0.5 * x[:, 2:3]
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    graph = sg.trace(net, (x[:1],))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(300):
        loss = nn.functional.mse_loss(net(x), y) + penalty_weight * sg.group_penalty(graph)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        norms = (
            net[0].weight.square().sum(1) + net[0].bias.square() + net[2].weight.square().sum(0)
        ).sqrt()
    return net, norms


def test_training_with_the_penalty_zeroes_whole_units_that_l2_drops() -> None:
    _, plain = train(0.0)
    assert plain.min() > 0.1  # without the penalty no unit dies
    net, norms = train(0.05)
    dead = sorted((norms < 0.01).nonzero().flatten().tolist())
    assert len(dead) >= 2
    assert norms[norms >= 0.01].min() > 50 * norms[dead].max()  # dead, not merely small
    graph = sg.trace(net, (torch.randn(1, 4),))
    plan = sg.plan(graph, ratio=len(dead) / 8, importance="l2")
    assert list(plan.cut("0.weight:0").drop) == dead
