"""Ops that move, join, split or pick along dims without changing values."""

from __future__ import annotations

import numpy as np

from slimgraph.graph.builder import OpContext
from slimgraph.graph.kinds import kind


@kind("permute", input=0, dims=1)
def permute(ctx: OpContext) -> None:
    """out.dim(k) is x.dim(dims[k])."""
    x, out = ctx.tensor("input"), ctx.out
    for k, d in enumerate(ctx.arg("dims")):
        ctx.builder.couple(x.dim(int(d) % x.ndim), out.dim(k), ctx.name)


@kind("transpose", input=0, dim0=1, dim1=2)
def transpose(ctx: OpContext) -> None:
    """Swap two dims (``t`` swaps the only two)."""
    x, out = ctx.tensor("input"), ctx.out
    order = list(range(x.ndim))
    if x.ndim >= 2:
        d0, d1 = int(ctx.arg("dim0", 0)) % x.ndim, int(ctx.arg("dim1", 1)) % x.ndim
        order[d0], order[d1] = order[d1], order[d0]
    for k, d in enumerate(order):
        ctx.builder.couple(x.dim(d), out.dim(k), ctx.name)


@kind("reverse", input=0)
def reverse(ctx: OpContext) -> None:
    """``x.T``: every dim in reverse order, out.dim(k) is x.dim(n - 1 - k)."""
    x, out = ctx.tensor("input"), ctx.out
    for k in range(x.ndim):
        ctx.builder.couple(x.dim(x.ndim - 1 - k), out.dim(k), ctx.name)


@kind("swap_last", input=0)
def swap_last(ctx: OpContext) -> None:
    """``x.mT``: the last two dims swap, the batch dims before them pass through."""
    x, out = ctx.tensor("input"), ctx.out
    order = list(range(x.ndim))
    order[-2:] = order[:-3:-1]
    for k, d in enumerate(order):
        ctx.builder.couple(x.dim(d), out.dim(k), ctx.name)


@kind("cat", tensors=0, dim=1)
def cat(ctx: OpContext) -> None:
    """Input k's index i is the output's index offset_k + i along ``dim``."""
    b, out = ctx.builder, ctx.out
    parts = [b.tensor(n) for n in ctx.arg("tensors")]
    dim = int(ctx.arg("dim", 0)) % out.ndim
    offset = 0
    for t in parts:
        if t is None or t.ndim != out.ndim:  # legacy empty tensors take no part
            continue
        n = t.shape[dim]
        b.couple(t.dim(dim), out.dim(dim), ctx.name, "offset", b_idx=np.arange(n) + offset)
        for d in range(out.ndim):
            if d != dim and t.shape[d] > 1:
                b.couple(t.dim(d), out.dim(d), ctx.name)
        offset += n


@kind("stack", tensors=0, dim=1)
def stack(ctx: OpContext) -> None:
    """Inputs of one shape side by side along a new dim (frozen: one index per input);
    every other dim of every input couples with the output's."""
    b, out = ctx.builder, ctx.out
    dim = int(ctx.arg("dim", 0)) % out.ndim
    b.freeze(out.dim(dim), "stack makes one index per input")
    for node in ctx.arg("tensors"):
        t = b.tensor(node)
        if t is None:
            continue
        for k in range(t.ndim):
            if t.shape[k] > 1:
                b.couple(t.dim(k), out.dim(k if k < dim else k + 1), ctx.name)


