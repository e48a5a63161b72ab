"""Rule kinds: the Python vocabulary that ``rules/ops.toml`` maps ATen ops onto.

Each kind is a function ``rule(ctx)`` that reads the op's tensors from an
:class:`~slimgraph._builder.OpContext` and states coupling, frozen slots and inexact slots.
``roles`` names the positional arguments the kind reads, with defaults that a table entry
may override (``args = { groups = 8 }``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from slimgraph.graph.builder import OpContext

__all__ = ["Kind", "KINDS", "kind"]


@dataclass(frozen=True)
class Kind:
    name: str
    rule: Callable[[OpContext], None]
    roles: dict[str, int | None]
    doc: str


KINDS: dict[str, Kind] = {}


def kind(name: str, **roles: int | None) -> Callable:
    """Register ``rule`` under ``name``; keyword arguments are the default argument roles."""

    def register(rule: Callable[[OpContext], None]) -> Callable[[OpContext], None]:
        if name in KINDS:
            raise ValueError(f"kind {name!r} registered twice")
        KINDS[name] = Kind(name, rule, dict(roles), (rule.__doc__ or "").strip())
        return rule

    return register


# Importing the modules registers their kinds.
from slimgraph.graph.kinds import (  # noqa: E402,F401
    attention,
    boundary,
    elementwise,
    experts,
    layers,
    norms,
    recurrent,
    reduce,
    reshape,
    shape,
)
