"""The rule-table expression evaluator: parsed once per expression, refusals every time."""

from __future__ import annotations

import ast
from types import SimpleNamespace

import pytest

from slimgraph._core import expr
from slimgraph._core.expr import Absent, evaluate


def test_an_expression_is_parsed_once_however_often_it_is_evaluated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[str] = []
    parse = ast.parse

    def counting(source, *args, **kwargs):
        parsed.append(source)
        return parse(source, *args, **kwargs)

    monkeypatch.setattr(expr.ast, "parse", counting)
    text = "out_features * 2 + len(old.shape) + 7001"  # a constant no other test uses
    values = [
        evaluate(text, SimpleNamespace(out_features=n), SimpleNamespace(shape=(1, 2)))
        for n in range(3)
    ]
    assert values == [7003, 7005, 7007]
    assert parsed == [text]


def test_refusals_and_absent_attributes_are_not_remembered() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="only .* may be called"):
            evaluate("print(1)", SimpleNamespace(), SimpleNamespace())
        with pytest.raises(Absent):
            evaluate("bias + 1", SimpleNamespace(bias=None), SimpleNamespace())
    assert evaluate("bias + 1", SimpleNamespace(bias=1), SimpleNamespace()) == 2
