"""The ``slimgraph`` command, run as a real executable in a subprocess.

Each subprocess pays for importing torch (a couple of seconds), so every command below is
started once, all of them at the same time, by the module-scoped ``runs`` fixture, each in
its own working directory; tests read the results. More bad values, help and the helpers
are checked in process through :func:`slimgraph.cli.main`. Saving and loading weights is
tested in ``test_weights.py``.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import slimgraph as sg
from slimgraph.cli.main import main
from slimgraph.io.specs import load_model
from slimgraph.tools.measure import stage_widths
from tests.helpers import finish, start_slimgraph

SPEC = "torchvision:resnet18"
SMALL = "1,3,64,64"


BAD_INPUTS = {
    "unknown torchvision name": (
        ["slim", "torchvision:resnet19"],
        "torchvision has no model 'resnet19'; close matches: resnet18",
    ),
    "bare model name": (
        ["inspect", "resnet18"],
        "model spec 'resnet18' is not SOURCE:NAME (did you mean 'torchvision:resnet18'?)",
    ),
    "ratio of one or more": (
        ["slim", "--ratio", "1.5"],
        "--ratio 1.5: input should be less than 1; use a fraction in [0, 1), e.g. 0.5",
    ),
    "out is a file": (["slim", "--out", "a-file"], "--out a-file: a file is in the way"),
    "out under a file": (
        ["slim", "--out", "a-file/sub"],
        "--out a-file/sub: a-file is a file, not a directory; choose another path",
    ),
    "data-aware criterion": (
        ["slim", "--importance", "activation"],
        "--importance activation reads calibration data, which the command line does not take",
    ),
    "two budgets": (
        ["plan", "--target-macs", "0.5", "--target-params", "0.5"],
        "give one budget, not target_macs and target_params",
    ),
    "a latency budget and another": (
        ["plan", "--target-latency", "0.5", "--target-macs", "0.5"],
        "give one budget, not target_macs and target_latency",
    ),
    "not a latency model": (
        ["plan", "--target-latency", "0.5", "--latency-model", "a-file"],
        "--latency-model a-file is not a latency model (the file: Invalid JSON",
    ),
    "profile given a latency model": (
        ["profile", "--latency-model", "a-file"],
        "--latency-model a-file: profile writes a latency model (--out); slim, plan and bench "
        "read one (and profile --scope global or isomorphic reuses a local one's layer timings "
        "and fit)",
    ),
    "max ratio below ratio": (
        ["slim", "--scope", "global", "--max-ratio", "0.2"],
        "max_ratio=0.2 is below ratio=0.5: no group may drop more than max_ratio",
    ),
    "malformed input shape": (
        ["inspect", "--input-shape", "1x3x64x64"],
        "argument --input-shape: input shape '1x3x64x64' is not a list of positive integers; "
        "write it like 1,3,224,224",
    ),
}

COMMANDS = {
    "slim": ["slim", SPEC, "--ratio", "0.5", "--out", "out", "--input-shape", SMALL],
    # No SPEC: the command slims torchvision:resnet18.
    "slim --json": ["slim", "--ratio", "0.25", "--out", "o", "--input-shape", SMALL, "--json"],
    "inspect": ["inspect", SPEC, "--input-shape", SMALL],
    "inspect --json": ["inspect", SPEC, "--input-shape", SMALL, "--all", "--json"],
    **{case: args for case, (args, _) in BAD_INPUTS.items()},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every command in COMMANDS, run concurrently: name -> (result, working directory)."""
    started = {}
    for name, args in COMMANDS.items():
        cwd = tmp_path_factory.mktemp(re.sub(r"\W+", "-", name))
        if name in BAD_INPUTS:
            (cwd / "a-file").write_text("not a directory")
        started[name] = (start_slimgraph(args, cwd), cwd)
    # 13 processes share the cores: the limit only guards against a hang
    return {name: (finish(proc, timeout=600), cwd) for name, (proc, cwd) in started.items()}


# -- slim ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slimmed(runs):
    proc, cwd = runs["slim"]
    return proc, cwd / "out"


def test_slim_succeeds_quietly_and_writes_both_files(slimmed):
    proc, out = slimmed
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no TTY: no spinner, and warnings are hidden without --verbose
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "plan.json"]


def test_slim_plan_json_is_a_valid_plan(slimmed):
    _, out = slimmed
    plan = sg.PruningPlan.model_validate_json((out / "plan.json").read_text())
    assert plan.config.ratio == 0.5
    assert plan.criterion == "l2"
    assert [s.shape for s in plan.inputs] == [(1, 3, 64, 64)]
    assert plan.cut("conv1.weight:0").size == 64
    assert len(plan.cut("conv1.weight:0").drop) == 32


