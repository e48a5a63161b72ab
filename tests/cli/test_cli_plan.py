"""``slimgraph plan``, ``apply`` and ``diff``, and the ``hf:DIRECTORY`` and ``PATH.pt2`` specs.

The happy paths run the real executable in a subprocess; each pays for importing torch, so
the commands that do not need each other's files start together (the ``runs`` fixture).
Keyword inputs through plan and apply, and bad input, are checked in process through
:func:`slimgraph.cli.main`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import slimgraph as sg
import slimgraph.tools.latency_fit as latency_fit
from slimgraph.cli.main import main
from slimgraph.io.specs import load_model
from slimgraph.resolve.cost import layer_shapes
from slimgraph.tools.measure import measure, stage_widths
from slimgraph.tools.profile import profile_latency
from tests.helpers import finish, start_slimgraph

SPEC = "torchvision:resnet18"
SMALL = "1,3,64,64"


def _tiny_bert(folder: Path) -> None:
    """A random 2-layer BERT classifier, hidden 64, 4 heads, saved as save_pretrained does."""
    import transformers as T

    torch.manual_seed(0)
    config = T.BertConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    T.utils.logging.disable_progress_bar()
    try:
        T.BertForSequenceClassification(config).save_pretrained(folder)
    finally:
        T.utils.logging.enable_progress_bar()


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with a tiny Hugging Face model (bert/) and an exported program (net.pt2)."""
    folder = tmp_path_factory.mktemp("cli-plan")
    _tiny_bert(folder / "bert")
    program = torch.export.export(_tiny_net(), (torch.randn(1, 3, 32, 32),))
    torch.export.save(program, folder / "net.pt2")
    return folder


FIRST = {
    "plan --json": ["plan", SPEC, "--input-shape", SMALL, "--out", "a.json", "--json"],
    "plan --show": [
        "plan",
        SPEC,
        "--input-shape",
        SMALL,
        "--ratio",
        "0.25",
        "--importance",
        "random",
        "--out",
        "plans/b.json",
        "--show",
    ],  # fmt: skip
    "slim hf": ["slim", "hf:bert", "--out", "bert-slim", "--json"],
    "slim pt2": ["slim", "net.pt2", "--out", "net-slim", "--json"],
}
# These read the plans the first ones write.
SECOND = {
    "apply": ["apply", SPEC, "--plan", "a.json", "--out", "applied"],
    "diff": ["diff", "a.json", "plans/b.json"],
    "diff --json": ["diff", "a.json", "plans/b.json", "--json"],
}


@pytest.fixture(scope="module")
def runs(work) -> dict[str, subprocess.CompletedProcess]:
    """Every command of FIRST, then every command of SECOND, each batch concurrently."""
    done = {}
    for batch in (FIRST, SECOND):
        started = {name: start_slimgraph(args, work) for name, args in batch.items()}
        done.update({name: finish(proc) for name, proc in started.items()})
    return done


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no TTY: no spinner; warnings and progress bars hidden
    return proc.stdout


def _plan(path: Path) -> sg.PruningPlan:
    return sg.PruningPlan.model_validate_json(path.read_text())


