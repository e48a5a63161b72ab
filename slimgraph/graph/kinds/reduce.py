"""Pooling, reductions and softmax: the kept dims pass through, reduced dims vanish."""

from __future__ import annotations

from slimgraph.graph.builder import OpContext
from slimgraph.graph.kinds import kind


@kind("pool", input=0, spatial=None)
def pool(ctx: OpContext) -> None:
    """Pooling mixes only the trailing spatial dims; channels pass through one to one."""
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    spatial = int(ctx.roles.get("spatial") or 2)
    for d in range(x.ndim - spatial):
        if x.shape[d] > 1:
            b.couple(x.dim(d), out.dim(d), ctx.name)


def _dims(value, ndim: int) -> list[int]:
    if value is None or value == []:
        return list(range(ndim))
    values = value if isinstance(value, (list, tuple)) else [value]
    return sorted(int(v) % ndim for v in values)


@kind("reduce", input=0, dims=1, keepdim=2)
def reduce(ctx: OpContext) -> None:
    """Kept dims couple with the output (each output: ``max.dim`` gives values and
    indices); reduced dims are exact only for a plain sum."""
    b, x = ctx.builder, ctx.tensor("input")
    if x.ndim == 0:
        return
    reduced = set(_dims(ctx.arg("dims"), x.ndim))
    keepdim = bool(ctx.arg("keepdim", False))
    for out in ctx.outs:
        j = 0
        for d in range(x.ndim):
            if d in reduced:
                if not ctx.exact:
                    b.inexact(x.dim(d), f"{ctx.node.target} reduces over this dim")
                j += keepdim
                continue
            if x.shape[d] > 1:
                b.couple(x.dim(d), out.dim(j), ctx.name)
            j += 1


@kind("reduce_all", input=0)
def reduce_all(ctx: OpContext) -> None:
    """``x.sum()`` / ``x.mean()``: every dim reduced to one value."""
    reduce(ctx)  # without a ``dims`` role: every dim


@kind("softmax", input=0, dim=1)
def softmax(ctx: OpContext) -> None:
    """Elementwise in every dim but ``dim``, whose kept values renormalise."""
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    for a, o in zip(x.slots, out.slots):
        b.couple(a, o, ctx.name)
    if x.ndim:
        b.inexact(x.dim(int(ctx.arg("dim")) % x.ndim), "softmax normalises over this dim")
