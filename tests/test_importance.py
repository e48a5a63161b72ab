"""Each criterion ranks the units of a hand-built layer as it should; BatchNorm
re-estimation gives the statistics of the batches it saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import slimgraph as sg
from slimgraph.importance import CRITERIA

X = torch.randn(2, 3, 6, 6)


def conv_bn(gamma: list[float]) -> nn.Sequential:
    """conv (4 filters of growing size) -> BatchNorm with scales ``gamma`` -> 1x1 conv."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        for i in range(4):
            net[0].weight[i].fill_(float(i + 1))  # filter i has |w| = i + 1
        net[1].weight.copy_(torch.tensor(gamma))
        net[1].bias.zero_()
        net[2].weight.fill_(1.0)
    return net.eval()


def scores(net: nn.Module, criterion: str, **config) -> np.ndarray:
    graph = sg.trace(net, (X,))
    group = graph.group("0.weight:0")
    return CRITERIA[criterion](graph, [group], sg.PruneConfig(importance=criterion, **config))[
        group.id
    ]


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_magnitude_ranks_bigger_filters_higher(criterion: str) -> None:
    s = scores(conv_bn([1.0, 1.0, 1.0, 1.0]), criterion)
    assert list(np.argsort(s)) == [0, 1, 2, 3]


def test_bn_scale_ranks_by_the_batchnorm_scale_alone() -> None:
    s = scores(conv_bn([0.1, 2.0, 0.5, -1.0]), "bn_scale")
    np.testing.assert_allclose(s, [0.1, 2.0, 0.5, 1.0])  # |gamma|, filters ignored
    plan = sg.plan(sg.trace(conv_bn([0.1, 2.0, 0.5, -1.0]), (X,)), ratio=0.5, importance="bn_scale")
    assert plan.cut("0.weight:0").drop == (0, 2)


def test_bn_scale_falls_back_to_l2_without_batchnorm() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    graph = sg.trace(net, (torch.randn(2, 3),))
    groups = graph.prunable_groups()
    config = sg.PruneConfig()
    assert CRITERIA["bn_scale"](graph, groups, config)["0.weight:0"].tolist() == (
        CRITERIA["l2"](graph, groups, config)["0.weight:0"].tolist()
    )


def test_random_depends_on_the_seed_only() -> None:
    net = conv_bn([1.0] * 4)
    assert scores(net, "random", seed=3).tolist() == scores(net, "random", seed=3).tolist()
    assert scores(net, "random", seed=3).tolist() != scores(net, "random", seed=4).tolist()


def test_recalibrate_bn_matches_the_batches_statistics() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    batches = [torch.randn(4, 3, 6, 6) * 3 + 1 for _ in range(5)]
    assert sg.recalibrate_bn(net, batches) == 5
    with torch.no_grad():
        means = torch.stack([net[0](b).mean((0, 2, 3)) for b in batches]).mean(0)
    torch.testing.assert_close(net[1].running_mean, means, rtol=1e-4, atol=1e-5)
    assert not net.training and not net[1].training  # modes restored


def test_taylor_ranks_by_weight_times_gradient() -> None:
    net = conv_bn([1.0] * 4)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        # filter i has |w| = i + 1; gradients make |w * g| = 4, 1, 9, 0 per weight
        for i, g in enumerate([4.0, 0.5, 3.0, 0.0]):
            net[0].weight.grad[i].fill_(g)
    s = scores(net, "taylor")
    assert list(np.argsort(s)) == [3, 1, 0, 2]  # unlike l2, which ranks 0, 1, 2, 3


def test_taylor_without_gradients_says_what_to_do() -> None:
    net = conv_bn([1.0] * 4)
    with pytest.raises(sg.PlanError, match="importance='taylor' needs gradients"):
        scores(net, "taylor")


def test_slim_accumulates_gradients_from_calibration_batches() -> None:
    torch.manual_seed(0)
    net = conv_bn([1.0] * 4)
    batches = [torch.randn(2, 3, 6, 6) for _ in range(3)]
    calls = []

    def loss_fn(model, batch):
        calls.append(batch.shape)
        return model(batch).square().mean()

    result = sg.slim(
        net, (X,), ratio=0.5, importance="taylor", calibration=batches, loss_fn=loss_fn
    )
    assert len(calls) == 3 and net[0].weight.grad is not None
    assert result.plan.criterion == "taylor" and result.model[0].out_channels == 2
    with pytest.raises(sg.PlanError, match="need a loss_fn"):
        sg.slim(net, (X,), importance="taylor", calibration=batches)


def test_sparsify_zeroes_the_smallest_and_says_it_is_not_faster() -> None:
    net = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(32, dtype=torch.float32).view(4, 8) - 16)
    report = sg.sparsify(net, 0.25)
    assert report.layers["0"] == 0.25 and report.layers["2"] == 0.25
    survivors = net[0].weight.abs()[net[0].weight != 0]
    assert survivors.min() >= 4  # the 8 smallest of |-16..15|: 0..3 and one of the 4s
    assert "no speed" in report.note and net[0].weight.shape == (4, 8)


def test_two_of_four_keeps_the_two_largest_of_every_four() -> None:
    net = nn.Sequential(nn.Linear(8, 2), nn.ReLU(), nn.Linear(2, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -4, 3, 2, 0, 5, -6, 1], [9, 8, 7, 6, 5, 4, 3, 2]]))
    report = sg.sparsify(net, pattern="2:4")
    assert net[0].weight.tolist() == [[0, -4, 3, 0, 0, 5, -6, 0], [9, 8, 0, 0, 5, 4, 0, 0]]
    assert report.skipped == {"2": "input width 2 is not a multiple of 4"}
    assert report.sparsity == 0.5