def _as_json(args: list[str], where: Path, capsys, monkeypatch) -> dict:
    """The report of ``slimgraph ARGS --json`` (the facts its tables show, as data), run in
    process in ``where``."""
    monkeypatch.chdir(where)
    assert main([*args, "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return json.loads(out)


# -- plan -----------------------------------------------------------------------------


def test_plan_json_describes_the_plan_it_wrote(runs, work):
    report = json.loads(_ok(runs["plan --json"]))
    plan = _plan(work / "a.json")
    assert (plan.config.ratio, plan.criterion) == (0.5, "l2")
    assert report["spec"] == SPEC
    assert report["inputs"] == [{"name": None, "shape": [1, 3, 64, 64], "dtype": "float32"}]
    assert report["fingerprint"] == plan.fingerprint
    assert report["params"] == {
        "before": 11_689_512,
        "after": plan.params_after,
        "ratio": round(plan.params_after / 11_689_512, 4),
    }
    assert report["groups_cut"] == sum(1 for c in plan.cuts if c.drop) == 12
    assert report["units_dropped"] == plan.dropped
    assert report["groups"][0] == {
        "id": "conv1.weight:0",
        "kept": 32,
        "units": 64,
        "modules": list(plan.cut("conv1.weight:0").modules),
    }
    assert report["file"] == "a.json"
    assert set(report["seconds"]) == {"load", "trace", "plan", "save", "total"}


def test_plan_show_prints_the_summary_and_every_group(runs, work, capsys, monkeypatch):
    text = _ok(runs["plan --show"])
    plan = _plan(work / "plans" / "b.json")
    assert text.startswith(f"{SPEC}: ratio 0.25, random, local scope, input 1x3x64x64\n")
    again = [*FIRST["plan --show"]]
    again[again.index("plans/b.json")] = "plans/c.json"
    report = _as_json(again, work, capsys, monkeypatch)
    assert _plan(work / "plans" / "c.json") == plan  # the --json run planned the same
    assert (report["groups_cut"], len(report["groups"])) == (12, 12)
    assert report["units_dropped"] == plan.dropped
    ratio = f"{100 * plan.params_after / 11_689_512:.1f}%"
    params = report["params"]
    assert (params["before"], params["after"]) == (11_689_512, plan.params_after)
    assert f"{100 * params['ratio']:.1f}%" == ratio
    groups = {g["id"]: g for g in report["groups"]}
    first = groups["conv1.weight:0"]
    assert (first["kept"], first["units"]) == (48, 64)
    assert first["modules"][:3] == ["conv1", "bn1", "layer1.0.conv1"] and len(first["modules"]) > 3
    layer4 = groups["layer4.1.conv1.weight:0"]
    assert (layer4["kept"], layer4["units"]) == (384, 512)
    # per layer: shapes, params and MACs before -> after; the groups left whole, by reason
    conv1 = next(layer for layer in report["layers"] if layer["layer"] == "conv1")
    assert conv1["kind"] == "Conv2d"
    changed = [(a, b) for a, b in conv1["shapes"].values() if a != b]
    assert changed == [([64, 3, 7, 7], [48, 3, 7, 7])]
    assert (conv1["params_before"], conv1["params_after"]) == (9_408, 7_056)
    assert (
        "left whole, model output: its shape is part of the model's contract: fc.weight:0" in text
    )
    assert "wrote plans/b.json\n" in text


# -- apply ----------------------------------------------------------------------------


def test_apply_writes_the_weights_slim_would_and_a_copy_of_the_plan(
    runs, work, capsys, monkeypatch
):
    text = _ok(runs["apply"])
    out = work / "applied"
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "plan.json"]
    plan = _plan(work / "a.json")
    assert _plan(out / "plan.json") == plan
    torch.manual_seed(0)  # what `plan` and `apply` both build: the same random weights
    expected = sg.apply(load_model(SPEC).eval(), plan)
    weights = load_file(out / "model.safetensors")
    assert sorted(weights) == sorted(expected.state_dict())
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(tensor, weights[name], rtol=0, atol=0)
    assert text.startswith(f"{SPEC}: ratio 0.5, l2, local scope, input 1x3x64x64\n")
    again = [*SECOND["apply"]]
    again[again.index("applied")] = "applied-json"
    report = _as_json(again, work, capsys, monkeypatch)
    assert (report["params"]["before"], report["params"]["after"]) == (
        11_689_512,
        plan.params_after,
    )
    assert {"name": "conv1", "type": "Conv2d", "before": 64, "after": 32} in report["stages"]
    assert "wrote applied/plan.json, applied/model.safetensors\n" in text


# -- diff -----------------------------------------------------------------------------


def test_diff_table_shows_config_and_units_per_group(runs, work):
    text = _ok(runs["diff"])
    a, b = _plan(work / "a.json"), _plan(work / "plans" / "b.json")
    assert text.startswith(f"same model (fingerprint {a.fingerprint})\n")
    report = json.loads(_ok(runs["diff --json"]))  # the same diff, as data
    assert {"field": "ratio", "a": 0.5, "b": 0.25} in report["config"]
    assert {"field": "importance", "a": "l2", "b": "random"} in report["config"]
    da, db = set(a.cut("conv1.weight:0").drop), set(b.cut("conv1.weight:0").drop)
    row = next(g for g in report["groups"] if g["id"] == "conv1.weight:0")
    assert (row["units_a"], row["units_b"], row["dropped_a"], row["dropped_b"]) == (64, 64, 32, 16)
    assert (row["only_a"], row["only_b"]) == (len(da - db), len(db - da))
    assert text.splitlines()[-1] == (
        f"12 of 12 groups differ; units dropped {a.dropped:,} (A) vs {b.dropped:,} (B); "
        f"params after {a.params_after:,} (A) vs {b.params_after:,} (B)"
    )


def test_diff_json_counts_the_units_only_one_plan_drops(runs, work):
    report = json.loads(_ok(runs["diff --json"]))
    a, b = _plan(work / "a.json"), _plan(work / "plans" / "b.json")
    assert (report["a"], report["b"], report["same_model"]) == ("a.json", "plans/b.json", True)
    assert report["config"] == [
        {"field": "ratio", "a": 0.5, "b": 0.25},
        {"field": "importance", "a": "l2", "b": "random"},
    ]
    assert [g["id"] for g in report["groups"]] == [c.group for c in a.cuts]
    for g in report["groups"]:
        da, db = set(a.cut(g["id"]).drop), set(b.cut(g["id"]).drop)
        assert (g["dropped_a"], g["dropped_b"]) == (len(da), len(db))
        assert (g["only_a"], g["only_b"]) == (len(da - db), len(db - da))
    assert report["totals"]["dropped"] == {"a": a.dropped, "b": b.dropped}


def test_diff_of_plans_for_different_models_says_so_and_still_compares(
    runs, work, capsys, monkeypatch
):
    monkeypatch.chdir(work)
    assert main(["diff", "a.json", "net-slim/plan.json"]) == 0
    a, b = _plan(work / "a.json"), _plan(work / "net-slim" / "plan.json")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"a.json and net-slim/plan.json were made for different models (fingerprints "
        f"{a.fingerprint} and {b.fingerprint}); groups are matched by id only"
    )
    assert main(["diff", "a.json", "net-slim/plan.json", "--json"]) == 0
    groups = {g["id"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    facts = ("units_a", "units_b", "dropped_a", "dropped_b", "only_a", "only_b")
    assert [groups["conv1.weight:0"][k] for k in facts] == [64, None, 32, None, 32, 0]
    assert [groups["0.weight:0"][k] for k in facts] == [None, 16, None, 8, 0, 8]


# -- hf:DIRECTORY and PATH.pt2 --------------------------------------------------------


def test_slim_hf_directory_prunes_heads_mlp_and_hidden(runs, work):
    report = json.loads(_ok(runs["slim hf"]))
    plan = _plan(work / "bert-slim" / "plan.json")
    assert report["inputs"] == [{"name": "input_ids", "shape": [1, 16], "dtype": "int64"}]
    assert [(s.name, s.shape) for s in plan.inputs] == [("input_ids", (1, 16))]
    assert report["params"]["after"] == plan.params_after < report["params"]["before"] // 2
    assert report["macs"]["after"] < report["macs"]["before"] // 2
    assert report["stages"][0] == {"name": "bert", "type": "BertModel", "before": 64, "after": 32}


def test_slim_hf_directory_writes_a_folder_that_reloads(runs, work):
    import transformers as T

    _ok(runs["slim hf"])
    out = work / "bert-slim"
    assert {"config.json", "model.safetensors", "plan.json"} <= {p.name for p in out.iterdir()}
    plan = _plan(out / "plan.json")
    original = T.BertForSequenceClassification.from_pretrained(work / "bert").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whether the config describes it is sg.load's business
        expected = sg.apply(original, plan)
    reloaded = sg.load(out)
    assert sg.count_params(reloaded) == plan.params_after
    ids = torch.randint(1, 90, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected.eval()(ids).logits)


def test_slim_exported_program_uses_its_example_inputs(runs, work):
    report = json.loads(_ok(runs["slim pt2"]))
    plan = _plan(work / "net-slim" / "plan.json")
    assert report["inputs"] == [{"name": None, "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert report["params"]["before"] == sg.count_params(_tiny_net())
    assert report["params"]["after"] == plan.params_after
    assert [(c.group, len(c.drop)) for c in plan.cuts] == [("0.weight:0", 8), ("3.weight:0", 16)]
    assert report["stages"] == []  # the program's children are never called


def test_hf_keyword_inputs_go_through_plan_and_apply(work, capsys, monkeypatch):
    import transformers as T

    monkeypatch.chdir(work)
    spec = "hf:bert"
    assert main(["plan", spec, "--keep-residual", "--out", "kw/plan.json", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert main(["apply", spec, "--plan", "kw/plan.json", "--out", "kw/out", "--json"]) == 0
    applied = json.loads(capsys.readouterr().out)
    plan = _plan(work / "kw" / "plan.json")
    assert (
        planned["inputs"]
        == applied["inputs"]
        == [{"name": "input_ids", "shape": [1, 16], "dtype": "int64"}]
    )
    assert applied["params"]["after"] == plan.params_after == planned["params"]["after"]
    assert applied["stages"][0]["after"] == 64  # residual stream kept
    model = T.BertForSequenceClassification.from_pretrained(work / "bert").eval()
    with pytest.warns(UserWarning, match="cannot describe the slim shapes"):  # heads only
        slim = sg.apply(model, plan)
    result = sg.load_weights(slim, work / "kw" / "out" / "model.safetensors")
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert slim.bert.encoder.layer[0].attention.self.num_attention_heads == 2


def test_plan_and_slim_report_the_groups_a_budget_held(work, tmp_path, capsys):
    # the tiny ViT's heads and residual stream narrow in jumps: the budget holds them
    spec, shape = "tests.planner.test_planner:tiny_vit", "1,3,32,32"
    heads = [f"encoder.layers.encoder_layer_{i}.self_attention.in_proj_weight:0" for i in (0, 1)]
    for command, out in (("plan", "held.json"), ("slim", "held-slim")):
        args = [command, spec, "--input-shape", shape, "--target-macs", "0.5"]
        args += ["--out", str(tmp_path / out)]
        assert main([*args, "--json"]) == 0, capsys.readouterr().err
        report = json.loads(capsys.readouterr().out)
        assert report["held"] == ["conv_proj.weight:0", *heads]
        assert main([*args, "--overwrite"]) == 0
        ratio = report["config"]["ratio"]
        text = " ".join(capsys.readouterr().out.split())  # as the console wrapped it
        assert text.startswith(f"{spec}: target_macs 0.5 (ratio {ratio:.4g}), l2, local scope")
        assert (
            f"held at a lighter cut (one step deeper oversteps the budget): conv_proj.weight:0, {', '.join(heads)}"
            f"; the ratio {ratio:.4f} is the other groups'" in text
        )
    assert _plan(tmp_path / "held.json").held == ("conv_proj.weight:0", *heads)


def test_a_latency_budget_plans_against_the_given_or_a_measured_latency_model(
    work, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("SLIMGRAPH_CACHE", str(tmp_path / "cache"))
    net, x = _tiny_net(), (torch.randn(1, 3, 32, 32),)
    lm = sg.profile_latency(net, x, runtime="torch", runs=2, progress=False)
    (tmp_path / "lm.json").write_text(lm.model_dump_json())
    given = ["--latency-model", str(tmp_path / "lm.json")]
    for flags, name in ((given, "given"), ([], "measured")):
        out = tmp_path / f"{name}.json"
        spec = "tests.cli.test_cli_plan:_tiny_net"
        args = ["plan", spec, "--input-shape", "1,3,32,32", "--target-latency", "0.6", *flags]
        args += ["--out", str(out)]
        assert main([*args, "--json"]) == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["config"]["target_latency"] == 0.6
        plan = _plan(out)
        used = plan.config.latency_model
        assert used is not None and sorted(used.layers) == ["0", "3", "7"]
        full = used.predict({})
        graph = sg.trace(net, x)
        assert plan.predicted_latency_ms == pytest.approx(used.predict(layer_shapes(graph, plan)))
        # the closest the search reaches (a multiple of 16 of 16 and 32 channels is coarse)
        assert plan.dropped and plan.predicted_latency_ms < full
    assert _plan(tmp_path / "given.json").config.latency_model == lm
    assert _plan(tmp_path / "measured.json").config.latency_model.runtime == "onnxruntime"
    exported = ["plan", str(work / "net.pt2"), "--target-latency", "0.6", "--out", "x.json"]
    assert main(exported) == 2  # an exported program's layers are not modules to time
    assert "has no layer the latency tables model" in capsys.readouterr().err


def test_profile_writes_the_latency_model_that_plans_read(tmp_path, capsys, monkeypatch):
    seen = []

    def spy(model, example_inputs, **options):  # the real profile, its options recorded
        seen.append(options)
        return profile_latency(model, example_inputs, **options)

    monkeypatch.setattr(sg, "profile_latency", spy)
    spec, out = "tests.cli.test_cli_plan:_tiny_net", tmp_path / "lm.json"
    args = ["profile", spec, "--input-shape", "1,3,32,32", "--runtime", "torch", "--runs", "2"]
    args += ["--cache", str(tmp_path / "c.json"), "--ignore", "7", "--out", str(out)]
    assert main([*args, "--json"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    lm = sg.LatencyModel.model_validate_json(out.read_text())
    assert (seen[0]["runtime"], seen[0]["threads"], seen[0]["runs"]) == ("torch", 1, 2)
    assert seen[0]["config"].ignore == ("7",)  # the knots cut what the plans will cut
    assert sorted(lm.layers) == ["0", "3", "7"] and lm.runtime == "torch"
    assert report["layers"] == 3 and report["dtypes"] == ["float32"] == list(lm.dtypes)
    assert report["knots"] == len(lm.knots)  # 0 where noise timed the half cut no faster
    assert report["predicted_ms"] == lm.predict({}) and report["round_to"] == lm.round_to
    assert report["original_ms"] == lm.measured_ms["knot: original"]
    assert report["check_error"] == lm.check_error and report["file"] == str(out)
    written = out.read_bytes()
    assert main(args) == 2  # the file exists: not replaced without --overwrite
    assert "pass --overwrite" in capsys.readouterr().err and out.read_bytes() == written
    plan = ["plan", spec, "--input-shape", "1,3,32,32", "--target-latency", "0.6"]
    plan += ["--latency-model", str(out), "--out", str(tmp_path / "p.json")]
    assert main(plan) == 0, capsys.readouterr().err
    assert len(seen) == 1  # planned against the file, not profiled again
    assert _plan(tmp_path / "p.json").config.latency_model == lm
    # a global profile on the local one: its tables and fit, its own plans as the knots
    on_global = ["--scope", "global", "--latency-model", str(out), "--out", str(tmp_path / "g")]
    assert main([*args[:-2], *on_global]) == 0, capsys.readouterr().err
    assert seen[1]["uniform"] == lm and seen[1]["config"].scope == "global"
    made = sg.LatencyModel.model_validate_json((tmp_path / "g").read_text())
    assert (made.scope, made.layers, made.round_to) == ("global", lm.layers, lm.round_to)
    assert "global knot: original" in made.measured_ms


def test_slim_times_its_latency_budget_with_latency_tries(work, tmp_path, capsys, monkeypatch):
    net, x = _tiny_net(), (torch.randn(1, 3, 32, 32),)
    lm = sg.profile_latency(
        net, x, runtime="torch", runs=2, cache=tmp_path / "c.json", progress=False
    )
    (tmp_path / "lm.json").write_text(lm.model_dump_json())
    timed = []

    def runtime(runners, example_inputs, threads, runs, **_):  # 0.6 of the original's time
        timed.append(runners["slim"])
        return {"original": 10.0, "slim": 6.0}

    monkeypatch.setattr(latency_fit, "interleaved_ms", runtime)
    spec = "tests.cli.test_cli_plan:_tiny_net"
    args = ["slim", spec, "--input-shape", "1,3,32,32", "--target-latency", "0.6"]
    args += ["--latency-model", str(tmp_path / "lm.json"), "--out", str(tmp_path / "out")]
    assert main([*args, "--latency-tries", "3", "--json"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert len(timed) == 1  # on the target at once
    plan = _plan(tmp_path / "out" / "plan.json")
    assert plan.measured_latency_kept == 0.6 and plan.latency_tries == (0.6,) and plan.dropped
    assert report["latency"] == {
        "predicted_ms": plan.predicted_latency_ms,
        "original_predicted_ms": lm.predict({}),
        "measured_kept": 0.6,
        "tries": [0.6],
    }
    plan_file, applied = str(tmp_path / "out" / "plan.json"), str(tmp_path / "applied")
    assert main(["apply", spec, "--plan", plan_file, "--out", applied, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latency"] == report["latency"]  # as recorded
    assert main([*args, "--latency-tries", "3", "--overwrite"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # as rich wraps it at any width
    original = lm.predict({})
    assert (
        f", {plan.predicted_latency_ms / original:.3f} of the original's {original:.2f} ms" in text
    )
    assert "; measured 0.600 of the original's (tries: 0.600)" in text
    assert main(["slim", spec, "--latency-tries", "2", "--out", str(tmp_path / "x")]) == 2
    assert "--latency-tries 2: a count of slim models to time, for --target-latency" in (
        capsys.readouterr().err
    )


def test_apply_an_exported_program(runs, work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    assert main(["apply", "net.pt2", "--plan", "net-slim/plan.json", "--out", "np", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"]["after"] == _plan(work / "net-slim" / "plan.json").params_after


def test_measure_and_stage_widths_take_keyword_inputs():
    class Text(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, width)
            self.head = nn.Linear(width, 3)

        def forward(self, input_ids):
            return self.head(self.embed(input_ids))

    inputs = {"input_ids": torch.zeros(1, 5, dtype=torch.long)}
    assert stage_widths(Text(8), inputs) == {"embed": 8, "head": 3}
    report = measure(Text(8), Text(4), inputs)
    assert report["params"] == {"before": 107, "after": 55, "ratio": 0.514}
    assert report["macs"] == {"before": 120, "after": 60, "ratio": 0.5}
    assert report["stages"][0] == {"name": "embed", "type": "Embedding", "before": 8, "after": 4}


# -- bad input --------------------------------------------------------------------------

BAD_INPUTS = [
    # (arguments, the start of the one line on stderr after 'slimgraph: error: ')
    (
        ["diff", "missing.json", "a.json"],
        "missing.json: cannot read it (No such file or directory)",
    ),
    (
        ["diff", "a.json", "not-a-plan.json"],
        "not-a-plan.json: not a valid plan (fingerprint: Field required)",
    ),
    (["diff", "notes.txt", "a.json"], "notes.txt: not a valid plan (the file: Invalid JSON"),
    (["diff", "a.json"], "the following arguments are required: B.json"),
    (
        ["apply", "torchvision:resnet34", "--plan", "a.json"],
        "--plan a.json was made for another model (fingerprint ",
    ),
    (
        ["apply", "hf:bert", "--plan", "a.json"],
        "--plan a.json was made for another model (it records input 1x3x64x64, hf:bert takes "
        "input_ids 1x16); make a plan for this model with 'slimgraph plan hf:bert --out "
        "plan.json'",
    ),
    (
        ["apply", "net.pt2", "--plan", "a.json"],
        "--plan a.json was made for another model (it records input 1x3x64x64, at which net.pt2 "
        "does not trace)",
    ),
    (
        ["apply", SPEC, "--plan", "missing.json"],
        "--plan missing.json: cannot read it (No such file or directory)",
    ),
    (["apply", SPEC], "the following arguments are required: --plan"),
    (
        ["apply", SPEC, "--plan", "a.json", "--weights", "w.safetensors"],
        "--weights w.safetensors: no such file",
    ),
    (
        ["apply", SPEC, "--plan", "a.json", "--out", "a-file"],
        "--out a-file: a file is in the way; pass a directory path",
    ),
    (
        ["plan", "--out", "a-file/plan.json"],
        "--out a-file/plan.json: a-file is a file, not a directory; choose another path",
    ),
    (
        ["plan", "--out", "a-dir"],
        "--out a-dir: a directory is in the way; pass a file path, e.g. a-dir/plan.json",
    ),
    (["plan", "--ratio", "1"], "--ratio 1.0: input should be less than 1; use a fraction"),
    (
        ["plan", "--ignore", "layr4.*"],
        "--ignore 'layr4.*' matches no module of this model; module names look like conv1",
    ),
    (
        ["inspect", "hf:a-dir"],
        "model spec 'hf:a-dir': a-dir has no config.json; point it at a folder written by "
        "save_pretrained",
    ),
    (["inspect", "hf:nowhere"], "model spec 'hf:nowhere': no such directory; point it at a local"),
    (
        ["inspect", "hf:misspelt"],
        "model spec 'hf:misspelt': unknown architecture 'BertForSequenceClasification' "
        "(transformers ",
    ),
    (
        ["inspect", "hf:bert", "--input-shape", "1,3,64,64"],
        "input shape 1,3,64,64 does not fit token ids; a text model takes BATCH,LENGTH, e.g. 1,16",
    ),
    (
        ["inspect", "notes.pt2"],
        "model spec 'notes.pt2': not an exported program (torch.export.load cannot read it); "
        "write one with torch.export.save(",
    ),
    (["inspect", "missing.pt2"], "model spec 'missing.pt2': no such file"),
    (
        ["inspect", "net.pt2", "--input-shape", "1,3,16,16"],
        "model spec 'net.pt2' was exported for input 1x3x32x32; leave the input shape out",
    ),
    (["inspect", "model.pt"], "model spec 'model.pt' is not SOURCE:NAME (pickled models are not"),
    (["inspect", "bert"], "model spec 'bert' is not SOURCE:NAME (did you mean 'hf:bert'?)"),
    (["planx"], "argument COMMAND: invalid choice: 'planx'"),
]


@pytest.fixture
def bad_inputs_dir(runs, work, tmp_path) -> Path:
    """A fresh working directory with the files the bad inputs name."""
    shutil.copy(work / "a.json", tmp_path / "a.json")
    (tmp_path / "bert").symlink_to(work / "bert")
    (tmp_path / "net.pt2").symlink_to(work / "net.pt2")
    (tmp_path / "not-a-plan.json").write_text('{"x": 1}')
    (tmp_path / "notes.txt").write_text("not JSON")
    (tmp_path / "notes.pt2").write_text("not a zip archive")
    (tmp_path / "model.pt").write_text("")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-dir").mkdir()
    misspelt = json.loads((work / "bert" / "config.json").read_text())
    misspelt["architectures"] = ["BertForSequenceClasification"]
    (tmp_path / "misspelt").mkdir()
    (tmp_path / "misspelt" / "config.json").write_text(json.dumps(misspelt))
    return tmp_path


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line(args, message, bad_inputs_dir, capsys, monkeypatch):
    monkeypatch.chdir(bad_inputs_dir)
    before = _files(bad_inputs_dir)
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"slimgraph: error: {message}"), err
    assert err.count("\n") == 1, err  # one line: no usage block, no traceback
    assert _files(bad_inputs_dir) == before  # nothing written


def test_a_plan_for_another_model_says_how_to_make_one(bad_inputs_dir, capsys, monkeypatch):
    monkeypatch.chdir(bad_inputs_dir)
    assert main(["apply", "torchvision:resnet34", "--plan", "a.json"]) == 2
    assert (
        capsys.readouterr()
        .err.rstrip()
        .endswith(
            "make a plan for this model with 'slimgraph plan torchvision:resnet34 --out plan.json'"
        )
    )
