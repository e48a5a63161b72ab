"""Latency models: the tables interpolate exactly, the planner hits a latency target as
the model predicts it (on the multiple of channels the runtime favours), and profiling
measures what it says, caches it, and refuses what it cannot use."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import slimgraph as sg
import slimgraph.tools.profile as profile
from slimgraph.criteria.latency import LayerTable
from slimgraph.resolve.cost import layer_shapes, plan_macs
from slimgraph.tools.knots import ascending, favoured

STEPS = (1, 8, 16)  # the multiples profiling compares


def mlp() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
    )
    return net.eval(), (torch.randn(8, 16),)


def macs_like(shape: tuple[int, ...], widths: tuple[int, ...] = (8, 16, 32, 48, 64)) -> LayerTable:
    """A layer costing out x in microseconds, measured on a grid of ``widths``."""
    outs = tuple(w for w in widths if w <= shape[0]) or (shape[0],)
    ins = tuple(w for w in widths if w <= shape[1]) or (shape[1],)
    outs, ins = tuple(sorted({*outs, shape[0]})), tuple(sorted({*ins, shape[1]}))
    ms = tuple(tuple(o * i / 1000 for i in ins) for o in outs)
    return LayerTable(shape=shape, outs=outs, ins=ins, ms=ms)


def model_of(net: nn.Module, round_to: int = 1) -> sg.LatencyModel:
    layers = {
        n: macs_like(tuple(m.weight.shape))
        for n, m in net.named_modules()
        if isinstance(m, nn.Linear)
    }
    return sg.LatencyModel(
        runtime="torch",
        version="t",
        machine="m",
        threads=1,
        layers=layers,
        round_to=round_to,
        offset_ms=0.5,
    )


def test_tables_interpolate_between_widths_and_extend_below_them() -> None:
    table = LayerTable(shape=(8, 4), outs=(4, 8), ins=(2, 4), ms=((1.0, 2.0), (2.0, 4.0)))
    assert table.at(8, 4) == 4.0 and table.at(6, 3) == 2.25 and table.at(4, 2) == 1.0
    # below the narrowest measured widths the first segments extend: out * in / 8 still
    assert table.at(2, 1) == 0.25 and table.at(4, 1) == 0.5 and table.at(1, 2) == 0.25
    assert table.at(16, 8) == 4.0  # above the widest: held
    # an intercept below 0 stops at 0; a first segment that noise made fall is held
    steep = LayerTable(shape=(8,), outs=(4, 8), ins=(1,), ms=((1.0,), (5.0,)))
    assert steep.at(2, 1) == 0.0 and steep.at(5, 1) == 2.0
    noisy = LayerTable(shape=(8,), outs=(4, 8), ins=(1,), ms=((2.0,), (1.5,)))
    assert noisy.at(1, 1) == 2.0 and noisy.at(6, 1) == 1.75
    with pytest.raises(ValidationError, match="ms must be 2 rows of 2 values"):
        LayerTable(shape=(8, 4), outs=(4, 8), ins=(2, 4), ms=((1.0,), (2.0, 4.0)))
    with pytest.raises(ValidationError, match="distinct and ascending"):
        LayerTable(shape=(8, 4), outs=(8, 4), ins=(2, 4), ms=((1.0, 2.0), (2.0, 4.0)))


def test_the_planner_keeps_the_target_share_of_the_predicted_latency() -> None:
    net, x = mlp()
    lm = model_of(net, round_to=8)
    graph = sg.trace(net, x)
    full = lm.predict({})
    assert full == pytest.approx(0.5 + (64 * 16 + 64 * 64 + 4 * 64) / 1000)
    plan = sg.plan(graph, target_latency=0.5, latency_model=lm)
    assert plan.predicted_latency_ms == pytest.approx(lm.predict(layer_shapes(graph, plan)))
    assert abs(plan.predicted_latency_ms / full - 0.5) < 0.05  # within the search's steps
    kept = [c.size - len(c.drop) for c in plan.cuts]
    assert kept and all(k % 8 == 0 for k in kept)  # the runtime's favoured multiple
    macs_plan = sg.plan(graph, target_macs=0.5)
    assert macs_plan.predicted_latency_ms is None


def test_knots_bend_the_prediction_to_the_measurements() -> None:
    net, _ = mlp()
    lm = model_of(net)  # tables summing to 5.376 ms whole; the line: sum + 0.5
    whole = lm.layer_ms({})
    assert whole == pytest.approx(5.376)
    bent = lm.model_copy(update={"knots": ((1.0, 2.0), (3.0, 5.0), (whole, 6.0))})
    assert bent.predict({}) == pytest.approx(6.0)  # a knot: its measurement
    assert bent.calibrated(2.0) == pytest.approx(3.5)  # halfway between two knots
    assert bent.calibrated(0.5) == pytest.approx(1.25)  # below: the first segment extended
    assert bent.calibrated(0.0) == 0.5 and bent.calibrated(-5.0) == 0.0  # never below zero
    assert lm.calibrated(2.0) == pytest.approx(2.5)  # no knots: the line
    # a shorter model keeps the curve at its scale: 1.28 of the 5.376 tabled ms left
    short = bent.renamed({"2": None})
    r = short.layer_ms({}) / whole
    flat = [v for knot in short.knots for v in knot]
    assert flat == pytest.approx([r, 2 * r, 3 * r, 5 * r, whole * r, 6 * r])
    assert short.predict({}) == pytest.approx(6.0 * r)
    with pytest.raises(ValidationError, match="must ascend in both"):
        lm.model_validate({**lm.model_dump(), "knots": ((1.0, 3.0), (2.0, 2.0))})
    with pytest.raises(ValidationError, match="must be finite"):
        lm.model_validate({**lm.model_dump(), "knots": ((1.0, 3.0), (float("inf"), 1e308))})
    with pytest.raises(ValidationError, match="none, or at least two"):
        lm.model_validate({**lm.model_dump(), "knots": ((1.0, 3.0),)})


def test_a_groups_cost_per_channel_is_read_from_the_tables() -> None:
    net, x = mlp()
    lm, graph = model_of(net), sg.trace(net, x)
    # 0.weight:0 narrows fc0's rows and fc2's columns; half its 64 channels save
    # (64 - 32) x 16 + 64 x (64 - 32) microseconds: 2.56 ms over 32 channels
    assert lm.ms_per_channel(graph.group("0.weight:0"), 64) == pytest.approx(0.08)
    assert lm.ms_per_channel(graph.group("2.weight:0"), 64) == pytest.approx(0.068)
    scaled = lm.model_copy(update={"scale": 2.0})
    assert scaled.ms_per_channel(graph.group("2.weight:0"), 64) == pytest.approx(0.136)


def test_global_ranking_with_a_latency_model_drops_the_costly_channels_first() -> None:
    net, x = mlp()
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.constant_(layer.weight, 1.0)
            nn.init.zeros_(layer.bias)
    graph = sg.trace(net, x)
    lm = model_of(net)
    expensive = lm.layers["0"].model_copy(
        update={"ms": tuple(tuple(100 * v for v in row) for row in lm.layers["0"].ms)}
    )
    lm = lm.model_copy(update={"layers": {**lm.layers, "0": expensive}})

    def kept(plan: sg.PruningPlan) -> dict[str, int]:
        return {c.group: c.size - len(c.drop) for c in plan.cuts}

    # a unit of 0.weight:0 has 16 + 64 weights of 1, one of 2.weight:0 has 64 + 4: it goes
    # first by score, but 0.weight:0's channels cost 1.664 ms each, 2.weight:0's 0.068 ms
    ranked = {"scope": "global", "ratio": 0.25, "normalize": "none"}
    assert kept(sg.plan(graph, **ranked)) == {"0.weight:0": 64, "2.weight:0": 32}
    assert lm.ms_per_channel(graph.group("0.weight:0"), 64) == pytest.approx(1.664)
    costly = sg.plan(graph, **ranked, latency_model=lm)
    assert kept(costly) == {"0.weight:0": 32, "2.weight:0": 64}
    local = sg.plan(graph, ratio=0.25, latency_model=lm)  # local scope: every group alike
    assert kept(local) == {"0.weight:0": 48, "2.weight:0": 48}


def test_a_latency_target_needs_a_model_and_no_other_target() -> None:
    net, _ = mlp()
    with pytest.raises(ValidationError, match="target_latency needs latency_model"):
        sg.PruneConfig(target_latency=0.5)
    with pytest.raises(
        ValidationError, match="give one budget, not target_macs and target_latency"
    ):
        sg.PruneConfig(target_latency=0.5, target_macs=0.5, latency_model=model_of(net))


def test_a_latency_model_of_another_model_or_inputs_is_refused_before_planning() -> None:
    net, x = mlp()
    graph = sg.trace(net, x)
    other = nn.Sequential(
        nn.Linear(16, 96), nn.ReLU(), nn.Linear(96, 64), nn.ReLU(), nn.Linear(64, 4), nn.ReLU(),
        nn.Linear(4, 2),
    )  # fmt: skip
    with pytest.raises(
        sg.PlanError,
        match=r"profiled on another model: 3 of its 4 layers differ \(0 96×16 in the tables, "
        r"64×16 here; 2 64×96 in the tables, 64×64 here; 6 2×4 in the tables, absent here\)",
    ):
        sg.plan(graph, target_latency=0.5, latency_model=model_of(other))
    batch_of_4 = model_of(net).model_copy(update={"inputs": ((4, 16),)})
    with pytest.raises(
        sg.PlanError, match=r"profiled at inputs 4×16, and the model is traced at 8×16"
    ):
        sg.plan(graph, target_latency=0.5, latency_model=batch_of_4)
    at_8 = batch_of_4.model_copy(update={"inputs": ((8, 16),)})
    assert sg.plan(graph, target_latency=0.5, latency_model=at_8).dropped
    empty = model_of(net).model_copy(update={"layers": {}})
    with pytest.raises(sg.PlanError, match="the latency model tables no layer"):
        sg.plan(graph, ratio=0.3, scope="global", latency_model=empty)
    in_bfloat16 = at_8.model_copy(update={"dtypes": ("bfloat16",)})
    with pytest.raises(
        sg.PlanError, match="profiled with bfloat16 weights, and the model has float32"
    ):
        sg.plan(graph, target_latency=0.5, latency_model=in_bfloat16)
    in_float32 = at_8.model_copy(update={"dtypes": ("float32",)})
    assert sg.plan(graph, target_latency=0.5, latency_model=in_float32).dropped


def test_layers_are_timed_in_the_models_dtype(tmp_path: Path) -> None:
    net, x = mlp()
    wide, x64 = net.double(), tuple(t.double() for t in x)
    cache = tmp_path / "latency.json"
    lm = sg.profile_latency(wide, x64, runtime="torch", runs=2, cache=cache, progress=False)
    assert lm.dtypes == ("float64",)
    keys = json.loads(cache.read_text())
    # 3 layers at 4 x 4 widths, 4 of them timed once for two layers (16 inputs, 16-64 out)
    assert len(keys) == 3 * 4 * 4 - 4 and all(k.endswith("|float64") for k in keys)
    with pytest.raises(sg.PlanError, match="profiled with float64 weights, and the model has"):
        sg.plan(sg.trace(mlp()[0], x), target_latency=0.5, latency_model=lm)
    assert sg.plan(sg.trace(wide, x64), target_latency=0.5, latency_model=lm).dropped


def test_a_budget_out_of_reach_warns_with_the_closest_plan() -> None:
    net, x = mlp()
    graph = sg.trace(net, x)
    # 16 -> 64 -> 64 -> 4 makes 5376 MACs; at half of each width 16·32 + 32·32 + 32·4 = 1664
    deeper = "target_macs=0.1 is out of reach: the closest plan keeps 0.310 of the MACs; no plan"
    with pytest.warns(UserWarning, match=deeper):
        plan = sg.plan(graph, target_macs=0.1, max_ratio=0.5)
    deepest = sg.plan(graph, ratio=0.5)  # the search's deepest ratio, which halving never hits
    assert [len(c.drop) for c in plan.cuts] == [len(c.drop) for c in deepest.cuts] == [32, 32]
    # 2 of 64 channels in both groups keep 44 MACs, 3 in both 69, 2 and 3 keep 50 (3 and 2: 62)
    coarse = "target_macs=0.01 is out of reach: the closest plan keeps 0.009 of the MACs; the"
    with pytest.warns(UserWarning, match=coarse):
        assert [c.size - len(c.drop) for c in sg.plan(graph, target_macs=0.01).cuts] == [2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sg.plan(graph, target_macs=0.5)  # on its target: no warning


def test_a_plan_with_a_latency_model_round_trips_as_json() -> None:
    net, x = mlp()
    graph = sg.trace(net, x)
    plan = sg.plan(graph, target_latency=0.6, latency_model=model_of(net))
    again = sg.PruningPlan.model_validate_json(plan.model_dump_json())
    assert again.config.latency_model == plan.config.latency_model
    assert again.predicted_latency_ms == plan.predicted_latency_ms


def test_profiling_in_onnx_runtime_fits_checks_and_caches(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=32),
        nn.Conv2d(32, 64, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).eval()
    x = (torch.randn(1, 3, 32, 32),)
    cache = tmp_path / "latency.json"
    lm = sg.profile_latency(net, x, runs=3, cache=cache, progress=False)
    assert (lm.runtime, lm.threads) == ("onnxruntime", 1) and lm.version.startswith("onnxruntime")
    assert sorted(lm.layers) == ["0", "2", "3", "7"]
    assert lm.layers["0"].outs == (8, 16, 24, 32) and lm.layers["0"].ins == (1, 2, 3)
    assert lm.layers["2"].ins == (1,) and lm.layers["2"].outs == (8, 16, 24, 32)  # depthwise
    ratios = (0.3, 0.45)  # timed at every multiple, to choose one
    slims = [f"uniform {r} round_to {s}" for s in STEPS for r in ratios]
    # 0.1 to 0.6, then deeper cuts (which of them: the test below)
    timed = {float(k.split()[2]) for k in lm.measured_ms if k.startswith("knot: uniform")}
    deeper = sorted(timed - {0.1, 0.2, 0.3, 0.4, 0.5, 0.6})
    assert set(deeper) <= {0.7, 0.8, 0.9}
    knots = [f"uniform {r} round_to {lm.round_to}" for r in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)]
    knots += [f"uniform {r} round_to {lm.round_to}" for r in deeper]
    assert sorted(lm.measured_ms) == sorted(
        [f"multiple: {k}" for k in ["original", *slims]]
        + [f"knot: {k}" for k in ["original", *knots]]
        + [f"check: uniform 0.35 round_to {lm.round_to}"]
    )
    # the multiple: knots.favoured on the first pass's times and the slims' MACs
    graph, steps = sg.trace(net, x), [(r, s) for r in ratios for s in STEPS]
    ms = {(r, s): lm.measured_ms[f"multiple: uniform {r} round_to {s}"] for r, s in steps}
    cuts = {(r, s): sg.plan(graph, sg.PruneConfig(ratio=r, round_to=s)) for r, s in steps}
    assert lm.round_to == favoured(ms, {k: plan_macs(graph, cut) for k, cut in cuts.items()})
    assert math.isfinite(lm.check_error)
    # the knots are measurements: the original's and the half cut's at least, exactly
    knot_ms = [ms for _, ms in lm.knots]
    assert 2 <= len(knot_ms) <= 8 + len(deeper) and knot_ms == sorted(knot_ms)
    # from the second pass: the original, the slims at 0.1-0.6 and then the check slim
    second = {v for k, v in lm.measured_ms.items() if not k.startswith("multiple: ")}
    assert set(knot_ms) <= second
    half = lm.measured_ms[f"knot: uniform 0.5 round_to {lm.round_to}"]
    assert {lm.measured_ms["knot: original"], half} <= set(knot_ms)
    assert lm.predict({}) == pytest.approx(lm.measured_ms["knot: original"])
    entries = json.loads(cache.read_text())
    assert len(entries) == sum(len(t.outs) * len(t.ins) for t in lm.layers.values()) == 48
    again = sg.profile_latency(net, x, runs=3, cache=cache, progress=False)
    assert again.layers == lm.layers  # read back, not measured again
    assert json.loads(cache.read_text()) == entries


def test_a_bad_cache_is_measured_afresh_and_bad_arguments_refused(tmp_path: Path) -> None:
    net, x = mlp()
    cache = tmp_path / "latency.json"
    cache.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        sg.profile_latency(net, x, runtime="torch", runs=2, cache=cache, progress=False)
    assert json.loads(cache.read_text())  # rewritten, whole
    with pytest.raises(sg.SlimGraphError, match="runtime must be 'torch' or 'onnxruntime'"):
        sg.profile_latency(net, x, runtime="tensorrt", cache=cache)
    with pytest.raises(sg.SlimGraphError, match=r"fractions must lie in \(0, 1\]"):
        sg.profile_latency(net, x, runtime="torch", fractions=(0.0, 1.0), cache=cache)
    with pytest.raises(sg.SlimGraphError, match="check_ratio must lie in"):
        sg.profile_latency(net, x, runtime="torch", check_ratio=0.5, cache=cache)
    with pytest.raises(sg.SlimGraphError, match="ONNX Runtime is timed on its CPU provider"):
        sg.profile_latency(net, x, device="cuda", cache=cache)
    with pytest.raises(sg.SlimGraphError, match=r"parameters are on \['cpu'\], not meta: move"):
        sg.profile_latency(net, x, runtime="torch", device="meta", cache=cache)


class Residual(nn.Module):
    """A stem and one residual block: its stream is a group ``prune_residual`` decides."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.a, self.b = nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)
        self.head = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.b(torch.relu(self.a(h))))
        return self.head(h.mean((2, 3)))


