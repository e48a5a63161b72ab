"""Scaled dot-product attention: heads, queries, keys and head dims."""

from __future__ import annotations

from slimgraph.graph.builder import OpContext
from slimgraph.graph.kinds import kind


@kind("attention", query=0, key=1, value=2, attn_mask=3)
def attention(ctx: OpContext) -> None:
    """softmax(q k^T * scale + mask) v over q[..., L, E], k[..., S, E], v[..., S, Ev].

    q and k share the head dim E (scale = E^-1/2 changes with it, so it is not exact);
    k and v share S; v's Ev is the output's last dim; leading (batch, head) dims broadcast.
    """
    b = ctx.builder
    q, k, v, out = ctx.tensor("query"), ctx.tensor("key"), ctx.tensor("value"), ctx.out
    b.couple(q.dim(-1), k.dim(-1), ctx.name)
    b.head_dim(q.dim(-1))
    b.head_dim(v.dim(-1))
    if q.ndim >= 3:
        b.head_slots.add(q.dim(-3))
    b.inexact(q.dim(-1), "attention scale depends on the head dim")
    b.couple(q.dim(-2), out.dim(-2), ctx.name)
    b.couple(k.dim(-2), v.dim(-2), ctx.name)
    b.couple(v.dim(-1), out.dim(-1), ctx.name)
    for t in (q, k, v):
        for j in range(3, min(t.ndim, out.ndim) + 1):
            if t.shape[-j] == out.shape[-j] and t.shape[-j] > 1:
                b.couple(t.dim(-j), out.dim(-j), ctx.name)
            elif t.shape[-j] > 1:
                b.freeze(t.dim(-j), "grouped-query attention heads are handled by head rules")
    mask = ctx.tensor("attn_mask")
    if mask is not None:
        for j, anchor in ((1, k.dim(-2)), (2, q.dim(-2))):
            if mask.ndim >= j and mask.shape[-j] > 1:
                b.couple(mask.dim(-j), anchor, ctx.name)
        for j in range(3, min(mask.ndim, out.ndim) + 1):
            if mask.shape[-j] > 1:
                b.couple(mask.dim(-j), out.dim(-j), ctx.name)
