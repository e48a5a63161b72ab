"""Load and validate the declarative rule tables shipped in ``rules/``.

``rules/ops.toml`` maps ATen ops to rule *kinds* (implemented in :mod:`slimgraph.graph.kinds`);
``rules/modules.toml`` says which module attributes follow from the sliced parameter
shapes, and which parameter dims a module forbids slicing. Both are validated by pydantic
when loaded: an unknown kind, an unknown argument role or a malformed expression is a
:class:`~slimgraph.errors.RuleTableError` that names the entry.

Example
-------
>>> from slimgraph.graph.ruletable import load_rules
>>> rules = load_rules()
>>> rules.ops["aten.relu.default"].kind
'elementwise'
>>> import torch
>>> rules.op_rule(torch.ops.aten.floor.default).why  # not in the table: torch's own tag
'torch tags aten.floor.default pointwise'
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from slimgraph._core.expr import check_expression
from slimgraph.errors import RuleTableError
from slimgraph.graph.copies import code_key, code_key_of_path
from slimgraph.graph.kinds import KINDS

__all__ = ["OpRule", "ModuleRule", "LinkRule", "RuleTables", "load_rules", "rules_dir"]


class OpRule(BaseModel):
    """How one ATen op couples the dims of its tensors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    args: dict[str, int] = Field(default_factory=dict)
    exact: bool = True
    why: str | None = None


class LinkRule(BaseModel):
    """Two parameter dims that must keep the same fraction of their indices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str
    why: str
    only_with_head_dims: bool = False  # holds for head-dim units only (see modules.toml)


class ModuleRule(BaseModel):
    """Attribute identities of one module class, evaluated after slicing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attrs: dict[str, str | list[str]] = Field(default_factory=dict)
    freeze: dict[str, str] = Field(default_factory=dict)
    link: dict[str, LinkRule] = Field(default_factory=dict)
    same_as: str | None = None  # a class whose rule this one shares (copied code)
    # attributes that no tensor shape shows (a router's top_k): a config must reproduce
    # them even on modules that own tensors (see rewrite.config_solver.signature)
    shapeless: list[str] = Field(default_factory=list)

    @field_validator("attrs")
    @classmethod
    def _expressions_parse(cls, attrs: dict[str, str | list[str]]) -> dict[str, list[str]]:
        """Every value becomes a list of alternatives (the first a module can evaluate wins)."""
        found = {}
        for name, exprs in attrs.items():
            found[name] = [exprs] if isinstance(exprs, str) else exprs
            for expr in found[name]:
                check_expression(expr, where=f"attribute {name!r}")
        return found

    @field_validator("freeze", "link")
    @classmethod
    def _slot_keys(cls, table: dict) -> dict:
        keys = list(table) + [v.to for v in table.values() if isinstance(v, LinkRule)]
        for key in keys:
            name, _, dim = key.rpartition(":")
            if not name or not dim.isdigit():
                raise ValueError(f"{key!r} must look like 'param_name:dim'")
        return table


