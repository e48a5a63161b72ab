"""``slimgraph export``, ``slim --onnx`` and ``bench``: slim models out to checked ONNX."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest

from slimgraph.cli.main import main
from tests.helpers import run_slimgraph

SPEC = "torchvision:squeezenet1_1"
SMALL = "1,3,64,64"


@pytest.fixture(scope="module")
def slimmed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("slim")
    assert main(["slim", SPEC, "--input-shape", SMALL, "--out", str(out), "--json"]) == 0
    return out


def test_export_of_a_slimmed_model(slimmed: Path) -> None:
    done = run_slimgraph(
        "export", SPEC, "--input-shape", SMALL, "--plan", "plan.json",
        "--weights", "model.safetensors", "--out", "slim.onnx", "--json", cwd=slimmed,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["exporter"], report["batch_sizes"], report["plan"]) == (
        "dynamo",
        [1, 3],
        "plan.json",
    )
    assert report["max_rel_diff"] <= 1e-4
    assert report["outputs"] == [{"name": "output_0", "shape": ["batch", 1000], "dtype": "float32"}]
    graph = onnx.load(str(slimmed / "slim.onnx")).graph
    first_conv = next(n for n in graph.node if n.op_type == "Conv")
    weight = next(i for i in graph.initializer if i.name == first_conv.input[1])
    assert list(weight.dims) == [32, 3, 3, 3]  # squeezenet1_1's stem: 64 filters, halved


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plan", "missing.json"], "--plan missing.json: cannot read it"),
        (["--plan", "bad.json"], "--plan bad.json: not a valid plan (fingerprint: Field required)"),
        (
            ["--plan", "plan.json", "--weights", "none.safetensors"],
            "--weights none.safetensors: no such file",
        ),
    ],
)
def test_bad_export_input_exits_2(slimmed: Path, args, message, capsys, monkeypatch) -> None:
    monkeypatch.chdir(slimmed)
    (slimmed / "bad.json").write_text('{"x": 1}')
    assert main(["export", SPEC, "--input-shape", SMALL, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"slimgraph: error: {message}")
    assert len(err.strip().splitlines()) == 1


def test_plan_for_another_model_exits_2(slimmed: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(slimmed)
    assert (
        main(["export", "torchvision:resnet18", "--input-shape", SMALL, "--plan", "plan.json"]) == 2
    )
    assert "this plan was made for another model" in capsys.readouterr().err


def test_slim_writes_onnx_too(tmp_path: Path) -> None:
    done = run_slimgraph(
        "slim", SPEC, "--input-shape", SMALL, "--out", "out", "--onnx", "out/slim.onnx",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"]["onnx"] == "out/slim.onnx"
    graph = onnx.load(str(tmp_path / "out" / "slim.onnx")).graph
    first_conv = next(n for n in graph.node if n.op_type == "Conv")
    weight = next(i for i in graph.initializer if i.name == first_conv.input[1])
    assert list(weight.dims) == [32, 3, 3, 3]


def test_bench_prints_original_beside_slim(tmp_path: Path) -> None:
    done = run_slimgraph(
        "bench", SPEC, "--input-shape", SMALL, "--runs", "3", "--keep-onnx", "onnx", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert (r["original"]["params"], r["slim"]["params"]) == (1235496, 438792)
    assert r["original"]["latency"]["runs"] == 3 and r["original"]["latency"]["threads"] == 1
    assert r["macs_ratio"] == pytest.approx(r["slim"]["macs"] / r["original"]["macs"])
    assert r["latency_efficiency"] == pytest.approx(r["speedup"] * r["macs_ratio"])
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["original.onnx", "slim.onnx"]
    table = run_slimgraph("bench", SPEC, "--input-shape", SMALL, "--runs", "3", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "latency (ms)" in table.stdout and "latency efficiency" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runs", "0"], "argument --runs: '0' is not a positive integer; e.g. 1"),
        (["--threads", "two"], "argument --threads: 'two' is not a positive integer"),
        (["--ratio", "2"], "--ratio 2.0: "),
        (["--keep-onnx", "file.txt"], "--keep-onnx file.txt: a file is in the way"),
    ],
)
def test_bad_bench_input_exits_2(tmp_path: Path, args, message, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("")
    assert main(["bench", SPEC, "--input-shape", SMALL, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"slimgraph: error: {message}"), err


@pytest.mark.slow
def test_export_with_past_writes_a_decoder_step(tmp_path: Path, capsys) -> None:
    from tests import hf_models

    model, _ = hf_models.build("llama")
    model.save_pretrained(tmp_path / "llm")
    out = tmp_path / "step.onnx"
    assert (
        main(["export", f"hf:{tmp_path / 'llm'}", "--with-past", "--out", str(out), "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["past_lengths"] == [0, 16]  # the hf: spec's prompt is 16 tokens
    assert report["max_rel_diff"] <= 1e-4
    assert [i["name"] for i in report["inputs"]][2:5] == [
        "position_ids",
        "past_key_values.0.key",
        "past_key_values.0.value",
    ]
    assert report["inputs"][3]["shape"] == ["batch", 2, "past_sequence", 8]
    assert [o["name"] for o in report["outputs"]][:2] == ["logits", "present.0.key"]
    assert [o.name for o in onnx.load(str(out)).graph.output][-1] == "present.1.value"


def test_export_with_past_of_a_model_without_a_cache_exits_2(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["export", SPEC, "--input-shape", SMALL, "--with-past"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "slimgraph: error: --with-past: with_past=True needs a Hugging Face causal"
    )
    assert not (tmp_path / "model.onnx").exists()


def test_export_table_shows_the_past_lengths_checked(capsys) -> None:
    from slimgraph.cli.render.onnx import print_export

    report = {
        "spec": "hf:llm", "path": "step.onnx", "exporter": "dynamo", "fallback_reason": None,
        "opset": 20, "simplified": True, "nodes_before": 9, "nodes_after": 8,
        "file_size": 100, "external_data": False, "batch_sizes": [1, 3],
        "max_rel_diff": 1e-7, "quantized": None,
    }  # fmt: skip
    print_export({**report, "past_lengths": []})
    assert "past length" not in capsys.readouterr().out
    print_export({**report, "past_lengths": [0, 16]})
    assert re.search(r"checked at past length\s*│\s*0, 16", capsys.readouterr().out)