@kind("split", input=0, split=1, dim=2, positions=None)
def split(ctx: OpContext) -> None:
    """Output k is the input's [offset_k, offset_k + n_k) along ``dim``.

    Equal parts are recomputed at run time from the input size (``chunk``), so they must
    lose equally many indices: a balance constraint. When the graph's units cannot honour
    it exactly (ShuffleNet's chunk after a channel shuffle mixes positions block after
    block), the split is *relaxed*: each part becomes a fresh index space that keeps the
    same fraction as the input, re-split by position, which is not exact.
    Unequal parts listed in the code (``split_with_sizes``) keep the same fraction each,
    and the sizes follow them (the module attribute holding them is updated); where the
    units cannot keep that proportion the split is relaxed and, like unequal parts computed
    from the width (``chunk``) or a split at ``positions`` (``tensor_split`` at indices),
    its dim freezes.
    """
    b, x, outs = ctx.builder, ctx.tensor("input"), ctx.outs
    dim = int(ctx.arg("dim", 0)) % x.ndim
    sizes = [t.shape[dim] for t in outs]
    relaxed = ctx.name in b.relaxed and len(set(sizes)) == 1
    offset = 0
    for t in outs:
        n = t.shape[dim]
        if relaxed:
            b.link(t.dim(dim), x.dim(dim), ctx.name, "equal parts of a split re-split by position")
            b.inexact(t.dim(dim), "parts of a relaxed split are re-split by position")
        else:
            b.couple(t.dim(dim), x.dim(dim), ctx.name, "offset", b_idx=np.arange(n) + offset)
        for d in range(x.ndim):
            if d != dim and t.shape[d] > 1:
                b.couple(t.dim(d), x.dim(d), ctx.name)
        offset += n
    given = ctx.arg("split")  # sizes listed in the code: constants that can follow
    listed = isinstance(given, list | tuple) and [int(v) for v in given] == sizes
    listed = listed and ctx.roles.get("positions") is None and ctx.name not in b.relaxed
    if len(set(sizes)) > 1 and listed:
        b.balance(x.dim(dim), tuple(sizes), ctx.name)
        b.follow(ctx.node, sizes, [t.dim(dim) for t in outs])
    elif len(set(sizes)) > 1:
        b.freeze(x.dim(dim), f"{ctx.node.target} into unequal parts {sizes}")
    elif ctx.roles.get("positions") is not None:
        b.freeze(x.dim(dim), f"{ctx.node.target} at positions fixed in code")
    elif len(outs) > 1 and not relaxed:
        b.balance(x.dim(dim), len(outs), ctx.name)


@kind("unbind", input=0, dim=1)
def unbind(ctx: OpContext) -> None:
    """Each output drops ``dim``; the remaining dims pass through."""
    b, x = ctx.builder, ctx.tensor("input")
    dim = int(ctx.arg("dim", 0)) % x.ndim
    b.freeze_indexed(x.dim(dim), "unbind yields one tensor per index")
    for t in ctx.outs:
        for k, d in enumerate(d for d in range(x.ndim) if d != dim):
            b.couple(x.dim(d), t.dim(k), ctx.name)


