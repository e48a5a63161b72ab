"""The README is the front door: every Python example in it runs as written, in order, in
one namespace (later examples may use what earlier ones made), and its quickstart commands
are what CI runs (`.ci/run`) and what a first-time user types."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def fenced_blocks(text: str, language: str) -> list[tuple[int, str, str]]:
    """``(line, heading, code)`` of every ```language block of ``text``: the README line
    its code starts on and the section heading above it."""
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) != language:
            continue
        before = text[: match.start()]
        headings = re.findall(r"^#+ (.+)$", before, re.MULTILINE)
        found.append((before.count("\n") + 2, headings[-1] if headings else "top", match.group(2)))
    return found


def quickstart_commands() -> tuple[str, str]:
    """The quickstart's two commands: install and slim, install and test."""
    section = README.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    (_, _, script), *_ = fenced_blocks(section, "bash")
    commands = [line for line in script.splitlines() if line.strip() and line[0] != "#"]
    assert len(commands) == 2, commands
    return commands[0], commands[1]


def steps(command: str) -> list[str]:
    return [step.strip() for step in command.split("&&")]


def ci_steps() -> list[str]:
    """What `.ci/run` runs once it stands in the repository root, one step a line."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [
        line.strip() for line in lines if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]


def test_readme_test_command_is_what_ci_runs() -> None:
    _, test_command = quickstart_commands()
    assert steps(test_command) == ci_steps()
    for step in ("ruff check .", "ruff format --check .", "mypy", "pytest -n 2"):
        assert step in ci_steps(), f".ci/run does not run {step!r}"
    assert ci_steps()[-1] == "pytest -n 2"  # lint and types fail fast, before the tests


def test_quickstart_installs_then_runs_the_default_slim() -> None:
    slim_command, test_command = quickstart_commands()
    venv = steps(test_command)[:2]
    assert steps(slim_command) == [*venv, "pip install -e .", "slimgraph slim"]
    assert steps(test_command)[2] == 'pip install -q -e ".[test]"'


def test_readme_python_blocks_compile() -> None:
    blocks = fenced_blocks(README, "python")
    assert len(blocks) >= 7
    for line, _, code in blocks:
        compile("\n" * (line - 1) + code, "README.md", "exec")


@pytest.mark.slow
def test_readme_python_examples_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks run in README order in one namespace, in a temporary directory (they write
    plan.json, slim.onnx, ...); tracebacks point at README lines."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # graph.draw without a display
    monkeypatch.setenv("SLIMGRAPH_CACHE", str(tmp_path))  # latency tables: not in ~/.cache
    namespace: dict[str, object] = {"__name__": "readme"}
    for line, heading, code in fenced_blocks(README, "python"):
        program = compile("\n" * (line - 1) + code, "README.md", "exec")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(program, namespace)
        except Exception as error:
            raise AssertionError(
                f"README block at line {line} ({heading!r}) fails as written"
            ) from error
    assert (tmp_path / "slim.onnx").is_file()  # the last block ran to its end


@pytest.mark.slow
def test_quickstart_slim_writes_plan_and_weights(tmp_path: Path) -> None:
    """The slimgraph part of the first quickstart command, through the console script's
    entry point (with this checkout first on the path), on the default model."""
    slim_command, _ = quickstart_commands()
    program, *args = steps(slim_command)[-1].split()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts[program].split(":")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from {module} import {function}; sys.exit({function}())",
            *args,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "slim-out"
    assert (out / "model.safetensors").is_file()
    plan = json.loads((out / "plan.json").read_text())
    assert plan["params_before"] == 11_689_512  # torchvision's resnet18, the default model
    assert plan["params_after"] < plan["params_before"]
