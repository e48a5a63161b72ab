"""Kind ``recurrent``: ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` hidden units.

A unit of one layer and direction is one row of every gate block, one column of its own
``weight_hh`` (or ``weight_hr``) and one output channel, which the next layer reads
forward units first; every layer and direction keeps as many units (one ``hidden_size``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimgraph as sg
from tests.oracles import drop_plan, frozen_line, kill_dropped, kill_units, prunable

pytestmark = pytest.mark.filterwarnings("ignore:The tensor attributes")

VOCAB = 10
X = torch.randint(0, VOCAB, (2, 5))


class Tagger(nn.Module):
    """embedding -> recurrent layer -> linear over the output channels."""

    def __init__(self, cls: type[nn.RNNBase] = nn.LSTM, hidden: int = 8, **kw) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.rnn = cls(6, hidden, **kw)
        width = (kw.get("proj_size") or hidden) * (2 if kw.get("bidirectional") else 1)
        self.fc = nn.Linear(width, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        if not self.rnn.batch_first:
            x = x.transpose(0, 1)
        y, _ = self.rnn(x)
        if not self.rnn.batch_first:
            y = y.transpose(0, 1)
        return self.fc(y)


def _model(cls: type[nn.RNNBase], **kw) -> Tagger:
    torch.manual_seed(0)
    return Tagger(cls, **kw).eval()


def test_gate_blocks_of_one_unit_go_together() -> None:
    graph = sg.trace(_model(nn.LSTM, hidden=2), (X,))
    assert prunable(graph) == {"emb.weight:1": 6, "rnn.weight_ih_l0:0": 2}
    gates = [0, 1] * 4  # rows i, f, g, o of units 0 and 1
    assert graph.unit_map("rnn.weight_ih_l0:0") == {
        "rnn.weight_ih_l0:0": gates,
        "rnn.weight_hh_l0:0": gates,
        "rnn.weight_hh_l0:1": [0, 1],
        "rnn.bias_ih_l0:0": gates,
        "rnn.bias_hh_l0:0": gates,
        "fc.weight:1": [0, 1],
    }
    assert graph.unit_map("emb.weight:1")["rnn.weight_ih_l0:1"] == list(range(6))
    assert graph.group("rnn.weight_ih_l0:0").exact


@pytest.mark.parametrize(("cls", "gates"), [(nn.GRU, 3), (nn.RNN, 1)], ids=["gru", "rnn"])
def test_gru_and_rnn_have_their_gate_counts(cls: type[nn.RNNBase], gates: int) -> None:
    graph = sg.trace(_model(cls, hidden=2), (X,))
    assert graph.unit_map("rnn.weight_ih_l0:0")["rnn.weight_ih_l0:0"] == [0, 1] * gates


def test_directions_share_one_group_and_layers_are_linked() -> None:
    graph = sg.trace(_model(nn.LSTM, num_layers=2, bidirectional=True), (X,))
    assert prunable(graph) == {
        "emb.weight:1": 6,
        "rnn.weight_ih_l0:0": 16,
        "rnn.weight_ih_l1:0": 16,
    }
    units = graph.unit_map("rnn.weight_ih_l0:0")
    assert units["rnn.weight_ih_l0:0"] == list(range(8)) * 4
    assert units["rnn.weight_ih_l0_reverse:0"] == list(range(8, 16)) * 4
    assert units["rnn.weight_ih_l1:1"] == list(range(16))  # forward units, then backward
    assert units["rnn.weight_ih_l1_reverse:1"] == list(range(16))
    assert set().union(*graph.linked_groups()) == {"rnn.weight_ih_l0:0", "rnn.weight_ih_l1:0"}


# -- slim shapes and attributes --------------------------------------------------------------

CASES = {
    "lstm": (nn.LSTM, {}, (3, 4, 0)),
    "lstm-2-bi-batch-first": (
        nn.LSTM,
        {"num_layers": 2, "bidirectional": True, "batch_first": True},
        (3, 4, 0),
    ),
    "lstm-3-bi-proj": (
        nn.LSTM,
        {"num_layers": 3, "bidirectional": True, "proj_size": 4},
        (3, 4, 2),
    ),
    "gru-2-bi": (nn.GRU, {"num_layers": 2, "bidirectional": True}, (3, 4, 0)),
    "rnn-2": (nn.RNN, {"num_layers": 2, "nonlinearity": "relu"}, (3, 4, 0)),
    "rnn-no-bias": (nn.RNN, {"bias": False}, (3, 4, 0)),
}


@pytest.mark.parametrize(("cls", "kw", "sizes"), CASES.values(), ids=CASES.keys())
def test_slim_module_has_the_kept_widths(cls, kw, sizes) -> None:
    model = _model(cls, **kw)
    result = sg.slim(model, (X,), ratio=0.5)
    rnn = result.model.rnn
    input_size, hidden, proj = sizes
    assert (rnn.input_size, rnn.hidden_size, rnn.proj_size) == (input_size, hidden, proj)
    gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[cls]
    dirs = 2 if kw.get("bidirectional") else 1
    out = proj or hidden
    for layer in range(kw.get("num_layers", 1)):
        for suffix in ["", "_reverse"][:dirs]:
            shape = {
                name.split("_l")[0]: tuple(getattr(rnn, name).shape)
                for name in rnn._flat_weights_names
                if name.endswith(f"_l{layer}{suffix}")
            }
            assert shape["weight_ih"] == (gates * hidden, dirs * out if layer else input_size)
            assert shape["weight_hh"] == (gates * hidden, out)
            if proj:
                assert shape["weight_hr"] == (proj, hidden)
    assert result.model.fc.in_features == dirs * out
    assert [tuple(w.shape) for w in rnn._flat_weights] == [
        tuple(getattr(rnn, n).shape) for n in rnn._flat_weights_names
    ]
    with torch.no_grad():
        assert result.model(X).shape == model(X).shape


@pytest.mark.parametrize(("cls", "kw", "sizes"), CASES.values(), ids=CASES.keys())
def test_dead_units_drop_exactly(cls, kw, sizes) -> None:
    """Dead-unit oracle: zero every slice of the units a random plan drops; the slim
    model computes what the zeroed model computes (a unit whose gate rows are all zero
    keeps a zero state: LSTM g = tanh(0), GRU n = tanh(0), RNN tanh/relu(0))."""
    model = _model(cls, **kw)
    graph = sg.trace(model, (X,))
    plan = sg.plan(graph, ratio=0.5, importance="random")
    assert {c.group for c in plan.cuts if c.drop} >= {"rnn.weight_ih_l0:0"}
    kill_dropped(graph, plan)
    with torch.no_grad():
        expected = model(X)
        got = sg.apply(model, plan, graph=graph).eval()(X)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_in_place_rewrite_refreshes_the_flat_weights() -> None:
    """The module's forward reads ``_flat_weights``, a list of its parameters that an
    in-place rewrite must rebuild from the new ones."""
    model = _model(nn.LSTM, num_layers=2, bidirectional=True, proj_size=4)
    graph = sg.trace(model, (X,))
    slim = sg.apply(model, sg.plan(graph, ratio=0.5), graph=graph, inplace=True)
    assert slim is model and model.rnn.hidden_size == 4
    params = dict(model.rnn.named_parameters())
    assert all(
        w is params[n] for w, n in zip(model.rnn._flat_weights, model.rnn._flat_weights_names)
    )
    with torch.no_grad():
        assert model(X).shape == (2, 5, 4)


def test_dead_units_of_each_layer_are_their_own() -> None:
    """Layer 0 and layer 1 drop different units (linked only by count); killing just the
    rows that make those units is enough."""
    model = _model(nn.GRU, num_layers=2)
    graph = sg.trace(model, (X,))
    drops = {"rnn.weight_ih_l0:0": [1, 5], "rnn.weight_ih_l1:0": [0, 3]}
    for gid, units in drops.items():
        layer = gid.split("_l")[1].split(":")[0]
        rows = [f"rnn.{p}_l{layer}:0" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        kill_units(model, graph, gid, units, rows)
    with torch.no_grad():
        expected = model(X)
        slim = sg.apply(model, drop_plan(graph, drops), graph=graph).eval()
        got = slim(X)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert slim.rnn.hidden_size == 6


# -- states ----------------------------------------------------------------------------------


class WithState(nn.Module):
    """The caller passes the initial state, or the model reads the final one."""

    def __init__(self, cls: type[nn.RNNBase], given: bool) -> None:
        super().__init__()
        self.rnn = cls(6, 8, num_layers=2, batch_first=True)
        self.fc = nn.Linear(8, 4)
        self.given = given

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> torch.Tensor:
        if self.given:
            y, _ = self.rnn(x, state[0] if len(state) == 1 else state)
            return self.fc(y)
        _, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h
        return self.fc(h[-1])  # the last layer's final state


def test_initial_state_from_the_caller_freezes_the_units() -> None:
    """The caller's h0 is (layers, batch, hidden): its width is part of the contract."""
    x, h0 = torch.randn(2, 5, 6), torch.zeros(2, 2, 8)
    graph = sg.trace(WithState(nn.GRU, given=True).eval(), (x, h0))
    assert "rnn.weight_ih_l0:0" not in prunable(graph)
    assert "model input" in frozen_line(graph, "rnn.weight_ih_l0:0")


