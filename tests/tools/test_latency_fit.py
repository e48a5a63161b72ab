"""``sg.slim(..., latency_tries=N)``: the slim model is timed against the original and,
while it misses the latency target, the measurement joins the latency model's knots and
the width is planned again. The runtime here is a stand-in whose latency is exact and
known: every weight element costs 1e-6 ms plus a fixed cost the latency model does not
know (its tables see the layers only), so a plan on the model alone lands too slow."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import slimgraph as sg
import slimgraph.tools.latency_fit as latency_fit
from slimgraph.criteria.latency import LayerTable
from slimgraph.errors import PlanError
from slimgraph.resolve.cost import layer_shapes

X = (torch.randn(1, 3, 32, 32),)


def tabled(model: nn.Module) -> sg.LatencyModel:
    """Every conv and linear layer at 1e-6 ms per weight element (bilinear in its widths,
    so the tables are exact), and nothing else: no knots, no offset."""
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            o, i, *k = m.weight.shape
            area = 1e-6 * (k[0] * k[1] if k else 1)
            grid = tuple(tuple(area * a * b for b in (1, i)) for a in (1, o))
            layers[name] = LayerTable(shape=(o, i, *k), outs=(1, o), ins=(1, i), ms=grid)
    return sg.LatencyModel(runtime="torch", version="-", machine="-", threads=1, layers=layers)


def layers_ms(model: nn.Module) -> float:
    return sum(
        1e-6 * m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    )


class Runtime:
    """Stands in for ``interleaved_ms``: the layers' time plus ``fixed`` ms, and a count
    of the slim models it timed."""

    def __init__(self, fixed: float) -> None:
        self.fixed, self.timed = fixed, []

    def __call__(self, runners, example_inputs, threads, runs, **_) -> dict[str, float]:
        self.timed.append(runners["slim"])
        return {k: layers_ms(m) + self.fixed for k, m in runners.items()}

    def kept(self, slim: nn.Module, original: nn.Module) -> float:
        return (layers_ms(slim) + self.fixed) / (layers_ms(original) + self.fixed)


@pytest.fixture
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_a_plan_that_misses_the_target_is_measured_and_planned_again(monkeypatch, resnet) -> None:
    lm = tabled(resnet)
    runtime = Runtime(fixed=0.5 * lm.predict({}))  # a third of the time, unknown to the model
    monkeypatch.setattr(latency_fit, "interleaved_ms", runtime)
    once = sg.slim(resnet, X, target_latency=0.5, latency_model=lm)
    assert once.plan.measured_latency_kept is None and not runtime.timed
    assert runtime.kept(once.model, resnet) == pytest.approx(0.667, abs=0.005)  # a third off

    measured = sg.slim(resnet, X, target_latency=0.5, latency_model=lm, latency_tries=1)
    assert len(runtime.timed) == 1 and measured.plan.cuts == once.plan.cuts
    assert measured.plan.measured_latency_kept == runtime.kept(once.model, resnet)

    runtime.timed.clear()
    fitted = sg.slim(resnet, X, target_latency=0.5, latency_model=lm, latency_tries=3)
    kept = runtime.kept(fitted.model, resnet)
    # the first try's knot makes the line exact: the second lands on the target
    assert len(runtime.timed) == 2 and fitted.model is runtime.timed[1]
    assert fitted.plan.measured_latency_kept == kept and abs(kept - 0.5) < 0.005
    assert fitted.plan.latency_tries == (runtime.kept(once.model, resnet), kept)
    # the plan predicts by the knots it was made on (the original, and the first try)
    used = fitted.plan.config.latency_model
    assert used.knots[-1] == (lm.layer_ms({}), lm.predict({}))
    assert used.knots[0][1] == pytest.approx(runtime.kept(once.model, resnet) * lm.predict({}))
    assert fitted.plan.predicted_latency_ms == pytest.approx(
        used.predict(layer_shapes(fitted.graph, fitted.plan))
    )
    assert fitted.plan.predicted_latency_ms / lm.predict({}) == pytest.approx(0.5, abs=0.005)
    # the plan replays: the same model, without measuring
    again = sg.apply(resnet, fitted.plan)
    assert [p.shape for p in again.parameters()] == [p.shape for p in fitted.model.parameters()]


def test_the_tries_stop_at_the_target_and_keep_the_closest(monkeypatch, resnet) -> None:
    lm = tabled(resnet)
    runtime = Runtime(fixed=0.0)  # the model is exact: the first plan is on the target
    monkeypatch.setattr(latency_fit, "interleaved_ms", runtime)
    result = sg.slim(resnet, X, target_latency=0.5, latency_model=lm, latency_tries=4)
    assert len(runtime.timed) == 1
    assert result.plan.measured_latency_kept == pytest.approx(0.5, abs=0.005)


def test_a_try_that_repeats_a_measured_plan_ends_the_tries(monkeypatch, resnet) -> None:
    lm = tabled(resnet)
    runtime = Runtime(fixed=0.1 * lm.predict({}))
    monkeypatch.setattr(latency_fit, "interleaved_ms", runtime)
    # 128 channels a step: the widths jump past the target both ways (some groups taking
    # the step and the others held), and the third plan is one of the first two
    result = sg.slim(resnet, X, target_latency=0.5, latency_model=lm, latency_tries=4, round_to=128)
    kept = [runtime.kept(m, resnet) for m in runtime.timed]
    assert kept == pytest.approx([0.5359, 0.4985], abs=1e-4)
    assert result.plan.measured_latency_kept == kept[1]  # the closer of the two
    assert result.plan.latency_tries == tuple(kept)


def test_blocks_dropped_first_are_measured_with_the_width(monkeypatch, resnet) -> None:
    lm = tabled(resnet)
    runtime = Runtime(fixed=0.5 * lm.predict({}))
    monkeypatch.setattr(latency_fit, "interleaved_ms", runtime)
    result = sg.slim(
        resnet, X, drop_blocks=2, target_latency=0.5, latency_model=lm, latency_tries=3
    )
    # the blocks alone are predicted under the budget (the fixed cost is unknown): the
    # first try cuts no width; its knot moves the line (same scale) and the second lands
    # near; with two knots the third is on the target
    assert len(result.plan.blocks) == 2 and len(runtime.timed) == 3
    assert runtime.kept(runtime.timed[0], resnet) == pytest.approx(0.648, abs=0.001)
    kept = runtime.kept(result.model, resnet)
    assert result.plan.measured_latency_kept == kept and abs(kept - 0.5) < 0.005
    replayed = sg.apply(resnet, result.plan)  # the blocks, then the cuts of the last try
    assert sg.count_params(replayed) == sg.count_params(result.model)


def test_the_mix_auto_chooses_is_the_one_measured(monkeypatch, resnet) -> None:
    lm = tabled(resnet)
    runtime = Runtime(fixed=0.1 * lm.predict({}))
    monkeypatch.setattr(latency_fit, "interleaved_ms", runtime)
    result = sg.slim(
        resnet, X, drop_blocks="auto", target_latency=0.5, latency_model=lm, latency_tries=3
    )
    # every mix is planned by the latency model alone; only the least departing is timed
    least = min(result.mixes, key=lambda m: m.departure)
    assert len(result.mixes) == 3 and result.plan.blocks == least.blocks
    shorter = sum(len(getattr(resnet, f"layer{i}")) for i in range(1, 5)) - len(least.blocks)
    assert runtime.timed and all(
        sum(len(getattr(t, f"layer{i}")) for i in range(1, 5)) == shorter for t in runtime.timed
    )
    assert len(runtime.timed) == len(result.plan.latency_tries) <= 3
    kept = runtime.kept(result.model, resnet)
    assert result.plan.measured_latency_kept == kept and abs(kept - 0.5) < 0.015


def test_latency_tries_are_refused_without_a_latency_budget_or_in_place(resnet) -> None:
    lm = tabled(resnet)
    with pytest.raises(PlanError, match="give target_latency"):
        sg.slim(resnet, X, target_macs=0.5, latency_tries=2)
    with pytest.raises(PlanError, match="not with inplace=True"):
        sg.slim(resnet, X, target_latency=0.5, latency_model=lm, latency_tries=2, inplace=True)
    with pytest.raises(PlanError, match="0 \\(measure nothing\\) or more, not -1"):
        sg.slim(resnet, X, target_latency=0.5, latency_model=lm, latency_tries=-1)


def test_a_knot_replaces_those_it_contradicts() -> None:
    t = LayerTable(shape=(2, 2), outs=(2,), ins=(2,), ms=((10.0,),))
    lm = sg.LatencyModel(runtime="torch", version="x", machine="m", threads=1, layers={"a": t})
    started = lm.with_knot(4.0, 6.0)  # no knots: the line's full-width point starts them
    assert started.knots == ((4.0, 6.0), (10.0, 10.0)) and started.predict({}) == 10.0
    assert started.with_knot(4.0, 7.0).knots == ((4.0, 7.0), (10.0, 10.0))  # same sum: newer
    assert started.with_knot(2.0, 6.5).knots == ((2.0, 6.5), (10.0, 10.0))
    alone = started.with_knot(12.0, 5.0)  # contradicts both: the line moves through it
    assert alone.knots == () and (alone.scale, alone.offset_ms) == (1.0, -7.0)
    assert lm.with_knot(10.0, 12.0).predict({}) == 12.0  # the full widths, measured again