def test_slim_weights_load_into_the_plan_applied_to_a_fresh_model(slimmed):
    _, out = slimmed
    plan = sg.PruningPlan.model_validate_json((out / "plan.json").read_text())
    fresh = load_model(SPEC).eval()  # the command traces in eval mode
    slim = sg.apply(fresh, plan)
    weights = load_file(out / "model.safetensors")
    slim.load_state_dict(weights, strict=True)
    assert slim.conv1.out_channels == 32
    assert sg.count_params(slim) == plan.params_after
    for name, tensor in slim.state_dict().items():
        torch.testing.assert_close(tensor, weights[name], rtol=0, atol=0)
    assert slim(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_slim_weights_reload_as_the_help_says(slimmed, capsys):
    assert main(["slim", "--help"]) == 0
    hint = capsys.readouterr().out.split("reload: ", 1)[1]
    assert hint == (
        "slim = sg.apply(fresh_model.eval(), sg.PruningPlan.model_validate_json(\n"
        "            open('OUT/plan.json').read()))\n"
        "        sg.load_weights(slim, 'OUT/model.safetensors')\n"
    )
    _, out = slimmed
    fresh_model = load_model(SPEC)
    slim = sg.apply(
        fresh_model.eval(), sg.PruningPlan.model_validate_json((out / "plan.json").read_text())
    )
    result = sg.load_weights(slim, out / "model.safetensors")
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    weights = load_file(out / "model.safetensors")
    for name, tensor in slim.state_dict().items():
        torch.testing.assert_close(tensor, weights[name], rtol=0, atol=0)


def _as_json(args: list[str], where: Path, capsys, monkeypatch) -> dict:
    """The report of ``slimgraph ARGS --json`` (the facts its tables show, as data), run in
    process in ``where``."""
    monkeypatch.chdir(where)
    assert main([*args, "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return json.loads(out)


def test_slim_table_shows_params_macs_stages_and_time(slimmed, tmp_path, capsys, monkeypatch):
    proc, out = slimmed
    text = proc.stdout
    assert text.startswith(f"{SPEC}: ratio 0.5, l2, local scope, input 1x3x64x64\n")
    report = _as_json(COMMANDS["slim"], tmp_path, capsys, monkeypatch)
    plan = sg.PruningPlan.model_validate_json((tmp_path / "out" / "plan.json").read_text())
    assert plan == sg.PruningPlan.model_validate_json((out / "plan.json").read_text())
    params = report["params"]
    assert params["before"] == 11_689_512
    assert params["after"] == plan.params_after
    assert round(100 * params["ratio"], 1) == round(100 * plan.params_after / 11_689_512, 1)
    macs = report["macs"]
    assert isinstance(macs["before"], int) and isinstance(macs["after"], int)
    assert isinstance(macs["ratio"], float)
    assert {"name": "conv1", "type": "Conv2d", "before": 64, "after": 32} in report["stages"]
    assert {"name": "layer4", "type": "Sequential", "before": 512, "after": 256} in report["stages"]
    assert {"name": "fc", "type": "Linear", "before": 1000, "after": 1000} in report["stages"]
    assert "wrote out/plan.json, out/model.safetensors\n" in text
    assert re.search(r"^elapsed \d+\.\d s \(load .*trace .*plan .*apply .*\)$", text, re.M)


@pytest.fixture(scope="module")
def slimmed_json(runs):
    proc, cwd = runs["slim --json"]
    return proc, cwd / "o"


def test_slim_json_defaults_to_resnet18_and_parses(slimmed_json):
    proc, out = slimmed_json
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    report = json.loads(proc.stdout)
    plan = sg.PruningPlan.model_validate_json((out / "plan.json").read_text())
    assert report["spec"] == SPEC
    assert report["input_shape"] == [1, 3, 64, 64]
    assert report["config"]["ratio"] == 0.25
    assert report["fingerprint"] == plan.fingerprint
    assert report["params"]["before"] == 11_689_512
    assert report["params"]["after"] == plan.params_after
    assert report["macs"]["after"] < report["macs"]["before"]
    assert report["stages"][0] == {"name": "conv1", "type": "Conv2d", "before": 64, "after": 48}
    assert [s["name"] for s in report["stages"]] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "fc",
    ]
    assert report["files"] == {"plan": "o/plan.json", "weights": "o/model.safetensors"}
    assert report["units_dropped"] == plan.dropped
    assert set(report["seconds"]) == {"load", "trace", "plan", "apply", "measure", "save", "total"}


# -- inspect ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph():
    return sg.trace(load_model(SPEC).eval(), (torch.randn(1, 3, 64, 64),))


@pytest.fixture(scope="module")
def inspected(runs):
    return runs["inspect"][0]


def test_inspect_lists_groups_with_units_dims_and_state(
    inspected, graph, tmp_path, capsys, monkeypatch
):
    assert inspected.returncode == 0, inspected.stderr
    assert inspected.stderr == ""
    text = inspected.stdout
    report = _as_json(COMMANDS["inspect"], tmp_path, capsys, monkeypatch)
    groups = {g["id"]: g for g in report["groups"]}
    first = groups["conv1.weight:0"]
    assert (first["units"], len(first["params"])) == (64, 13)
    assert first["modules"][:3] == ["conv1", "bn1", "layer1.0.conv1"] and len(first["modules"]) > 3
    assert (first["prunable"], first["frozen"], first["exact"]) == (True, {}, True)
    second = groups["conv1.weight:1"]
    assert (second["units"], len(second["params"]), second["modules"]) == (0, 1, ["conv1"])
    assert not second["prunable"] and next(iter(second["frozen"])).startswith("model input")
    assert "conv1.weight:2 " not in text  # frozen only by the kernel size: hidden by default
    prunable = graph.prunable_groups()
    shown = [
        g
        for g in graph.groups
        if g.size > 1 or set(g.frozen.values()) - {"convolution kernel size"}
    ]
    assert text.splitlines()[-1] == (
        f"{len(graph.groups)} groups: {len(prunable)} prunable ({sum(g.exact for g in prunable)} "
        f"exact), {len(graph.groups) - len(prunable)} frozen; {len(shown)} shown "
        "(--all shows every group)"
    )


@pytest.fixture(scope="module")
def inspected_json(runs):
    return runs["inspect --json"][0]


def test_inspect_json_all_lists_every_group(inspected_json, graph):
    assert inspected_json.returncode == 0, inspected_json.stderr
    report = json.loads(inspected_json.stdout)
    assert report["fingerprint"] == graph.fingerprint
    assert [g["id"] for g in report["groups"]] == [g.id for g in graph.groups]
    assert report["counts"]["groups"] == report["counts"]["shown"] == len(graph.groups)
    assert report["counts"]["prunable"] == len(graph.prunable_groups())
    first = report["groups"][0]
    assert first["id"] == "conv1.weight:0"
    assert (first["units"], first["prunable"], first["exact"], first["frozen"]) == (
        64,
        True,
        True,
        {},
    )
    assert first["params"][:2] == [["conv1.weight", 0], ["bn1.weight", 0]]
    kernel = next(g for g in report["groups"] if g["id"] == "conv1.weight:2")
    assert kernel["frozen"] == {"conv1.weight dim 2": "convolution kernel size"}


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_naming_the_problem(runs, case):
    proc, cwd = runs[case]
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # no usage block, no traceback
    assert lines[0].startswith("slimgraph: error: ")
    assert BAD_INPUTS[case][1] in lines[0]
    assert sorted(p.name for p in cwd.iterdir()) == ["a-file"]  # nothing written


# -- in process: more bad values, help, helpers ------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["slim", "--ratio", "-0.1"], "--ratio -0.1: input should be greater than or equal to 0"),
        (["slim", "--ratio", "half"], "argument --ratio: invalid float value: 'half'"),
        (["slim", "--importance", "foo"], "--importance foo: unknown importance 'foo'; known:"),
        (["slim", "--round-to", "0"], "--round-to 0: input should be greater than or equal to 1"),
        (["slim", "--min-keep", "0"], "--min-keep 0: input should be greater than or equal to 1"),
        (
            ["slim", "--override", "layer4.*=1"],
            "--override: override 'layer4.*': ratio 1.0 is not in [0, 1)",
        ),
        (["slim", "--override", "layer4"], "argument --override: 'layer4' is not GLOB=RATIO"),
        (["slim", "--scope", "wide"], "argument --scope: invalid choice: 'wide'"),
        (["slim", "no_such_module_xyz:build"], "cannot import module 'no_such_module_xyz'"),
        (["inspect", "builtins:dict"], "dict() returned dict, not a torch.nn.Module"),
        (
            ["slim", "torchvision:squeezenet1_1", "--ignore", "featurs.*"],
            "--ignore 'featurs.*' matches no module of this model; module names look like "
            "features, features.0, features.1",
        ),
        (
            ["slim", "torchvision:squeezenet1_1", "--override", "clasifier.*=0.2"],
            "--override 'clasifier.*' matches no module",
        ),
        (["shrink"], "argument COMMAND: invalid choice: 'shrink'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_more_bad_values_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("slimgraph: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_verbose_adds_the_traceback(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["slim", "torchvision:resnet19", "--verbose"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n")
    assert "slimgraph.errors.ModelSpecError: torchvision has no model 'resnet19'" in err
    assert err.splitlines()[-1].startswith("slimgraph: error: torchvision has no model")


COMMAND_NAMES = ["slim", "inspect", "export", "bench", "plan", "apply", "diff"]


@pytest.mark.parametrize("command", COMMAND_NAMES)
def test_help_shows_an_example_per_command(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: slimgraph {command}" in out
    assert f"examples:\n  slimgraph {command} " in out


def test_top_level_help_lists_every_command_with_an_example(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    commands, examples = out.split("\nexamples:\n", 1)
    assert all(re.search(rf"^    {command} ", commands, re.M) for command in COMMAND_NAMES)
    assert all(f"\n  slimgraph {command} " in f"\n{examples}" for command in COMMAND_NAMES)
    assert "hf:DIRECTORY" in examples and "PATH.pt2" in examples


def test_stage_widths_measure_top_level_children_on_meta():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 5)
    )
    assert stage_widths(net, torch.randn(1, 3, 8, 8)) == {"0": 8, "1": 288, "2": 5}
    assert all(not p.is_meta for p in net.parameters())  # the model itself is untouched
