"""Ops whose dims never carry prunable channels: tensor creation and declared freezes."""

from __future__ import annotations

from slimgraph._builder import OpContext
from slimgraph.kinds import kind


@kind("creation")
def creation(ctx: OpContext) -> None:
    """A tensor made from constant sizes (zeros, arange, ...): its dims are fixed in code."""
    ctx.builder.freeze_all(ctx.outs, f"created with constant shape by {ctx.node.target}")


@kind("frozen")
def frozen(ctx: OpContext) -> None:
    """A known op that slimgraph does not prune through (the table says why)."""
    reason = f"{ctx.node.target}: {ctx.why or 'not pruned through'}"
    ctx.builder.freeze_all(ctx.tensor_args() + ctx.outs, reason)


@kind("ignore")
def ignore(ctx: OpContext) -> None:
    """Ops without tensor results (shape assertions): nothing to couple."""