class ProjectedState(nn.Module):
    """An LSTM with projection: h is proj_size wide, c is hidden_size wide; the caller
    passes one of them, the model makes the other."""

    def __init__(self, given: str) -> None:
        super().__init__()
        self.rnn = nn.LSTM(6, 8, num_layers=2, proj_size=4, batch_first=True)
        self.fc = nn.Linear(4, 4)
        self.given = given

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        h0, c0 = x.new_zeros(2, x.shape[0], 4), x.new_zeros(2, x.shape[0], 8)
        y, _ = self.rnn(x, (state, c0) if self.given == "h" else (h0, state))
        return self.fc(y)


@pytest.mark.parametrize(
    ("given", "width", "frozen", "free"),
    [
        ("h", 4, "rnn.weight_hh_l1:1", "rnn.weight_ih_l1:0"),
        ("c", 8, "rnn.weight_ih_l1:0", "rnn.weight_hh_l1:1"),
    ],
    ids=["h0-projected", "c0-cells"],
)
def test_lstm_initial_states_freeze_their_own_units(given, width, frozen, free) -> None:
    """h0 is as wide as the projection, c0 as the cells: each freezes only its units."""
    x = torch.randn(2, 5, 6)
    graph = sg.trace(ProjectedState(given).eval(), (x, torch.zeros(2, 2, width)))
    assert free in prunable(graph)
    assert frozen not in prunable(graph)
    assert "model input" in frozen_line(graph, frozen)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU], ids=["lstm", "gru"])
def test_final_state_read_by_the_model_couples_every_layer(cls) -> None:
    """h_n stacks every layer's state in one tensor: unit j of each layer is index j."""
    torch.manual_seed(0)
    model, x = WithState(cls, given=False).eval(), torch.randn(2, 5, 6)
    graph = sg.trace(model, (x,))
    assert prunable(graph) == {"rnn.weight_ih_l0:0": 8}
    assert graph.unit_map("rnn.weight_ih_l0:0")["rnn.weight_ih_l1:0"] == list(range(8)) * (
        4 if cls is nn.LSTM else 3
    )
    slim = sg.slim(model, (x,), ratio=0.5).model
    assert slim.rnn.hidden_size == 4
    assert slim(x).shape == (2, 4)
