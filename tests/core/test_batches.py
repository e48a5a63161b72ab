"""Batches as a DataLoader yields them: ``(inputs, labels)`` pairs are selected with
``inputs=`` everywhere data meets the model, and refused clearly without it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimgraph as sg


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)
    ).eval()


def _data() -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 8, 8, generator=g) + 1.0 for _ in range(3)]
    return batches, [(b, torch.zeros(4, dtype=torch.long)) for b in batches]


def _first(batch: tuple) -> torch.Tensor:
    return batch[0]


def test_pairs_without_a_selector_say_what_to_do() -> None:
    net, (_, labelled) = _net(), _data()
    x = (torch.randn(1, 3, 8, 8),)
    with pytest.raises(sg.BatchError) as error:
        sg.slim(net, x, importance="activation", calibration=labelled)
    message = str(error.value)
    assert "(Tensor[4, 3, 8, 8], Tensor[4])" in message
    assert "2 positional inputs" in message and "inputs=lambda batch: batch[0]" in message
    with pytest.raises(sg.BatchError):
        sg.recalibrate_bn(net, labelled)
    with pytest.raises(sg.BatchError):
        sg.recover(_net(), net, labelled, steps=1)


def test_a_selector_that_picks_the_wrong_part_is_named() -> None:
    net, (_, labelled) = _net(), _data()
    with pytest.raises(sg.BatchError, match=r"check what inputs\(batch\) returns"):
        sg.recalibrate_bn(net, labelled, inputs=lambda b: (b[0], b[1]))


def test_selected_pairs_calibrate_as_the_inputs_do() -> None:
    net, (batches, labelled) = _net(), _data()
    x = (torch.randn(1, 3, 8, 8),)
    plain = sg.slim(net, x, importance="activation", calibration=batches, ratio=0.5)
    chosen = sg.slim(
        net, x, importance="activation", calibration=labelled, inputs=_first, ratio=0.5
    )
    assert [c.drop for c in chosen.plan.cuts] == [c.drop for c in plain.plan.cuts]
    graph = sg.trace(net, x)
    measured = sg.calibrate(graph, labelled, inputs=_first)
    assert measured.provenance == sg.calibrate(graph, batches).provenance
    planned = sg.plan(
        graph, ratio=0.5, importance="activation", calibration=labelled, inputs=_first
    )
    assert [c.drop for c in planned.cuts] == [c.drop for c in plain.plan.cuts]


def test_selected_pairs_recalibrate_batchnorm_as_the_inputs_do() -> None:
    (batches, labelled), a, b = _data(), _net(), _net()
    assert sg.recalibrate_bn(a, batches) == sg.recalibrate_bn(b, labelled, inputs=_first) == 3
    assert torch.equal(a[1].running_mean, b[1].running_mean)
    assert torch.equal(a[1].running_var, b[1].running_var)
