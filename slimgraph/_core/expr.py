"""A tiny, safe evaluator for the attribute identities in ``rules/modules.toml``.

Expressions may use names, attribute access, subscripts, integer arithmetic,
comparisons, ``a if cond else b`` and the calls ``tuple``, ``int``, ``len``, ``list``; anything else is rejected when the table loads.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Mapping
from types import CodeType
from typing import Any

from slimgraph.errors import RuleTableError

__all__ = ["Absent", "check_expression", "evaluate"]

_CALLS = {"tuple": tuple, "int": int, "len": len, "list": list}
_NODES = (
    ast.Expression,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Subscript,
    ast.Constant,
    ast.BinOp,
    ast.UnaryOp,
    ast.Tuple,
    ast.Call,
    ast.Slice,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.FloorDiv,
    ast.Div,
    ast.Mod,
    ast.Pow,
    ast.USub,
    ast.IfExp,
    ast.Compare,
    ast.Gt,
    ast.GtE,
    ast.Lt,
    ast.LtE,
    ast.Eq,
    ast.NotEq,
    ast.Is,
    ast.IsNot,
    ast.BoolOp,
    ast.And,
    ast.Or,
)


def check_expression(expr: str, *, where: str) -> ast.Expression:
    """Parse ``expr`` and reject anything outside the small algebra above."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"{where}: {expr!r} is not an expression ({err.msg})") from err
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise ValueError(f"{where}: {type(node).__name__} is not allowed in {expr!r}")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _CALLS
        ):
            raise ValueError(f"{where}: only {sorted(_CALLS)} may be called in {expr!r}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ValueError(f"{where}: private attribute {node.attr!r} in {expr!r}")
    return tree


class Absent(Exception):
    """The expression reads an optional attribute (a bias, an affine weight) that is None."""


def _present(value: Any, name: str) -> Any:
    if value is None:
        raise Absent(name)
    return value


class _Old:
    """The module before slicing, as ``old``: its None attributes are :class:`Absent`."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return _present(getattr(self._module, name), name)


class _ObjectScope(Mapping):
    """Resolve bare names as attributes of an object (a module)."""

    def __init__(self, obj: Any, extra: dict[str, Any]) -> None:
        self._obj, self._extra = obj, extra

    def __getitem__(self, key: str) -> Any:
        if key in self._extra:
            return self._extra[key]
        try:
            return _present(getattr(self._obj, key), key)
        except AttributeError:
            raise KeyError(key) from None

    def __iter__(self):
        return iter(self._extra)

    def __len__(self) -> int:
        return len(self._extra)


@functools.cache
def _compiled(expr: str) -> CodeType:
    """``expr`` checked and compiled once: the same few table entries are evaluated on
    every module of every model."""
    return compile(check_expression(expr, where="modules.toml"), "<modules.toml>", "eval")


def evaluate(expr: str, obj: Any, old: Any, names: Mapping[str, Any] | None = None) -> Any:
    """Evaluate ``expr`` with ``obj``'s attributes as names, ``old`` as ``old`` and the
    extra ``names`` (such as ``head_dims``, how the plan's graph was traced).

    Raises :class:`Absent` when it reads an attribute that is None on this instance.
    """
    code = _compiled(expr)
    try:
        # safe by construction: check_expression admitted only names, arithmetic,
        # comparisons and the _CALLS whitelist, no private attributes, and no builtins
        return eval(  # noqa: S307
            code,
            {"__builtins__": {}},
            _ObjectScope(obj, {"old": _Old(old), **_CALLS, **(names or {})}),
        )
    except Absent:
        raise
    except Exception as err:  # the rule does not fit this module instance
        raise RuleTableError(
            f"modules.toml expression {expr!r} failed on {type(obj).__name__}: {err}"
        ) from err
