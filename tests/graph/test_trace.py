"""Tracing: inputs, devices, modes, errors and ops without rules."""

from __future__ import annotations

import pytest
import torch
import torch.fx.config as fx_config
from torch import nn

import slimgraph as sg
from slimgraph.graph.trace import export_program


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv1(x))))


def summary(graph: sg.DependencyGraph) -> list[tuple[str, int]]:
    return [(g.id, g.size) for g in graph.prunable_groups()]


def test_meta_device_gives_the_same_groups() -> None:
    real = sg.trace(Block(), (torch.randn(1, 3, 8, 8),))
    with torch.device("meta"):
        model = Block()
    meta = sg.trace(model, (torch.randn(1, 3, 8, 8, device="meta"),))
    assert summary(meta) == summary(real) == [("conv1.weight:0", 8)]
    assert meta.fingerprint == real.fingerprint


def test_keyword_inputs() -> None:
    class Keywords(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.up = nn.Linear(6, 12)
            self.down = nn.Linear(12, 6)

        def forward(self, input_ids, scale):
            h = self.emb(input_ids)
            return self.down(torch.relu(self.up(h))) * scale

    model = Keywords()
    inputs = {"input_ids": torch.tensor([[1, 2, 3]]), "scale": torch.ones(1, 3, 1)}
    result = sg.slim(model, inputs, ratio=0.5)
    assert result.model.up.out_features == 6
    assert [(s.name, s.shape) for s in result.graph.inputs] == [
        ("input_ids", (1, 3)),
        ("scale", (1, 3, 1)),
    ]
    assert result.model(**inputs).shape == (1, 3, 6)


def test_mixed_train_eval_modes_are_restored() -> None:
    model = Block().train()
    model.bn.eval()
    sg.trace(model, (torch.randn(2, 3, 8, 8),))
    assert [m.training for m in (model, model.conv1, model.bn, model.conv2)] == [
        True,
        True,
        False,
        True,
    ]


def test_tracing_leaves_batchnorm_statistics_alone() -> None:
    model = Block().train()
    before = model.bn.running_mean.clone()
    sg.slim(model, (torch.randn(2, 3, 8, 8) + 3,), ratio=0.5)
    assert torch.equal(model.bn.running_mean, before)
    assert int(model.bn.num_batches_tracked) == 0


def test_untraceable_module_is_named() -> None:
    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 3, 1)
            self.gate = Branchy()

        def forward(self, x):
            return self.gate(self.stem(x))

    with pytest.raises(sg.TraceError, match=r"could not trace module gate \(Branchy\)") as err:
        sg.trace(Outer(), (torch.randn(1, 3, 4, 4),))
    assert "torch.cond" in str(err.value)


def test_failed_trace_does_not_print_its_partial_graph(capfd) -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.stem(x)
            return y * 2 if y.sum() > 0 else y

    with pytest.raises(sg.TraceError):
        sg.trace(Branchy(), (torch.randn(1, 3, 4, 4),))
    assert "def forward" not in capfd.readouterr().err  # torch prints the partial graph


def test_batchnorm_batch_of_one_gets_a_hint() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4))
    with pytest.raises(sg.TraceError, match="pass a batch of 2 or more, or call model.eval"):
        sg.trace(model, (torch.randn(1, 3, 4, 4),))


@pytest.mark.parametrize("bad", [None, 3, "x", [torch.randn(1), "y"]])
def test_bad_inputs_are_refused(bad) -> None:
    with pytest.raises(sg.SlimGraphError):
        sg.trace(Block(), bad)


def test_not_a_module_is_refused() -> None:
    with pytest.raises(sg.TraceError, match="expected a torch.nn.Module, got function"):
        sg.trace(lambda x: x, (torch.randn(1),))


class WithFFT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 8, 1)
        self.mid = nn.Conv2d(8, 8, 1)
        self.post = nn.Linear(5, 4)

    def forward(self, x):
        y = self.mid(torch.relu(self.pre(x)))
        return self.post(torch.fft.rfft(y, dim=1).abs().transpose(1, 3))


def test_op_without_rule_freezes_what_it_touches() -> None:
    model = WithFFT().eval()
    x = torch.randn(1, 3, 4, 4)
    result = sg.slim(model, (x,), ratio=0.5)
    assert result.model.pre.out_channels == 4  # pre -> mid is pruned
    assert result.model.mid.out_channels == 8  # mid feeds the FFT: frozen
    assert result.model(x).shape == model(x).shape
    text = result.graph.explain("mid.weight:0")
    assert "frozen" in text
    assert "no rule for aten.fft_rfft.default" in text


@torch.library.custom_op("slimgraph_test::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    return x.flip(1)


@mystery.register_fake
def _(x):
    return torch.empty_like(x)


def test_custom_op_freezes_its_channels() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 1))

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = model, nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.head(mystery(self.body(x)))

    wrapped = Wrapped().eval()
    x = torch.randn(1, 3, 4, 4)
    result = sg.slim(wrapped, (x,), ratio=0.5)
    assert result.model.body[0].out_channels == 4
    assert result.model.body[2].out_channels == 8
    assert "no rule for slimgraph_test.mystery.default" in result.graph.explain("body.2.weight:0")
    assert result.model(x).shape == wrapped(x).shape


@pytest.mark.parametrize("fails", [False, True])
def test_stack_traces_are_off_while_tracing_and_restored_after(
    fails: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch.fx symbolises a stack trace per node unless told not to: slimgraph turns that
    # off around its own export only (sg.trace exports where the recorder steps aside),
    # and puts the caller's setting back even on failure
    seen: list[bool] = []
    export = torch.export.export

    def spy(*args, **kwargs):
        seen.append(fx_config.do_not_emit_stack_traces)
        if fails:
            raise RuntimeError("refused")
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", spy)
    for before in (False, True):
        monkeypatch.setattr(fx_config, "do_not_emit_stack_traces", before)
        if fails:
            with pytest.raises(sg.TraceError):
                export_program(Block(), (torch.randn(1, 3, 8, 8),), {})
        else:
            program = export_program(Block(), (torch.randn(1, 3, 8, 8),), {})
            assert len(program.graph_signature.parameters) == 6
        assert fx_config.do_not_emit_stack_traces is before
    assert seen == [True, True]
