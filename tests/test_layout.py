"""The package layout: each stage imports only the stages below it, never another module's
underscore names, and never a slimgraph module from inside a function (an import hidden
in a function is how a cycle between stages goes unnoticed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "slimgraph"

# Stage -> rank. A module may import its own stage or a stage of lower rank.
STAGES = {
    "errors": 0,
    "_core": 1,
    "graph": 2,
    "criteria": 3,
    "resolve": 4,
    "planner": 5,
    "rewrite": 6,
    "export": 7,
    "io": 8,
    "tools": 8,
    "api": 9,
    "__init__": 10,  # the public names; the command line is their client
    "cli": 11,
}
MAX_LINES = 400


def stage_of(module: str) -> str:
    """``slimgraph.graph.trace`` -> ``graph``; ``slimgraph`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def violations(module: str, source: str) -> list[str]:
    """What ``source`` (the text of ``module``) does against the layout rules."""
    found = []
    here = stage_of(module)
    tree = ast.parse(source)
    top_level = set()
    for node in tree.body:
        top_level.add(id(node))
        if isinstance(node, ast.If):  # ``if TYPE_CHECKING:`` blocks are module level too
            top_level.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [(node.module, [a.name for a in node.names])]
        elif isinstance(node, ast.Import):
            targets = [(a.name, []) for a in node.names]
        else:
            continue
        for target, names in targets:
            if target.split(".")[0] != "slimgraph":
                continue
            if target == "slimgraph" and names:  # ``from slimgraph import graph``
                target = f"slimgraph.{names[0]}"
            there = stage_of(target)
            line = f"{module}:{node.lineno}"
            if STAGES[there] > STAGES[here] or (STAGES[there] == STAGES[here] and there != here):
                found.append(f"{line} ({here}) imports {target} ({there}), not a lower stage")
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if private and target != module:
                found.append(f"{line} imports private names {private} from {target}")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_level:
            mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            if (mod or "").split(".")[0] == "slimgraph":
                found.append(f"{module}:{node.lineno} imports {mod} inside a function")
    return found


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_known_stage():
    unknown = {stage_of(module_name(p)) for p in package_modules()} - set(STAGES)
    assert unknown == set()


def test_imports_flow_down_the_stages():
    found = []
    for path in package_modules():
        found += violations(module_name(path), path.read_text())
    assert found == []


def test_no_module_needs_a_table_of_contents():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in package_modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "slimgraph.graph.trace",
            "from slimgraph.rewrite.apply import apply\n",
            "slimgraph.graph.trace:1 (graph) imports slimgraph.rewrite.apply (rewrite), "
            "not a lower stage",
        ),
        (
            "slimgraph.io.specs",
            "from slimgraph.tools.latency import measure_latency\n",
            "slimgraph.io.specs:1 (io) imports slimgraph.tools.latency (tools), not a lower stage",
        ),
        (
            "slimgraph.rewrite.apply",
            "from slimgraph.resolve.slicing import _private\n",
            "slimgraph.rewrite.apply:1 imports private names ['_private'] from "
            "slimgraph.resolve.slicing",
        ),
        (
            "slimgraph.resolve.plan",
            "def summary():\n    from slimgraph.resolve.summary import summarize\n",
            "slimgraph.resolve.plan:2 imports slimgraph.resolve.summary inside a function",
        ),
        (
            "slimgraph.criteria.config",
            "from slimgraph import planner\n",
            "slimgraph.criteria.config:1 (criteria) imports slimgraph.planner (planner), "
            "not a lower stage",
        ),
    ],
)
def test_a_wrong_import_is_caught(module, source, expected):
    assert violations(module, source) == [expected]


@pytest.mark.parametrize(
    "source",
    [
        "from slimgraph.graph.depgraph import DependencyGraph\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from slimgraph.resolve.plan import X\n",
        "def f():\n    import transformers\n",
    ],
)
def test_a_right_import_passes(source):
    assert violations("slimgraph.rewrite.apply", source) == []
