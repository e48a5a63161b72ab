"""mypy's ratchet. CI runs `mypy` on the package (config in pyproject.toml); modules that did
not pass when it joined are excused there with ``ignore_errors``. That list may only get
shorter: a module fixed is deleted from it (and from BASELINE below), and nothing is ever
added, so new code is type-checked from its first line."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The excused modules when mypy joined CI (200 errors in 27 files); `.*` is a whole package.
BASELINE = frozenset(
    {
        "slimgraph.criteria.calibration",
        "slimgraph.criteria.data_aware",
        "slimgraph.criteria.gradient",
        "slimgraph.criteria.magnitude",
        "slimgraph.criteria.registry",
        "slimgraph.graph.depgraph",
        "slimgraph.graph.kinds.*",
        "slimgraph.graph.ruletable",
        "slimgraph.graph.trace",
        "slimgraph.io.hf",
        "slimgraph.planner.choose",
        "slimgraph.planner.compensation",
        "slimgraph.resolve.slicing",
        "slimgraph.rewrite.compensation",
        "slimgraph.tools.bench",
        "slimgraph.tools.penalty",
        "slimgraph.tools.schedule",
    }
)


def mypy_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def excused() -> list[str]:
    """Every module pattern that pyproject.toml exempts from mypy's errors."""
    found: list[str] = []
    for override in mypy_config().get("overrides", []):
        if override.get("ignore_errors"):
            modules = override["module"]
            found += [modules] if isinstance(modules, str) else modules
    return found


def exists(pattern: str) -> bool:
    """Whether ``pattern`` (``a.b`` or ``a.b.*``) names a module or package of this tree."""
    path = ROOT.joinpath(*pattern.removesuffix(".*").split("."))
    if pattern.endswith(".*"):
        return (path / "__init__.py").is_file()
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_excused_modules_never_grow() -> None:
    added = sorted(set(excused()) - BASELINE)
    assert not added, f"new modules excused from mypy: {added}; fix their types instead"
    assert len(excused()) == len(set(excused())), "a module is excused twice"


def test_excused_modules_exist() -> None:
    """A module fixed, renamed or deleted leaves the list (and BASELINE) with it."""
    stale = [p for p in excused() if not exists(p)]
    assert not stale, f"excused from mypy but not in the package: {stale}; delete them"


def test_mypy_checks_the_whole_package() -> None:
    config = mypy_config()
    assert config["packages"] == ["slimgraph"]
    assert not config.get("ignore_errors")
    assert config.get("follow_imports", "normal") == "normal"
    for pattern in excused():
        assert pattern.startswith("slimgraph.") and pattern != "slimgraph.*", pattern