@pytest.mark.parametrize("keep_residual", [False, True])
def test_the_knots_are_slims_of_the_groups_the_planning_config_cuts(
    tmp_path: Path, monkeypatch, keep_residual: bool
) -> None:
    torch.manual_seed(0)
    net, x = Residual().eval(), (torch.randn(1, 3, 8, 8),)
    timed: list[nn.Module] = []

    def weights_ms(runners, example_inputs, threads, runs, **_) -> dict[str, float]:
        timed.extend(runners.values())
        return {k: sum(p.numel() for p in m.parameters()) / 1e3 for k, m in runners.items()}

    monkeypatch.setattr(profile, "interleaved_ms", weights_ms)
    config = sg.PruneConfig(prune_residual=not keep_residual, min_keep=40)
    lm = sg.profile_latency(
        net, x, runtime="torch", runs=2, fractions=(0.5, 1.0), cache=tmp_path / "c.json",
        progress=False, config=config,
    )  # fmt: skip
    slims = [m for m in timed if m is not net]
    # 0.3 and 0.45 at three multiples; 6 knots and the check (under min_keep=40, 0.9 cuts
    # no deeper than 0.6: no knot)
    assert len(slims) == 2 * 3 + 7
    # the stream (stem out, b out, head in) is cut in every slim, or in none; no group
    # keeps fewer than min_keep
    assert {m.stem.out_channels < 64 for m in slims} == {not keep_residual}
    assert min(m.a.out_channels for m in slims) == 40 and all(
        m.head.in_features == m.stem.out_channels >= 40 for m in slims
    )
    # the knot at 0.5 is the plan that config makes at 0.5, at the chosen multiple
    graph = sg.trace(net, x)
    half = sg.apply(net, sg.plan(graph, config, ratio=0.5, round_to=lm.round_to), graph=graph)
    knot = lm.measured_ms[f"knot: uniform 0.5 round_to {lm.round_to}"]
    assert knot == sum(p.numel() for p in half.parameters()) / 1e3


