"""Mixture-of-experts kernels: grouped matrix products and top-k routing.

A router scores every expert (a linear layer's rows), ``topk`` picks some for each token,
and the picked ids reach the experts as values: sorted, counted per expert (``histc``),
summed into row offsets (``cumsum``), and handed to a grouped GEMM over stacked expert
weights (experts, in, out). When every use of the ids follows that path, router row ``e``
and expert ``e`` are one unit (a whole expert); otherwise the experts dim freezes.
"""

from __future__ import annotations

from torch import fx

from slimgraph.graph.builder import OpContext
from slimgraph.graph.kinds import kind

# Ops that carry expert ids (or per-expert counts) without changing what index means what.
_CARRY = {
    "aten.view.default",
    "aten.reshape.default",
    "aten._unsafe_view.default",
    "aten.flatten.using_ints",
    "aten.clone.default",
    "aten.contiguous.default",
    "aten.to.dtype",
    "aten.to.dtype_layout",
    "aten._to_copy.default",
}
_SORT = {"aten.sort.default", "aten.sort.stable"}
_GROUPED_MM = {"aten._grouped_mm.default", "transformers.grouped_mm_fallback.default"}
_CHECKS = {"aten._assert_tensor_metadata.default"}  # read metadata, not values


def _target(node: fx.Node) -> str:
    return str(node.target)


def _is_getitem(node: fx.Node, index: int) -> bool:
    return node.op == "call_function" and "getitem" in _target(node) and node.args[1] == index


def _routed_grouped_mms(topk: fx.Node, experts: int) -> set[fx.Node]:
    """The grouped GEMMs over ``experts`` experts whose rows the ids ``topk`` picks group
    (sorted, counted per expert, summed into offsets); empty when the ids have any other
    use."""
    ids = [u for u in topk.users if _is_getitem(u, 1)]
    todo: list[tuple[fx.Node, str]] = [(u, "ids") for u in ids]
    reached: set[fx.Node] = set()
    while todo:
        node, what = todo.pop()
        for user in node.users:
            target = _target(user)
            if target in _CHECKS:
                continue
            if target in _CARRY:
                todo.append((user, what))
            elif what == "ids" and target in _SORT:
                # item 0: the ids, sorted; item 1: a permutation of the tokens, no expert ids
                todo.extend((u, what) for u in user.users if _is_getitem(u, 0))
            elif what == "ids" and target == "aten.histc.default" and user.args[1] == experts:
                todo.append((user, "counts"))
            elif what == "counts" and target == "aten.cumsum.default" and user.args[1] == 0:
                todo.append((user, what))
            elif what == "counts" and target in _GROUPED_MM and user.args[2] is node:
                reached.add(user)
            else:
                return set()
    return reached


def _router(offs: fx.Node) -> fx.Node | None:
    """The ``topk`` whose ids made the grouped GEMM offsets ``offs``, if any."""
    node = offs
    for _ in range(16):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None
        if _target(node) == "aten.topk.default":
            return node
        node = node.args[0]
        while isinstance(node, fx.Node) and "getitem" in _target(node):
            node = node.args[0]
    return None


@kind("grouped_mm", input=0, weight=1, offs=2)
def grouped_mm(ctx: OpContext) -> None:
    """out[s, n] = sum_k input[s, k] * weight[e(s), k, n], rows s grouped by expert e.

    Every expert's matrix shares the k and n dims, so a unit there is one offset in every
    expert at once. The experts dim goes with the router's rows when the offsets come
    from a top-k routing (see the module docstring); otherwise it freezes.
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
    topk = _router(ctx.arg("offs"))
    scores = b.tensor(topk.args[0]) if topk is not None else None
    if topk is not None and scores is not None:
        dim = int(topk.args[2]) % scores.ndim if len(topk.args) > 2 else scores.ndim - 1
        experts = scores.shape[dim]
        if experts == w.shape[0] and ctx.node in _routed_grouped_mms(topk, experts):
            b.couple(w.dim(0), scores.dim(dim), ctx.name, "expert")
            return
    b.freeze(w.dim(0), "experts are addressed by routing indices")


@kind("topk", input=0, k=1, dim=2)
def topk(ctx: OpContext) -> None:
    """values, indices = x.topk(k, dim): the other dims pass; ``dim`` keeps k picks.

    Indices along ``dim`` freeze unless they only route rows to grouped expert GEMMs: then
    an index of ``dim`` is an expert, which goes whole (router row and weights).
    """
    b, x = ctx.builder, ctx.tensor("input")
    if x is None or x.ndim == 0:
        return
    dim = int(ctx.arg("dim", -1)) % x.ndim
    for out in ctx.outs:
        b.freeze(out.dim(dim), "top-k picks a fixed number of indices along this dim")
        for d in range(x.ndim):
            if d != dim and x.shape[d] > 1:
                b.couple(x.dim(d), out.dim(d), ctx.name)
    if _routed_grouped_mms(ctx.node, x.shape[dim]):
        b.inexact(x.dim(dim), "top-k routing picks among the remaining experts")
    else:
        b.freeze(x.dim(dim), "top-k picks a fixed number of indices along this dim")


@kind("repeat_interleave", input=0, repeats=1, dim=2)
def repeat_interleave(ctx: OpContext) -> None:
    """out = x.repeat_interleave(n, dim): each index of ``dim`` n times in a row (one row
    per routed token-expert pair); the other dims pass. Without ``dim`` x is flattened."""
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    dim = ctx.arg("dim")
    if x is None or dim is None or not isinstance(ctx.arg("repeats"), int):
        b.freeze_all([t for t in (x,) if t] + ctx.outs, "repeat_interleave of a flattened tensor")
        return
    dim = int(dim) % x.ndim
    b.freeze(x.dim(dim), "repeat_interleave repeats each index of this dim")
    b.freeze(out.dim(dim), "repeat_interleave repeats each index of this dim")
    for d in range(x.ndim):
        if d != dim and x.shape[d] > 1:
            b.couple(x.dim(d), out.dim(d), ctx.name)
