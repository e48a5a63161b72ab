"""Elementwise ops: ``out[..., c, ...]`` depends on ``x[..., c, ...]`` of every input."""

from __future__ import annotations

from slimgraph.graph.builder import OpContext
from slimgraph.graph.kinds import kind


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


@kind("expand", input=0)
def expand(ctx: OpContext) -> None:
    """``x.expand(shape)``: equal dims couple; a dim broadcast from size 1 repeats one
    value, so like a filled tensor it may shrink when the code sizes it from an attribute
    (the ``n_rep`` of grouped-query attention's ``repeat_kv``, from
    ``num_key_value_groups``). It is marked as a repeat: under grouped-query attention it
    carries query heads inside each key/value group (see kinds.reshape)."""
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    b.broadcast(x, out, ctx.name)
    for k in range(1, out.ndim + 1):
        if out.shape[-k] > 1 and (k > x.ndim or x.shape[-k] == 1):
            b.repeat(out.dim(-k), ctx.name)


@kind("repeat", input=0, repeats=1)
def repeat(ctx: OpContext) -> None:
    """``x.repeat(*repeats)``: a dim repeated once passes through; a size-1 dim repeated
    is a broadcast (as in expand); a dim tiled several times freezes (its copies are
    read by position)."""
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    repeats = list(ctx.arg("repeats"))
    for k in range(1, out.ndim + 1):
        if out.shape[-k] <= 1:
            continue
        if k > x.ndim or x.shape[-k] == 1:
            b.repeat(out.dim(-k), ctx.name)
        elif repeats[-k] == 1:
            b.couple(x.dim(-k), out.dim(-k), ctx.name)
        else:
            b.freeze(x.dim(-k), f"tiled {repeats[-k]} times by repeat")
            b.freeze(out.dim(-k), f"tiled {repeats[-k]} times by repeat")


@kind("add")
def add(ctx: OpContext) -> None:
    """``x + y``, elementwise; a dim fed by two computed tensors that were not coupled
    before is a residual stream (adding a parameter, such as a position embedding, is not;
    nor is rotary embedding's ``q * cos + rotate_half(q) * sin``, two terms of one stream)."""
    b = ctx.builder
    args = [t for t in ctx.tensor_args() if t.slots and b.slots[t.slots[0]].role == "tensor"]
    merges = []
    if len(args) >= 2 and ctx.outs:
        out = ctx.out
        for k in range(1, out.ndim + 1):
            fed = [t.dim(-k) for t in args if t.ndim >= k and t.shape[-k] == out.shape[-k] > 1]
            if len(fed) >= 2 and not all(b.connected(fed[0], s) for s in fed[1:]):
                merges.append(out.dim(-k))
    elementwise(ctx)
    b.residual.update(merges)