@pytest.mark.parametrize(("keep_residual", "deeper"), [(False, []), (True, [0.7, 0.8])])
def test_knots_go_deeper_while_the_deepest_keeps_much_of_the_tables_sum_and_to_0_9_anyway(
    tmp_path: Path, monkeypatch, keep_residual: bool, deeper: list[float]
) -> None:
    torch.manual_seed(0)
    net, x = Residual().eval(), (torch.randn(1, 3, 8, 8),)

    def macs_ms(timer, layer: nn.Module, shape: tuple[int, ...]) -> float:
        # a layer at its MACs (1e-6 ms each): the tables' sums are exact
        return layer.weight.numel() * math.prod(shape[2:]) / 1e6

    def in_turn(runners, *_, **__) -> dict[str, float]:
        return {k: 1.0 + i for i, k in enumerate(runners)}

    monkeypatch.setattr(profile.LayerTimer, "time", macs_ms)
    monkeypatch.setattr(profile, "interleaved_ms", in_turn)
    config = sg.PruneConfig(prune_residual=not keep_residual)
    lm = sg.profile_latency(
        net, x, runtime="torch", fractions=(0.1, 0.25, 0.5, 1.0), cache=tmp_path / "c.json",
        progress=False, config=config,
    )  # fmt: skip
    knots = [k for k in lm.measured_ms if k.startswith("knot: uniform")]
    ratios = [float(k.split()[2]) for k in knots]
    assert ratios == [0.5, 0.1, 0.2, 0.3, 0.4, 0.6, *deeper, 0.9]
    # the knots before 0.9 go on while the deepest keeps more than 30 % of the tables' sum
    graph = sg.trace(net, x)

    def share(ratio: float) -> float:
        cut = sg.plan(graph, config, ratio=ratio, round_to=lm.round_to)
        return lm.layer_ms(layer_shapes(graph, cut)) / lm.layer_ms({})

    *going, last = [0.6, *deeper]
    assert all(share(r) > 0.3 for r in going) and share(0.9) < share(last) <= 0.3


