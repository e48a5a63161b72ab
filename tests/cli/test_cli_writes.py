"""What the commands write, and what they refuse to write: links, a directory holding an
earlier run's files (unless --overwrite), inputs too large to make from a plan, and
corrupt weights. Run in process on a tiny model (this module's :func:`tiny_net`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from torch import nn

from slimgraph.cli.main import main

SPEC = "tests.cli.test_cli_writes:tiny_net"
SHAPE = "1,3,16,16"


def tiny_net() -> nn.Module:
    """The model of SPEC: two convolutions and a classifier."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def _run(args: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of ``slimgraph ARGS --json``."""
    code = main([*args, "--json"])
    return code, capsys.readouterr().err


def _error(args: list[str], capsys) -> str:
    """The one line of a refusal of bad input (exit 2)."""
    code, err = _run(args, capsys)
    assert code == 2, err
    assert err.count("\n") == 1, err
    return err


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def slimmed(here, capsys) -> Path:
    """``slim-out/`` written by ``slimgraph slim`` on the tiny model."""
    code, err = _run(["slim", SPEC, "--input-shape", SHAPE, "--out", "slim-out"], capsys)
    assert code == 0, err
    return here / "slim-out"


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_linked_plan_file_is_refused_and_its_target_untouched(here, capsys, overwrite):
    elsewhere = here / "elsewhere.json"
    elsewhere.write_text("keep me")
    (here / "out").mkdir()
    (here / "out" / "plan.json").symlink_to(elsewhere)
    args = ["plan", SPEC, "--input-shape", SHAPE, "--out", "out/plan.json", *overwrite]
    err = _error(args, capsys)
    assert "--out: out/plan.json is a symbolic link" in err
    assert elsewhere.read_text() == "keep me"
    assert (here / "out" / "plan.json").is_symlink()


def test_a_linked_out_directory_is_refused(here, capsys):
    (here / "real").mkdir()
    (here / "out").symlink_to(here / "real")
    err = _error(["slim", SPEC, "--input-shape", SHAPE, "--out", "out", "--overwrite"], capsys)
    assert "--out: out is a symbolic link" in err
    assert list((here / "real").iterdir()) == []


def test_an_out_directory_with_files_needs_overwrite_and_keeps_nothing_stale(here, capsys):
    out = here / "slim-out"
    out.mkdir()
    (out / "model.onnx").write_text("stale, from an earlier run")
    (out / "notes.txt").write_text("the user's")
    args = ["slim", SPEC, "--input-shape", SHAPE, "--out", "slim-out"]
    err = _error(args, capsys)
    assert "--out: slim-out is not empty (model.onnx, notes.txt); pass --overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "notes.txt"]

    code, err = _run([*args, "--overwrite"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "notes.txt", "plan.json"]


def test_an_existing_plan_file_needs_overwrite(here, capsys):
    (here / "plan.json").write_text("an earlier plan")
    args = ["plan", SPEC, "--input-shape", SHAPE, "--out", "plan.json"]
    assert "--out: plan.json exists; pass --overwrite" in _error(args, capsys)
    assert (here / "plan.json").read_text() == "an earlier plan"
    code, err = _run([*args, "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((here / "plan.json").read_text())["criterion"]


def test_a_huge_recorded_input_shape_is_refused_before_anything_is_allocated(slimmed, capsys):
    plan = json.loads((slimmed / "plan.json").read_text())
    plan["inputs"][0]["shape"] = [1000, 3, 60000, 60000]  # 1.08e13 floats, 43 TB
    (slimmed.parent / "big.json").write_text(json.dumps(plan))
    start = time.perf_counter()
    err = _error(["apply", SPEC, "--plan", "big.json", "--out", "applied"], capsys)
    assert time.perf_counter() - start < 30
    assert "--plan big.json: the inputs to synthesise (1000x3x60000x60000 float32)" in err
    assert "--max-input-bytes" in err
    assert not (slimmed.parent / "applied").exists()


def test_the_input_limit_is_a_flag(slimmed, capsys):
    args = ["apply", SPEC, "--plan", "slim-out/plan.json", "--out", "applied"]  # 1x3x16x16
    err = _error([*args, "--max-input-bytes", "3000"], capsys)
    assert "take 3072 bytes, over the limit of 3000;" in err
    code, err = _run(args, capsys)
    assert code == 0, err


@pytest.mark.parametrize("command", ["apply", "export"])
def test_truncated_weights_exit_2_with_one_line(slimmed, capsys, command):
    data = (slimmed / "model.safetensors").read_bytes()
    (slimmed / "cut.safetensors").write_bytes(data[: len(data) // 2])
    args = {
        "apply": ["apply", SPEC, "--plan", "slim-out/plan.json", "--out", "applied"],
        "export": ["export", SPEC, "--input-shape", SHAPE, "--plan", "slim-out/plan.json"],
    }[command]
    err = _error([*args, "--weights", "slim-out/cut.safetensors"], capsys)
    assert err.startswith("slimgraph: error: --weights slim-out/cut.safetensors: ")
    assert "cannot be read as safetensors (Error while deserializing header" in err
