"""Elementwise ops: ``out[..., c, ...]`` depends on ``x[..., c, ...]`` of every input."""

from __future__ import annotations

from slimgraph._builder import OpContext
from slimgraph.kinds import kind


@kind("elementwise")
def elementwise(ctx: OpContext) -> None:
    """Every tensor input is broadcast into the output: equal dims couple, size-1 dims don't."""
    b = ctx.builder
    for out in ctx.outs:
        for t in ctx.tensor_args():
            b.broadcast(t, out, ctx.name)
            if not ctx.exact:
                for s in out.slots:
                    b.inexact(s, ctx.why or f"{ctx.node.target} mixes channels")