def _fake_runtime(monkeypatch) -> None:
    """Layers at their MACs (1e-6 ms each) and whole models at their parameters (1e-3 ms
    each): the profile is exact, and every knot can be computed again."""

    def macs_ms(timer, layer: nn.Module, shape: tuple[int, ...]) -> float:
        return layer.weight.numel() * math.prod(shape[2:]) / 1e6

    def weights_ms(runners, *_, **__) -> dict[str, float]:
        return {k: sum(p.numel() for p in m.parameters()) / 1e3 for k, m in runners.items()}

    monkeypatch.setattr(profile.LayerTimer, "time", macs_ms)
    monkeypatch.setattr(profile, "interleaved_ms", weights_ms)


@pytest.mark.parametrize(("importance", "planned_by"), [("l1", "l1"), ("taylor", "l2")])
def test_a_global_config_measures_its_own_budget_plans_as_the_knots(
    tmp_path: Path, monkeypatch, importance: str, planned_by: str
) -> None:
    torch.manual_seed(0)
    net, x = Residual().eval(), (torch.randn(1, 3, 8, 8),)
    _fake_runtime(monkeypatch)
    run = {"runtime": "torch", "cache": tmp_path / "c.json", "progress": False}
    config = sg.PruneConfig(scope="global", importance=importance, max_ratio=0.9)
    lm = sg.profile_latency(net, x, **run, config=config)
    uniform = sg.profile_latency(net, x, **run, config=sg.PruneConfig())
    assert (lm.scope, uniform.scope) == ("global", "local")
    # the budgets are planned on the uniform model, by the config's criterion (l2 for
    # one that reads calibration data: the profile has none)
    graph = sg.trace(net, x)
    on_uniform = config.model_copy(
        update={
            "importance": planned_by,
            "latency_model": uniform.model_copy(update={"scope": "global"}),
        }
    )

    def point(target: float) -> tuple[float, float]:
        cut = sg.plan(graph, on_uniform, target_latency=target)
        ms = sum(p.numel() for p in sg.apply(net, cut, graph=graph).parameters()) / 1e3
        return lm.layer_ms(layer_shapes(graph, cut)), ms

    budgets = {t: point(t) for t in (0.5, 0.3, 0.7, 0.4)}
    assert {k: v for k, v in lm.measured_ms.items() if k.startswith("global")} == {
        "global knot: original": lm.measured_ms["knot: original"],
        **{f"global knot: global target_latency {t}": budgets[t][1] for t in (0.5, 0.3, 0.7)},
        "global check: global target_latency 0.4": budgets[0.4][1],
    }
    original = (lm.layer_ms({}), lm.measured_ms["knot: original"])
    assert lm.knots == ascending([original, *budgets.values()])
    assert len(lm.knots) >= 3 and lm.knots != uniform.knots
    # the check: the 0.4 plan, predicted by the knots of the other three
    others = ascending([original, *(budgets[t] for t in (0.5, 0.3, 0.7))])
    unseen = lm.model_copy(update={"knots": others}).calibrated(budgets[0.4][0])
    assert lm.check_error == pytest.approx(unseen / budgets[0.4][1] - 1.0)
    # what plans read off it stays the uniform fit's: the multiple and a channel's cost
    assert (lm.round_to, lm.scale) == (uniform.round_to, uniform.scale)