class ConfigField(BaseModel):
    """One config field: the modules it is read from (a glob) and the expression."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: str
    value: str

    @field_validator("value")
    @classmethod
    def _parses(cls, value: str) -> str:
        check_expression(value, where="configs.toml")
        return value


class ConfigRule(BaseModel):
    r"""The config fields of some Hugging Face ``model_type``\ s (``rules/configs.toml``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model_types: list[str]

    @property
    def fields(self) -> dict[str, ConfigField]:
        return {k: ConfigField.model_validate(v) for k, v in (self.model_extra or {}).items()}

    @field_validator("model_types")
    @classmethod
    def _nonempty(cls, types: list[str]) -> list[str]:
        if not types:
            raise ValueError("model_types must name at least one model_type")
        return types


class RuleTables(BaseModel):
    """The tables, validated against the kinds slimgraph implements."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ops: dict[str, OpRule]
    modules: dict[str, ModuleRule]
    configs: dict[str, ConfigRule] = Field(default_factory=dict)

    def op_rule(self, target: object) -> OpRule | None:
        """The ``ops.toml`` entry of ``target``; else, for an op that torch itself tags
        ``pointwise`` (``aten.floor``, ``aten.ge.Scalar``, ``aten.lerp``, their in-place
        forms), the elementwise rule; else None, and the op freezes what it touches."""
        rule = self.ops.get(str(target))
        if rule is None and _pointwise(target):
            return OpRule(kind="elementwise", why=f"torch tags {target} pointwise")
        return rule

    def config_rule(self, model_type: str) -> ConfigRule | None:
        """The configs.toml entry that lists ``model_type``."""
        return next((r for r in self.configs.values() if model_type in r.model_types), None)

    def module_rule(self, module: object) -> ModuleRule | None:
        """The rule of ``module``'s class or its nearest base class that has one; else
        the rule of a class whose code the module's class copies (:mod:`~.copies`)."""
        for cls in type(module).__mro__:
            rule = self.modules.get(f"{cls.__module__}.{cls.__qualname__}")
            if rule is not None:
                return self.modules[rule.same_as] if rule.same_as else rule
        original = _copy_of(tuple(self.modules), type(module))
        return self.module_rule_of(original) if original else None

    def module_rule_of(self, path: str) -> ModuleRule:
        """The rule named ``path`` in ``modules.toml``, through its ``same_as``."""
        rule = self.modules[path]
        return self.modules[rule.same_as] if rule.same_as else rule


@functools.cache
def _copy_of(paths: tuple[str, ...], cls: type) -> str | None:
    """The named class (of the same library) whose code ``cls`` copies, if any."""
    library = cls.__module__.partition(".")[0]
    mine = [p for p in paths if p.partition(".")[0] == library]
    key = code_key(cls) if mine else None
    return next((p for p in mine if code_key_of_path(p) == key), None) if key else None


def _pointwise(target: object) -> bool:
    # torch's operator registry says which ATen ops are elementwise with broadcasting:
    # a mechanism that covers ops no table names (out= overloads never reach a graph)
    return (
        isinstance(target, torch._ops.OpOverload)
        and torch.Tag.pointwise in target.tags
        and not any(a.is_out for a in target._schema.arguments)
    )


def rules_dir() -> Path:
    """The ``rules/`` folder: inside the installed package, or at the repository root."""
    packaged = Path(str(resources.files("slimgraph"))) / "rules"
    if (packaged / "ops.toml").is_file():
        return packaged
    source_tree = Path(__file__).resolve().parents[2] / "rules"
    if (source_tree / "ops.toml").is_file():
        return source_tree
    raise RuleTableError(
        f"rule tables not found in {packaged} or {source_tree}; reinstall slimgraph"
    )


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise RuleTableError(f"{path.name}: {err}") from err


@functools.cache
def load_rules(directory: str | None = None) -> RuleTables:
    """Read and validate ``ops.toml``, ``modules.toml`` and ``configs.toml`` (cached)."""
    root = Path(directory) if directory else rules_dir()
    ops_data = _read_toml(root / "ops.toml").get("ops", {})
    modules_data = _read_toml(root / "modules.toml")
    configs = root / "configs.toml"
    configs_data = _read_toml(configs) if configs.is_file() else {}
    try:
        tables = RuleTables(ops=ops_data, modules=modules_data, configs=configs_data)
        for rule in tables.configs.values():
            rule.fields  # noqa: B018 -- validates every field now, not at first use
        for name, rule in tables.modules.items():
            target = tables.modules.get(rule.same_as) if rule.same_as else None
            if rule.same_as and (target is None or target.same_as or rule.attrs or rule.link):
                raise RuleTableError(
                    f"modules.toml: {name} has same_as {rule.same_as!r}, which must name "
                    "another entry that has no same_as itself, and nothing else"
                )
    except ValidationError as err:
        raise RuleTableError(f"rule tables in {root} are invalid:\n{err}") from err
    for name, rule in tables.ops.items():
        kind = KINDS.get(rule.kind)
        if kind is None:
            raise RuleTableError(
                f"ops.toml: {name} uses unknown kind {rule.kind!r}; known kinds: "
                + ", ".join(sorted(KINDS))
            )
        unknown = set(rule.args) - set(kind.roles)
        if unknown:
            raise RuleTableError(
                f"ops.toml: {name} gives unknown argument roles {sorted(unknown)} for kind "
                f"{rule.kind!r}; it takes {sorted(kind.roles)}"
            )
    return tables
