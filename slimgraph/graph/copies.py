"""Classes whose code is a copy of another's: they share its module rule.

Libraries copy modules across families (transformers generates ``BertGenerationSelfAttention``
and ``CamembertSelfAttention`` from ``BertSelfAttention``), so a table keyed by class would
need a row per copy. Instead a class that ``rules/modules.toml`` does not name takes the
rule of a named class whose ``__init__`` and ``forward`` have the same code, compared as
syntax trees without annotations, docstrings and the names of other classes (a copy builds
``CamembertSelfOutput`` where the original builds ``BertSelfOutput``).

The named classes are read from their source files, not imported: importing a dozen model
modules to compare would cost seconds per process.

>>> import torch
>>> class Copied(torch.nn.Linear):
...     pass
>>> code_key(Copied) is None  # defines neither __init__ nor forward: the MRO decides
True
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import re
import textwrap

__all__ = ["code_key", "code_key_of_path"]

METHODS = ("__init__", "forward")


class _Mask(ast.NodeTransformer):
    """Drop what a copy may change without changing behaviour."""

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.returns = None
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[1:] or [ast.Pass()]  # the docstring
        self.generic_visit(node)
        return node

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id[:1].isupper():  # a class name: FooRMSNorm and BarRMSNorm are copies
            node.id = "Class"
        return node


def _key(cls_def: ast.ClassDef) -> str | None:
    methods = {
        f.name: f for f in cls_def.body if isinstance(f, ast.FunctionDef) and f.name in METHODS
    }
    if set(methods) != set(METHODS):
        return None
    return "\n".join(ast.dump(_Mask().visit(methods[m])) for m in METHODS)


@functools.cache
def code_key(cls: type) -> str | None:
    """The masked code of ``cls``'s own ``__init__`` and ``forward``; None when it does not
    define both, or its source cannot be read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return None
    cls_def = tree.body[0]
    return _key(cls_def) if isinstance(cls_def, ast.ClassDef) else None


@functools.cache
def code_key_of_path(path: str) -> str | None:
    """:func:`code_key` of the class named ``module.Class``, read from its source file
    without importing the module; None when it cannot be found."""
    module, _, name = path.rpartition(".")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return None
    block = _class_block(origin, name)
    if block is None:
        return None
    try:
        cls_def = ast.parse(block).body[0]
    except SyntaxError:  # not where a class statement starts after all
        return None
    return _key(cls_def) if isinstance(cls_def, ast.ClassDef) else None


def _class_block(source_file: str, name: str) -> str | None:
    """The source of the top-level class ``name``: from its ``class`` line to the next
    line that starts at column 0 with code. Only that block is parsed, not the whole
    modeling file (a file parse costs about 30 ms, and the rule tables name classes of
    some thirty files)."""
    lines = _lines(source_file)
    start = next(
        (i for i, line in enumerate(lines) if re.match(rf"class {re.escape(name)}\b", line)),
        None,
    )
    if start is None:
        return None
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][:1] in " \t#)"):
        end += 1
    return "".join(lines[start:end])


@functools.cache
def _lines(source_file: str) -> list[str]:
    with open(source_file, encoding="utf-8") as f:
        return f.readlines()