def test_a_budget_plan_warns_when_the_knots_were_measured_on_another_scope(
    tmp_path: Path, monkeypatch
) -> None:
    torch.manual_seed(0)
    net, x = Residual().eval(), (torch.randn(1, 3, 8, 8),)
    _fake_runtime(monkeypatch)
    lm = sg.profile_latency(net, x, runtime="torch", cache=tmp_path / "c.json", progress=False)
    graph = sg.trace(net, x)
    with pytest.warns(UserWarning, match="measured on uniform slims, and this plan is in global"):
        sg.plan(graph, target_latency=0.5, latency_model=lm, scope="global")
    on_global = lm.model_copy(update={"scope": "global"})
    with pytest.warns(
        UserWarning, match="measured on global-scope plans, and this plan is in local"
    ):
        sg.plan(graph, target_latency=0.5, latency_model=on_global)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sg.plan(graph, target_latency=0.5, latency_model=lm)  # uniform knots, local plan
        sg.plan(graph, target_latency=0.5, latency_model=on_global, scope="global")
        sg.plan(graph, ratio=0.5, latency_model=lm, scope="global")  # no budget: no knots read


def test_a_global_profile_reuses_a_uniform_one_and_times_only_its_own_plans(
    tmp_path: Path, monkeypatch
) -> None:
    torch.manual_seed(0)
    net, x = Residual().eval(), (torch.randn(1, 3, 8, 8),)
    _fake_runtime(monkeypatch)
    fake, passes = profile.interleaved_ms, []

    def counted(runners, *args, **kwargs) -> dict[str, float]:
        passes.append(len(runners))
        return fake(runners, *args, **kwargs)

    monkeypatch.setattr(profile, "interleaved_ms", counted)
    run = {"runtime": "torch", "cache": tmp_path / "c.json", "progress": False}
    config = sg.PruneConfig(scope="global")
    uniform = sg.profile_latency(net, x, **run)
    assert len(passes) == 2  # the multiples, then the knots
    passes.clear()
    reused = sg.profile_latency(net, x, **run, config=config, uniform=uniform)
    assert passes == [5]  # the original and the plans for 0.5, 0.3, 0.7 and the check 0.4
    # the same model as profiling it all again (this runtime is exact)
    assert reused == sg.profile_latency(net, x, **run, config=config)
    assert len(passes) == 4


