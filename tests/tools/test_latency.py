"""measure_latency: torch modules and ONNX files, fixed threads, clear refusals."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

import slimgraph as sg
from slimgraph.tools.latency import MAX_RUNS, MIN_SECONDS, ROUNDS, WARMUP, interleaved_ms

X = torch.randn(2, 8)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_torch_module_latency_report() -> None:
    model = net().train()
    before = torch.get_num_threads()
    report = sg.measure_latency(model, (X,), threads=1, warmup=2, runs=7)
    assert (report.backend, report.threads, report.runs) == ("torch", 1, 7)
    assert 0 < report.min_ms <= report.median_ms <= report.p90_ms
    assert torch.get_num_threads() == before  # restored
    assert model.training  # the mode is restored too


def test_onnx_file_latency_report(tmp_path) -> None:
    path = tmp_path / "net.onnx"
    sg.export_onnx(net(), (X,), path)
    report = sg.measure_latency(path, (X,), threads=1, warmup=1, runs=5)
    assert (report.backend, report.threads, report.runs) == ("onnxruntime", 1, 5)
    assert 0 < report.min_ms <= report.median_ms <= report.p90_ms


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threads": 0}, "need threads >= 1"),
        ({"runs": 0}, "need threads >= 1, runs >= 1"),
    ],
)
def test_bad_settings_are_refused(kwargs, message) -> None:
    with pytest.raises(sg.SlimGraphError, match=message):
        sg.measure_latency(net(), (X,), **kwargs)


def test_missing_file_is_refused(tmp_path) -> None:
    with pytest.raises(sg.SlimGraphError, match="no ONNX file at"):
        sg.measure_latency(tmp_path / "missing.onnx", (X,))


def test_wrong_number_of_inputs_is_refused(tmp_path) -> None:
    path = tmp_path / "net.onnx"
    sg.export_onnx(net(), (X,), path)
    with pytest.raises(sg.SlimGraphError, match="net.onnx takes 1 inputs"):
        sg.measure_latency(path, (X, X))


class Counted(nn.Module):
    """Counts its forwards; ``ms`` of sleep in each."""

    def __init__(self, ms: float) -> None:
        super().__init__()
        self.ms, self.calls = ms, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.ms:
            time.sleep(self.ms / 1e3)
        return x


def test_a_fast_model_is_timed_over_as_long_as_a_slow_one() -> None:
    fast, slow = Counted(0.0), Counted(25.0)
    found = interleaved_ms({"fast": fast, "slow": slow}, (torch.ones(1),), threads=1, runs=10)
    assert found["slow"] >= 25.0
    # one warm-up and one run to estimate, then five rounds of 3 warm-ups and the runs:
    # the 10 asked of the slow one (25 ms x 10 = MIN_SECONDS), MAX_RUNS of the fast one
    assert (ROUNDS, WARMUP, MIN_SECONDS, MAX_RUNS) == (5, 3, 0.25, 1000)
    assert slow.calls == 2 + 5 * (3 + 10)
    assert fast.calls == 2 + 5 * (3 + 1000)


class Hiccups(nn.Module):
    """25 ms a call, but 5 ms through the first round and 60 ms through the last (two
    warm-up calls estimate the runs; then each round is 3 warm-ups and 10 runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        round_ = (self.calls - 2) // (WARMUP + 10) if self.calls >= 2 else None
        self.calls += 1
        time.sleep({0: 5.0, ROUNDS - 1: 60.0}.get(round_, 25.0) / 1e3)
        return x


def test_one_round_faster_or_slower_than_the_rest_does_not_move_the_latency() -> None:
    net = Hiccups()
    found = interleaved_ms({"net": net}, (torch.ones(1),), threads=1, runs=10)
    assert net.calls == 2 + ROUNDS * (WARMUP + 10)
    assert 25.0 <= found["net"] < 30.0  # the median round's; the lower of two read 5 ms
