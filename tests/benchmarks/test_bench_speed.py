"""The speed benchmark runs end to end (one repeat, a tiny model): a smoke test of the
script, not a timing test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from tests.benchmarks import bench_speed


def tiny(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
    return model, torch.randn(1, 3, 16, 16)


def test_bench_times_both_tools_and_prints_the_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "speed.json"
    assert (
        bench_speed.main(
            ["--models", "tiny", "--repeats", "1", "--no-warmup", "--json", str(out)], tiny
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "load average" in printed and "| tiny |" in printed and "x |" in printed
    result = json.loads(out.read_text())
    entry = result["models"]["tiny"]
    assert entry["errors"] == {}
    assert [len(entry["times"][t]) for t in bench_speed.TOOLS] == [1, 1]
    assert all(t > 0 for times in entry["times"].values() for t in times)
    assert len(result["load_start"]) == len(result["load_end"]) == 3


def test_a_failing_tool_is_reported_not_raised() -> None:
    def broken(name: str) -> tuple[nn.Module, torch.Tensor]:
        model, _ = tiny(name)
        return model, torch.randn(1, 5, 16, 16)  # the wrong channel count: both tools fail

    result = bench_speed.bench(["broken"], 2, broken, warmup=False)
    entry = result["models"]["broken"]
    assert set(entry["errors"]) == set(bench_speed.TOOLS)
    assert entry["times"] == {t: [] for t in bench_speed.TOOLS}
    assert "failed" in bench_speed.table(result)


def test_the_zoo_is_torchvisions_classifiers_up_to_a_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # RegNet computes its widths from tensor values, so it is counted off the meta device
    names = ["resnet50", "regnet_y_400mf", "resnet18", "mobilenet_v2"]
    monkeypatch.setattr(torchvision.models, "list_models", lambda module=None: names)
    kept, left = bench_speed.zoo(15e6)  # 25.6M, 4.3M, 11.7M and 3.5M parameters
    assert (kept, left) == (["mobilenet_v2", "regnet_y_400mf", "resnet18"], ["resnet50"])