def _uniform_profile(tmp_path: Path, monkeypatch) -> tuple:
    """A residual net, its input, the profiling arguments (fake runtime), a global config
    and the net's uniform profile."""
    torch.manual_seed(0)
    net, x = Residual().eval(), (torch.randn(1, 3, 8, 8),)
    _fake_runtime(monkeypatch)
    run = {"runtime": "torch", "cache": tmp_path / "c.json", "progress": False}
    return net, x, run, sg.PruneConfig(scope="global"), sg.profile_latency(net, x, **run)


def test_a_reused_profile_whose_original_now_runs_slower_warns(tmp_path: Path, monkeypatch) -> None:
    net, x, run, config, uniform = _uniform_profile(tmp_path, monkeypatch)
    before = uniform.measured_ms["knot: original"]
    slower = {**uniform.measured_ms, "knot: original": before / 1.5}  # now 1.5x that
    moved = uniform.model_copy(update={"measured_ms": slower})
    with pytest.warns(UserWarning, match=r"the original measured .* in the uniform profile") as w:
        sg.profile_latency(net, x, **run, config=config, uniform=moved)
    assert w[0].filename == __file__  # the warning points at the call
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sg.profile_latency(net, x, **run, config=config, uniform=uniform)  # not moved
        sg.profile_latency(net, x, **run, config=config)  # nothing reused: nothing to warn


