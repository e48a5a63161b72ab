"""Each criterion ranks the units of a hand-built layer as it should; BatchNorm
re-estimation gives the statistics of the batches it saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import slimgraph as sg
from slimgraph.criteria.registry import CRITERIA

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


def three_units() -> nn.Sequential:
    """Unit 0: weights 1, 1, bias 0, read by a 1; unit 1: weights 3, 4, bias 0, read by a
    1; unit 2: weights 0, 0, bias 2.5, read by a 0. Gradients are 1 everywhere."""
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0], [3.0, 4.0], [0.0, 0.0]]))
        net[0].bias.copy_(torch.tensor([0.0, 0.0, 2.5]))
        net[1].weight.copy_(torch.tensor([[1.0, 1.0, 0.0]]))
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    return net


@pytest.mark.parametrize(
    ("reduction", "l1", "l2_squared", "drop"),
    [
        # slice means of |w| (weight, bias, reader): 1, 0, 1 | 3.5, 0, 1 | 0, 2.5, 0
        ("mean", [3 / 4, 8 / 4, 2.5 / 4], [3 / 4, 26 / 4, 6.25 / 4], (2,)),  # 4 weights
        ("sum", [1 + 1, 3.5 + 1, 2.5], [1 + 1, 12.5 + 1, 6.25], (0,)),
        ("max", [1, 3.5, 2.5], [1, 12.5, 6.25], (0,)),
    ],
)
def test_reduction_combines_the_slices_as_defined(reduction, l1, l2_squared, drop) -> None:
    net = three_units()
    graph = sg.trace(net, (torch.randn(1, 2),))
    groups, config = graph.prunable_groups(), sg.PruneConfig(reduction=reduction)
    assert CRITERIA["l1"](graph, groups, config)["0.weight:0"].tolist() == l1
    assert CRITERIA["taylor_weight"](graph, groups, config)["0.weight:0"].tolist() == l1  # g=1
    assert CRITERIA["l2"](graph, groups, config)["0.weight:0"].tolist() == (
        np.sqrt(l2_squared).tolist()  # the root is taken after the reduction
    )
    plan = sg.plan(graph, ratio=1 / 3, importance="l1", reduction=reduction)
    assert plan.cut("0.weight:0").drop == drop


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
    # taylor: (sum of w * g over the 27 weights of the filter)^2; BatchNorm grads are 0
    assert scores(net, "taylor").tolist() == [108.0**2, 27.0**2, 243.0**2, 0.0]
    s = scores(net, "taylor_weight")  # the mean |w * g| per weight of the unit
    assert list(np.argsort(s)) == [3, 1, 0, 2]  # unlike l2, which ranks 0, 1, 2, 3


def test_taylor_sums_squared_estimates_per_batch_so_noise_does_not_cancel() -> None:
    """Unit 0's gradient flips sign between the batches, unit 1's does not: the summed
    gradient says unit 0 does not matter, the per-batch estimates say it matters most."""
    net = nn.Sequential(nn.Linear(1, 2), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    batches = [torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])]

    def loss_fn(model, batch):  # d loss / d w_j0 = batch[j]
        return (model[0].weight[:, 0] * batch).sum()

    graph = sg.trace(net, (torch.randn(1, 1),))
    calibration = sg.calibrate(graph, batches, loss_fn, sg.PruneConfig(importance="taylor"))
    plan = sg.plan(graph, ratio=0.5, importance="taylor", calibration=calibration)
    assert calibration.taylor["0.weight:0"].tolist() == [4.0 + 4.0, 0.25 + 0.25]
    assert plan.cut("0.weight:0").drop == (1,)
    torch.testing.assert_close(net[0].weight.grad[:, 0], torch.tensor([0.0, 1.0]))  # summed
    own = sg.trace(net, (torch.randn(1, 1),))  # the caller's .grad: one summed estimate
    assert sg.plan(own, ratio=0.5, importance="taylor").cut("0.weight:0").drop == (0,)


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
    with pytest.raises(sg.PlanError, match="needs gradients: pass loss_fn"):
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


@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor_weight"])
def test_weight_criteria_list_the_parameters_once_for_all_groups(
    criterion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    net(torch.randn(3, 4)).sum().backward()  # gradients for taylor_weight
    graph = sg.trace(net, (torch.randn(1, 4),))
    groups = graph.prunable_groups()
    listed: list[str] = []

    def counting(method: str):
        listing = getattr(type(graph), method)

        def counted(self):
            listed.append(method)
            return listing(self)

        return counted

    for method in ("named_parameters", "weights"):  # weights: what l1 and l2 read
        monkeypatch.setattr(type(graph), method, counting(method))
    found = CRITERIA[criterion](graph, groups, sg.PruneConfig())
    assert len(groups) == 2 and sorted(found) == sorted(g.id for g in groups)
    # one listing for the scores (taylor_weight: one more to check every .grad exists)
    assert len(listed) == (2 if criterion == "taylor_weight" else 1)
