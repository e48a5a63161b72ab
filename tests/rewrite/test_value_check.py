"""The value check after a rewrite: on exact plans the slim model must compute what the
original computes with the dropped units zeroed; code that branches on a width fails it."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import slimgraph as sg
from slimgraph.resolve.indices import kept_shapes
from slimgraph.rewrite import fallback, verify
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


class ReadsWeights(nn.Module):
    """Reads its weights through views made in Python, a weight tied under two names
    and used twice, and a recurrent layer that takes its weights as a list."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 16)
        self.b = nn.Linear(16, 16)
        self.b_again = nn.Linear(16, 16)
        self.b_again.weight = self.b.weight
        self.rnn = nn.GRU(16, 8, batch_first=True)
        self.c = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x @ self.a.weight.t() + self.a.bias)
        h = torch.relu(self.b_again(torch.relu(self.b(h))))
        h, _ = self.rnn(h.unsqueeze(1))
        return self.c(h.squeeze(1))


class HoldsAView(nn.Module):
    """Holds a view of one zeroed weight while two weights of its size are zeroed: a
    reused buffer would hand ``b`` the zeros of ``c`` or ``d``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 16)
        self.b, self.c, self.d = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.e = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b_t = self.b.weight.t()
        h = torch.relu(self.d(torch.relu(self.c(torch.relu(self.a(x))))))
        return self.e(torch.relu(h @ b_t + self.b.bias))


class Convs(nn.Module):
    """Convolutions with and without biases, a depthwise one, and two whose outputs are
    contracted over their channels (a non-local block's attention); on small images their
    weights outsize their activations. The shifts leave the dropped units nonzero where
    only the next convolution zeroes them."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1, bias=False)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.c = nn.Conv2d(32, 16, 1)
        self.q, self.k = nn.Conv2d(32, 16, 1), nn.Conv2d(32, 16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.a(x)) + 0.5
        h = torch.relu(self.depthwise(torch.relu(self.b(h)) + 0.5))
        attention = self.q(h).flatten(2).transpose(1, 2) @ self.k(h).flatten(2)
        return self.c(h), attention


def _conv_inputs(side: int) -> tuple[torch.Tensor]:
    torch.manual_seed(0)
    return (torch.randn(1, 3, side, side),)


@pytest.mark.parametrize(
    ("build", "inputs"),
    [
        (Plain, _inputs),
        (ReadsWeights, _inputs),
        (HoldsAView, _inputs),
        (Convs, lambda: _conv_inputs(2)),  # convolutions zero their activations
        (Convs, lambda: _conv_inputs(32)),  # convolutions zero their weights
    ],
)
def test_the_reference_is_the_original_with_the_dropped_units_zeroed(build, inputs) -> None:
    torch.manual_seed(0)
    model = build().eval()
    x = inputs()
    graph = sg.trace(model, x)
    plan = sg.plan(graph, ratio=0.5)
    assert any(c.drop for c in plan.cuts)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    storages = {k: v.untyped_storage().data_ptr() for k, v in model.state_dict().items()}
    reference = verify.reference_outputs(model, plan, graph, kept_shapes(graph, plan), x)
    assert reference is not None
    # the caller's tensors are neither written nor replaced
    torch.testing.assert_close(model.state_dict(), before, rtol=0, atol=0)
    assert {k: v.untyped_storage().data_ptr() for k, v in model.state_dict().items()} == storages
    kill_dropped(graph, plan)
    with torch.no_grad():
        expected = model(*x)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    torch.testing.assert_close(reference.outputs, expected, rtol=0, atol=0)


def test_parameters_that_share_one_storage_are_each_zeroed() -> None:
    # two parameters viewing one buffer: the zeroed copy is of the whole buffer
    torch.manual_seed(0)
    model = Plain().eval()
    flat = torch.randn(16 * 4 + 16)
    model.a.weight = nn.Parameter(flat[:64].view(16, 4))
    model.a.bias = nn.Parameter(flat[64:])
    assert model.a.weight.untyped_storage().data_ptr() == model.a.bias.untyped_storage().data_ptr()
    x = _inputs()
    graph = sg.trace(model, x)
    plan = sg.plan(graph, ratio=0.5)
    reference = verify.reference_outputs(model, plan, graph, kept_shapes(graph, plan), x)
    assert reference is not None
    assert torch.equal(flat, torch.cat([model.a.weight.detach().flatten(), model.a.bias.detach()]))
    kill_dropped(graph, plan)
    with torch.no_grad():
        torch.testing.assert_close(reference.outputs, [model(*x)], rtol=0, atol=0)


CONVS = {"a.weight", "b.weight", "depthwise.weight", "c.weight", "q.weight", "k.weight"}


@pytest.mark.parametrize(("side", "copied"), [(2, {"depthwise.weight"}), (32, CONVS)])
def test_a_convolution_zeroes_its_weight_or_its_activations_whichever_is_smaller(
    monkeypatch, side, copied
) -> None:
    # the depthwise weight is always copied: each of its groups reads one channel
    torch.manual_seed(0)
    model = Convs().eval()
    x = _conv_inputs(side)
    graph = sg.trace(model, x)
    plan = sg.plan(graph, ratio=0.5)
    taken: list[int] = []
    take = verify._Scratch.take
    monkeypatch.setattr(
        verify._Scratch, "take", lambda self, n, d: taken.append(n) or take(self, n, d)
    )
    assert verify.reference_outputs(model, plan, graph, kept_shapes(graph, plan), x) is not None
    sizes = {name: p.untyped_storage().nbytes() for name, p in model.named_parameters()}
    assert {name for name in CONVS if sizes[name] in taken} == copied
