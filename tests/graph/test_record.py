"""The recorder gives torch.export's graph, or steps aside; it never changes the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimgraph as sg
from slimgraph._core.inputs import input_specs, split_inputs
from slimgraph.graph.record import NotRecorded, record_graph, recorded
from slimgraph.graph.ruletable import load_rules
from slimgraph.graph.trace import build_graph, export_program


def both(model: nn.Module, inputs) -> tuple[sg.DependencyGraph, sg.DependencyGraph | None]:
    """The graph built from the export, and from the recording (None where it stepped aside)."""
    args, kwargs = split_inputs(inputs)
    specs, rules = input_specs(args, kwargs), load_rules()
    graph = recorded(model, args, kwargs)
    fast = None if graph is None else build_graph(graph, model, rules, specs)
    return build_graph(export_program(model, args, kwargs), model, rules, specs), fast


def assert_same(exported: sg.DependencyGraph, fast: sg.DependencyGraph | None) -> None:
    assert fast is not None, "the recorder stepped aside"
    assert fast.fingerprint == exported.fingerprint
    assert [(g.id, g.size) for g in fast.groups] == [(g.id, g.size) for g in exported.groups]
    assert fast.output_shapes == exported.output_shapes


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.bn(self.stem(x)))
        h = h + self.body(h)
        return self.head(h.mean((2, 3)).to(torch.float32))  # .to: export asserts its input


class Tied(nn.Module):
    """An embedding and an output layer sharing one weight, and a block reached twice."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 6)
        self.mlp = nn.Sequential(nn.Linear(6, 10), nn.GELU(), nn.Linear(10, 6))
        self.again = self.mlp  # one module under two paths
        self.out = nn.Linear(6, 12, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids, bias):
        h = self.emb(ids) + bias
        return self.out(self.again(self.mlp(h)))


def test_recorded_graph_is_the_exported_graph() -> None:
    assert_same(*both(Residual().eval(), (torch.randn(2, 3, 8, 8),)))
    assert_same(*both(Residual().train(), (torch.randn(2, 3, 8, 8),)))


def test_tied_weights_and_shared_modules_record_as_export_does() -> None:
    inputs = {"ids": torch.tensor([[1, 2, 3]]), "bias": torch.zeros(6)}
    assert_same(*both(Tied(), inputs))


def test_nested_inputs_are_named_as_export_names_them() -> None:
    class Nested(nn.Module):
        def forward(self, x, extra):
            return x + extra["a.b"][1]

    graph = record_graph(Nested(), (torch.ones(2), {"a.b": [torch.ones(2), torch.ones(2)]}), {})
    args = ((torch.ones(2), {"a.b": [torch.ones(2), torch.ones(2)]}), {})
    exported = export_program(Nested(), *args).graph
    names = [n.name for n in graph.nodes if n.op == "placeholder"]
    assert names == [n.name for n in exported.nodes if n.op == "placeholder"]
    assert names == ["x", "extra_a_b_0", "extra_a_b_1"]


def test_recording_leaves_the_model_as_it_was() -> None:
    model = Tied().train()
    before = {name: (t, t.device) for name, t in model.named_parameters(remove_duplicate=False)}
    record_graph(model, (torch.tensor([[1, 2]]), torch.ones(6)), {})
    after = {name: (t, t.device) for name, t in model.named_parameters(remove_duplicate=False)}
    assert after.keys() == before.keys()
    assert all(after[n][0] is before[n][0] and after[n][1].type == "cpu" for n in before)
    assert model.out.weight is model.emb.weight and model.again is model.mlp


class IntInput(nn.Module):
    def forward(self, x, times: int):
        return x * times


class Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.ones(4)  # neither parameter nor buffer: export lifts it

    def forward(self, x):
        return x * self.scale


class NoGrad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        with torch.no_grad():  # export wraps this in a higher-order op
            y = self.fc(x)
        return y + x


class ScalarWrite(nn.Module):
    def forward(self, x):
        mask = x.new_zeros(4)
        mask[1:] = 3  # export lifts the scalar as a constant
        return x + mask


@pytest.mark.parametrize(
    ("model", "inputs", "why"),
    [
        (Constant(), (torch.randn(2, 4),), "a tensor of shape (4,) that no op made"),
        (NoGrad(), (torch.randn(2, 4),), "the forward calls _set_grad_enabled"),
        (ScalarWrite(), (torch.randn(2, 4),), "aten.scalar_tensor.default"),
    ],
    ids=["constant attribute", "no_grad", "scalar write"],
)
def test_steps_aside_where_export_would_differ(model: nn.Module, inputs, why: str) -> None:
    with pytest.raises(NotRecorded, match=why.replace("(", r"\(").replace(")", r"\)")):
        record_graph(model, inputs, {})
    assert recorded(model, inputs, {}) is None
    assert sg.trace(model, inputs).fingerprint  # export traces it instead


def test_an_input_that_is_not_a_tensor_steps_aside() -> None:
    with pytest.raises(NotRecorded, match="the input times is of type int"):
        record_graph(IntInput(), (torch.randn(2, 4), 3), {})


def test_a_forward_that_fails_on_meta_leaves_the_error_to_export() -> None:
    class Item(nn.Module):
        def forward(self, x):
            return x * int(x.sum().item() > 0)  # a value: meta tensors have none

    assert recorded(Item(), (torch.ones(2),), {}) is None
    with pytest.raises(sg.TraceError, match="Item"):
        sg.trace(Item(), (torch.ones(2),))
