"""Mixture-of-experts kernels: grouped matrix products and top-k routing."""

from __future__ import annotations

from slimgraph.graph.builder import OpContext
from slimgraph.graph.kinds import kind


@kind("grouped_mm", input=0, weight=1, offs=2)
def grouped_mm(ctx: OpContext) -> None:
    """out[s, n] = sum_k input[s, k] * weight[e(s), k, n], rows s grouped by expert e.

    Every expert's matrix shares the k and n dims, so a unit there is one offset in every
    expert at once (stacked expert weights (experts, in, out)). The experts dim is the
    length of ``offs`` (where each expert's rows end in ``input``).
    """
    b = ctx.builder
    x, w, offs, out = ctx.tensor("input"), ctx.tensor("weight"), ctx.tensor("offs"), ctx.out
    if x is None or w is None or x.ndim != 2 or w.ndim != 3:
        b.freeze_all([t for t in (x, w, offs) if t] + ctx.outs, "grouped_mm of this shape")
        return
    b.couple(x.dim(1), w.dim(1), ctx.name)
    b.couple(w.dim(2), out.dim(1), ctx.name)
    if x.shape[0] == out.shape[0] and x.shape[0] > 1:
        b.couple(x.dim(0), out.dim(0), ctx.name)
    if offs is not None and offs.ndim == 1 and offs.shape[0] == w.shape[0]:
        b.couple(w.dim(0), offs.dim(0), ctx.name)
    b.freeze(w.dim(0), "experts are addressed by routing indices")


@kind("topk", input=0, k=1, dim=2)
def topk(ctx: OpContext) -> None:
    """values, indices = x.topk(k, dim): the other dims pass; ``dim`` keeps k picks."""
    b, x = ctx.builder, ctx.tensor("input")
    if x is None or x.ndim == 0:
        return
    dim = int(ctx.arg("dim", -1)) % x.ndim
    b.freeze(x.dim(dim), "top-k picks a fixed number of indices along this dim")
    for out in ctx.outs:
        b.freeze(out.dim(dim), "top-k picks a fixed number of indices along this dim")
        for d in range(x.ndim):
            if d != dim and x.shape[d] > 1:
                b.couple(x.dim(d), out.dim(d), ctx.name)
