"""``departure``: how far a slim model is from its original on calibration batches, the
score ``drop_blocks="auto"`` minimises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimgraph as sg
from slimgraph.tools.departure import departure
from slimgraph.tools.recover import distill_loss


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)).train()
    return net, sg.slim(net, (torch.randn(1, 4),), ratio=0.5).model


def test_without_a_loss_it_is_the_distillation_loss_against_the_original_in_eval() -> None:
    net, slim = _pair()
    batches = [torch.randn(8, 4), torch.randn(8, 4)]
    score = departure(net, batches)
    assert score(net) == 0.0
    with torch.no_grad():
        net.eval(), slim.eval()
        kl = [distill_loss(slim(b), net(b))[0] for b in batches]
        net.train(), slim.train()
    assert score(slim) == pytest.approx(float(sum(kl)) / 2, rel=1e-6)
    assert net.training and slim.training  # modes restored


def test_with_a_loss_it_is_the_mean_loss_and_inputs_select_the_model_inputs() -> None:
    net, slim = _pair()
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(3)]

    def loss_fn(m: nn.Module, b: tuple) -> torch.Tensor:
        return nn.functional.cross_entropy(m(b[0]), b[1])

    score = departure(net, iter(batches), lambda b: b[0], loss_fn)
    with torch.no_grad():
        slim.eval()
        expected = sum(float(loss_fn(slim, b)) for b in batches) / 3
    assert score(slim) == pytest.approx(expected, rel=1e-6)
    assert departure(net, batches, lambda b: b[0])(net) == 0.0


def test_bad_input_is_refused() -> None:
    net, slim = _pair()
    with pytest.raises(sg.PlanError, match="no calibration batches"):
        departure(net, [])
    vector = departure(net, [torch.randn(2, 4)], loss_fn=lambda m, b: m(b).sum(0))
    with pytest.raises(sg.PlanError, match="scalar tensor"):
        vector(slim)
