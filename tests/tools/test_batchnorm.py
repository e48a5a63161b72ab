"""``sg.recalibrate_bn``: a failure leaves the statistics the model had."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import slimgraph as sg


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1.0, 1.0)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].num_batches_tracked.fill_(7)
    return net


def _state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net[1].state_dict().items()}


def test_a_batch_that_raises_midway_restores_the_statistics() -> None:
    net = _net()
    before = _state(net)

    def batches() -> Iterator[torch.Tensor]:
        yield torch.randn(8, 3, 8, 8) + 2.0
        yield torch.randn(8, 5, 8, 8)  # wrong channel count: the conv raises

    with pytest.raises(RuntimeError):
        sg.recalibrate_bn(net, batches())
    torch.testing.assert_close(_state(net), before)
    assert net[1].momentum == 0.1
    assert not net.training


def test_no_batch_restores_the_statistics() -> None:
    net = _net()
    before = _state(net)
    with pytest.raises(sg.SlimGraphError, match="no batches"):
        sg.recalibrate_bn(net, [])
    torch.testing.assert_close(_state(net), before)


def test_a_full_run_replaces_the_statistics() -> None:
    net = _net()
    before = _state(net)
    assert sg.recalibrate_bn(net, [torch.randn(8, 3, 8, 8) + 2.0]) == 1
    assert net[1].num_batches_tracked.item() == 1
    assert not torch.allclose(net[1].running_mean, before["running_mean"])
