"""Ops whose dims never carry prunable channels: tensor creation and declared freezes."""

from __future__ import annotations

from slimgraph.graph.builder import OpContext
from slimgraph.graph.kinds import kind


@kind("creation")
def creation(ctx: OpContext) -> None:
    """A tensor made from constant sizes (zeros, arange, ...): its dims are fixed in code."""
    ctx.builder.freeze_all(ctx.outs, f"created with constant shape by {ctx.node.target}")


@kind("filled")
def filled(ctx: OpContext) -> None:
    """A tensor of one repeated value (zeros, ones, full, empty): any sub-block of it is the
    same tensor made smaller, so its dims follow whatever they meet. The code must size it
    from attributes the rewrite updates (T5's ``zeros((1, n_heads, q, k))``); a size
    hard-coded as a number fails the meta dry run and the plan skips that group."""
    b = ctx.builder
    for t in ctx.outs:
        for d, size in enumerate(t.shape):
            if size > 1:
                b.couple(t.dim(d), b.factor(size, ctx.name), ctx.name, "filled")


@kind("frozen")
def frozen(ctx: OpContext) -> None:
    """A known op that slimgraph does not prune through (the table says why)."""
    reason = f"{ctx.node.target}: {ctx.why or 'not pruned through'}"
    ctx.builder.freeze_all(ctx.tensor_args() + ctx.outs, reason)


@kind("ignore")
def ignore(ctx: OpContext) -> None:
    """Ops without tensor results (shape assertions): nothing to couple."""