@kind("slice", input=0, dim=1, start=2, end=3, step=4)
def slice_(ctx: OpContext) -> None:
    """A full slice is the identity. A slice at step 1 couples by offset and keeps the
    parts before, inside and after it proportional: its bounds are then a fixed fraction of
    the width (``x[L:2L]`` of a ``3L``-wide qkv bias; Phi-3's fused qkv read at offsets the
    code computes from the config, ``H*D`` and ``H*D + H_kv*D``). Where the units cannot
    keep that proportion the slice is relaxed, and then it freezes. A strided slice that
    reads one offset of every block of ``step`` (``x[..., ::2]`` and ``x[..., 1::2]`` of
    interleaved rows) makes the blocks the units; any other step freezes.
    """
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    dim = int(ctx.arg("dim", 0)) % x.ndim
    for d in range(x.ndim):
        if d != dim or x.shape[d] == out.shape[d]:
            if x.shape[d] > 1:
                b.couple(x.dim(d), out.dim(d), ctx.name)
            continue
        n, width = x.shape[d], out.shape[d]
        start = int(ctx.arg("start", 0) or 0) % max(n, 1)
        step = int(ctx.arg("step", 1) or 1)
        parts = tuple(p for p in (start, width, n - start - width) if p > 0)
        if step == 1 and width and start + width <= n and ctx.name not in b.relaxed:
            b.couple(out.dim(d), x.dim(d), ctx.name, "offset", b_idx=np.arange(width) + start)
            b.balance(x.dim(d), parts, ctx.name)
        elif step > 1 and start < step and n == width * step:
            # one index of every block of ``step`` (interleaved gate and up rows): whole
            # blocks go, so the same offset of each kept block is read again
            block = b.factor(width, ctx.name)
            b.couple(x.dim(d), block, ctx.name, "block", b_idx=np.arange(n) // step)
            b.couple(out.dim(d), block, ctx.name)
        else:
            b.freeze(x.dim(d), "sliced with constant bounds")
            b.freeze(out.dim(d), "sliced with constant bounds")


@kind("select", input=0, dim=1, index=2)
def select(ctx: OpContext) -> None:
    """Picks one constant index of ``dim``, which therefore cannot lose indices. A pick
    whose value nothing reads (its shape only: BART's ``embed_positions(x[:, :, -1])``)
    constrains nothing."""
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    if not ctx.node.users:
        return
    dim = int(ctx.arg("dim", 0)) % x.ndim
    b.freeze_indexed(x.dim(dim), "indexed with a constant by select")
    for k, d in enumerate(d for d in range(x.ndim) if d != dim):
        b.couple(x.dim(d), out.dim(k), ctx.name)


@kind("index", input=0, indices=1)
def index(ctx: OpContext) -> None:
    """``x[..., idx, ...]`` with index tensors on consecutive dims: those dims are gathered
    by computed positions (frozen, as are the indices); the dims before and after pass
    through (a relative-position table ``table[index]`` keeps its heads dim)."""
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    indices = list(ctx.arg("indices") or [])
    used = [d for d, i in enumerate(indices) if i is not None]
    tensors = [b.tensor(indices[d]) for d in used]
    if not used or used != list(range(used[0], used[-1] + 1)) or None in tensors:
        b.freeze_all(ctx.tensor_args() + ctx.outs, "indexing not understood")
        return
    gathered = max(t.ndim for t in tensors)
    for d in used:
        b.freeze(x.dim(d), "gathered by computed indices")
    b.freeze_all(tensors, "index tensor")
    before, after = range(used[0]), range(used[-1] + 1, x.ndim)
    for d in before:
        if x.shape[d] > 1:
            b.couple(x.dim(d), out.dim(d), ctx.name)
    for k, d in enumerate(after):
        if x.shape[d] > 1:
            b.couple(x.dim(d), out.dim(used[0] + gathered + k), ctx.name)
    for k in range(gathered):
        b.freeze(out.dim(used[0] + k), "gathered by computed indices")


@kind("gather", input=0, dim=1, index=2)
def gather(ctx: OpContext) -> None:
    """``out[..., i, ...] = x[..., index[..., i, ...], ...]`` along ``dim``: that dim
    reads computed positions (frozen). Every other dim of the output is the index's, and
    reads the input's indices one to one where their sizes agree (a prefix otherwise:
    frozen)."""
    b, x, index, out = ctx.builder, ctx.tensor("input"), ctx.tensor("index"), ctx.out
    dim = int(ctx.arg("dim")) % x.ndim
    b.freeze(x.dim(dim), "gathered by computed indices")
    b.freeze(out.dim(dim), "gathered by computed indices")
    for d in range(x.ndim):
        if d == dim or out.shape[d] <= 1:
            continue
        b.couple(index.dim(d), out.dim(d), ctx.name)
        if x.shape[d] == out.shape[d]:
            b.couple(x.dim(d), out.dim(d), ctx.name)
        else:
            b.freeze(x.dim(d), "gather reads a prefix of this dim")
            b.freeze(out.dim(d), "gather reads a prefix of this dim")


@kind("index_select", input=0, dim=1, index=2)
def index_select(ctx: OpContext) -> None:
    """``out = x.index_select(dim, index)``: ``dim`` reads computed positions (frozen, as
    is the index); every other dim passes through (a position table's width)."""
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    dim = int(ctx.arg("dim")) % x.ndim
    b.freeze(x.dim(dim), "selected by computed indices")
    b.freeze(out.dim(dim), "selected by computed indices")
    b.freeze_all([ctx.tensor("index")], "index tensor")
    for d in range(x.ndim):
        if d != dim and x.shape[d] > 1:
            b.couple(x.dim(d), out.dim(d), ctx.name)


@kind("getitem", source=0, index=1)
def getitem(ctx: OpContext) -> None:
    """``operator.getitem`` on a multi-output op: the item is that output."""
    src = ctx.builder.tensor(ctx.arg("source"), int(ctx.arg("index")))
    if src is None or not ctx.outs:
        return
    for a, o in zip(src.slots, ctx.out.slots):
        ctx.builder.couple(a, o, ctx.name)


@kind("pad", input=0, pad=1)
def pad(ctx: OpContext) -> None:
    """Dims padded by a constant amount are frozen; the others pass through."""
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    amounts = list(ctx.arg("pad"))
    padded = {x.ndim - 1 - i // 2 for i, p in enumerate(amounts) if p}
    for d in range(x.ndim):
        if d in padded:
            b.freeze(x.dim(d), "padded by a constant amount")
            b.freeze(out.dim(d), "padded by a constant amount")
        elif x.shape[d] > 1:
            b.couple(x.dim(d), out.dim(d), ctx.name)


@kind("roll", input=0, shifts=1, dims=2)
def roll(ctx: OpContext) -> None:
    """out[(i + shift) % n] = x[i] along each rolled dim: a rotation of the indices."""
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    shifts, dims = list(ctx.arg("shifts")), list(ctx.arg("dims", []) or [])
    shift_of = {int(d) % x.ndim: int(s) for s, d in zip(shifts, dims)}
    for d in range(x.ndim):
        n = x.shape[d]
        if n <= 1:
            continue
        if d in shift_of:
            b.freeze(x.dim(d), "rolled by a constant shift")
            b.couple(x.dim(d), out.dim(d), ctx.name, "roll", b_idx=(np.arange(n) + shift_of[d]) % n)
        else:
            b.couple(x.dim(d), out.dim(d), ctx.name)
