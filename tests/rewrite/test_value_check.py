"""The value check after a rewrite: on exact plans the slim model must compute what the
original computes with the dropped units zeroed; code that branches on a width fails it."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import slimgraph as sg
from slimgraph.rewrite import fallback
from tests.oracles import kill_dropped


class Branches(nn.Module):
    """Takes another path when the hidden width is no longer 16."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 16)
        self.b = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        if h.shape[1] == 16:
            h = h * 2.0
        return self.b(h)


class Plain(Branches):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _inputs() -> tuple[torch.Tensor]:
    torch.manual_seed(0)
    return (torch.randn(8, 4),)


def test_code_that_branches_on_a_width_is_refused() -> None:
    torch.manual_seed(0)
    model = Branches().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sg.RewriteError, match=r"(?s)value check.*branches on a tensor's size"):
        sg.slim(model, _inputs(), ratio=0.5)
    torch.testing.assert_close(model.state_dict(), before)  # zeroed units put back


def test_a_value_check_failure_is_not_searched_group_by_group(monkeypatch) -> None:
    # the whole plan passes the meta dry run: skipping groups that fail it cannot help
    def searched(*_: object) -> None:
        pytest.fail("failing_groups ran for a value check failure")

    monkeypatch.setattr(fallback, "failing_groups", searched)
    torch.manual_seed(0)
    with pytest.raises(sg.RewriteError, match="value check"):
        sg.slim(Branches().eval(), _inputs(), ratio=0.5)


def test_a_normal_model_slims_without_warning_and_matches_the_oracle() -> None:
    torch.manual_seed(0)
    model = Plain().eval()
    x = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = sg.slim(model, x, ratio=0.5)
    assert result.model.a.out_features == 8
    kill_dropped(result.graph, result.plan)  # the original, with the dropped units zeroed
    with torch.no_grad():
        torch.testing.assert_close(result.model(*x), model(*x))


def test_inexact_plans_are_not_value_checked() -> None:
    # LayerNorm over the dropped dim changes the kept values by design: no refusal.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.Linear(16, 3)).eval()
    result = sg.slim(model, _inputs(), ratio=0.5)
    assert result.model[1].normalized_shape == (8,)