def test_a_uniform_model_from_elsewhere_is_refused(tmp_path: Path, monkeypatch) -> None:
    net, x, run, config, uniform = _uniform_profile(tmp_path, monkeypatch)
    on_global = sg.profile_latency(net, x, **run, config=config, uniform=uniform)
    refused = [
        ({"uniform": uniform}, "uniform= serves a profile in global or isomorphic scope"),
        ({"uniform": on_global, "config": config}, "must be profiled in local scope, not 'global'"),
        ({"uniform": uniform, "config": config, "threads": 2}, "threads 1, not 2"),
        (
            {"uniform": uniform.model_copy(update={"inputs": ((1, 3, 16, 16),)}), "config": config},
            "inputs ((1, 3, 16, 16),), not ((1, 3, 8, 8),)",
        ),
        (
            {"uniform": uniform.model_copy(update={"dtypes": ("float16",)}), "config": config},
            "dtypes ('float16',), not ('float32',)",
        ),
    ]
    for kwargs, message in refused:
        with pytest.raises(sg.SlimGraphError, match=re.escape(message)):
            sg.profile_latency(net, x, **run | kwargs)
    other, y = mlp()
    with pytest.raises(
        sg.SlimGraphError, match=re.escape("inputs ((1, 3, 8, 8),), not ((8, 16),)")
    ):
        sg.profile_latency(other, y, **run, config=config, uniform=uniform)
    unrecorded = uniform.model_copy(update={"inputs": ()})  # a file from before the field
    with pytest.raises(sg.SlimGraphError, match="tables other layers than this model's"):
        sg.profile_latency(other, y, **run, config=config, uniform=unrecorded)
    assert uniform.inputs == on_global.inputs == ((1, 3, 8, 8),)
    assert uniform.dtypes == on_global.dtypes == ("float32",)
    # the load moved since: its original was timed far from this one
    moved = dict(uniform.measured_ms) | {
        "knot: original": uniform.measured_ms["knot: original"] / 2
    }
    halved = uniform.model_copy(update={"measured_ms": moved})
    with pytest.warns(UserWarning, match="the original measured .* in the uniform profile"):
        sg.profile_latency(net, x, **run, config=config, uniform=halved)
