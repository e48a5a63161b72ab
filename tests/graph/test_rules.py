"""The rule tables in rules/: validated at load, shipped in the wheel, found at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import slimgraph
from slimgraph.errors import RuleTableError
from slimgraph.graph.kinds import KINDS
from slimgraph.graph.ruletable import load_rules, rules_dir

ROOT = Path(__file__).resolve().parents[2]  # the checkout: tests/graph/ is two levels down


def write_tables(tmp_path: Path, ops: str, modules: str = "") -> str:
    (tmp_path / "ops.toml").write_text("[ops]\n" + ops)
    (tmp_path / "modules.toml").write_text(modules)
    return str(tmp_path)


def test_shipped_tables_load_and_use_known_kinds() -> None:
    tables = load_rules()
    assert {rule.kind for rule in tables.ops.values()} <= set(KINDS)
    assert tables.ops["aten.conv2d.default"].kind == "conv"
    assert tables.ops["aten.layer_norm.default"].exact is False
    assert "torch.nn.modules.conv._ConvNd" in tables.modules


def test_every_kind_is_used_by_some_op() -> None:
    used = {rule.kind for rule in load_rules().ops.values()}
    assert used == set(KINDS)


@pytest.mark.parametrize(
    ("ops", "modules", "message"),
    [
        ('"aten.x.default" = { kind = "elementwize" }', "", "uses unknown kind 'elementwize'"),
        (
            '"aten.x.default" = { kind = "conv", args = { grops = 3 } }',
            "",
            "gives unknown argument roles ['grops']",
        ),
        (
            '"aten.x.default" = { kind = "conv", exactt = true }',
            "",
            "Extra inputs are not permitted",
        ),
        (
            '"aten.x.default" = { kind = "pool" }\n"aten.x.default" = { kind = "pool" }',
            "",
            "Cannot overwrite a value",
        ),
        ("", '["torch.nn.Linear".attrs]\nin_features = "weight.shape["', "is not an expression"),
        (
            "",
            '["torch.nn.Linear".attrs]\nin_features = "__import__(1)"',
            "only ['int', 'len', 'list', 'tuple'] may be called",
        ),
        (
            "",
            '["torch.nn.Linear".attrs]\nin_features = "weight.__class__"',
            "private attribute '__class__'",
        ),
        (
            "",
            '["torch.nn.Linear".freeze]\n"weight" = "no dim"',
            "'weight' must look like 'param_name:dim'",
        ),
        (
            "",
            '["torch.nn.Linear".link]\n"weight:0" = { to = "weight", why = "x" }',
            "'weight' must look like 'param_name:dim'",
        ),
    ],
)
def test_malformed_tables_are_load_errors(tmp_path, ops, modules, message) -> None:
    with pytest.raises(RuleTableError) as err:
        load_rules(write_tables(tmp_path, ops, modules))
    assert message in str(err.value)


def test_source_checkout_finds_the_top_level_rules() -> None:
    if not Path(slimgraph.__file__).resolve().is_relative_to(ROOT):
        pytest.skip("slimgraph is installed from a wheel here; the wheel test covers it")
    assert rules_dir() == ROOT / "rules"


@pytest.mark.slow
def test_wheel_ships_the_rules_and_finds_them(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("slimgraph-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"slimgraph/rules/ops.toml", "slimgraph/rules/modules.toml"} <= set(names)
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = "import slimgraph.graph.ruletable as r; print(r.rules_dir()); print(len(r.load_rules().ops))"
    ran = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target)},
    )
    assert ran.returncode == 0, ran.stderr
    where, count = ran.stdout.split()
    assert Path(where) == target / "slimgraph" / "rules"
    assert int(count) == len(load_rules().ops)
