"""Reshapes (view, reshape, flatten, unflatten, squeeze, unsqueeze) from shapes alone.

Both shapes are split into their common refinement: a list of *factors* such that every
input dim and every output dim is a row-major product of consecutive factors. A dim made
of one factor is that factor. A dim made of several carries channels through one factor
only, its *carrier*: a factor that is a whole input dim not frozen so far (the ``C`` of a
flattened ``C×H×W`` after a conv, whose H and W are frozen), else the largest (a channel
shuffle's ``(2, C/2)`` carries ``C/2``). A factor that an earlier pass found to be an
attention head dim ``D``, or that another op froze (the ``3`` of a fused
``(3, H, D)`` read by ``select``), is passed over, so that ``H*D -> (H, D)`` carries whole heads
(or, traced with ``head_dims=True``, only such factors carry: head-dim offsets shared by
every head). Index ``f`` of the dim belongs to unit ``f // stride % n``.
Every other factor keeps its size, so it is frozen, and anything that would need it to
shrink freezes with it. No guessing: an inconsistent reading freezes, it never corrupts.
"""

from __future__ import annotations

import numpy as np

from slimgraph.graph.builder import Builder, OpContext, TensorSlots
from slimgraph.graph.kinds import kind


def refine(
    a: tuple[int, ...], b: tuple[int, ...]
) -> tuple[list[list[int]], list[list[int]], list[int]] | None:
    """Common refinement of two shapes of equal numel, ignoring size-1 dims.

    Returns per-dim factor ids for ``a`` and ``b`` and the factor sizes, or None when the
    shapes don't share a refinement (e.g. ``(6, 4) -> (4, 6)``).

    >>> refine((2, 768), (24, 64))
    ([[0], [1, 2]], [[0, 1], [2]], [2, 12, 64])
    """
    fa: list[list[int]] = [[] for _ in a]
    fb: list[list[int]] = [[] for _ in b]
    sizes: list[int] = []
    ia = [i for i, s in enumerate(a) if s != 1]
    ib = [i for i, s in enumerate(b) if s != 1]
    i = j = 0
    ra = a[ia[0]] if ia else 1
    rb = b[ib[0]] if ib else 1
    while i < len(ia) and j < len(ib):
        if ra == rb or rb % ra == 0:
            n = ra
        elif ra % rb == 0:
            n = rb
        else:
            return None
        fa[ia[i]].append(len(sizes))
        fb[ib[j]].append(len(sizes))
        sizes.append(n)
        ra, rb = ra // n, rb // n
        if ra == 1:
            i += 1
            ra = a[ia[i]] if i < len(ia) else 1
        if rb == 1:
            j += 1
            rb = b[ib[j]] if j < len(ib) else 1
    if i < len(ia) or j < len(ib):
        return None
    return fa, fb, sizes


def _carry(
    b: Builder,
    t: TensorSlots,
    dims: list[list[int]],
    factors: list[int],
    sizes: list[int],
    op: str,
    free: set[int],
    repeats: set[int],
) -> None:
    """Couple each dim of ``t`` to its carrier factor; freeze the other factors.

    The carrier is chosen by narrowing the factors step by step, each step skipped when it
    would leave none: not read index by index; (H_kv, n_rep) -> H carries whole KV groups, or with
    ``query_heads`` the repeats; free whole input dims; not a head dim (or, with
    ``head_dims``, only head dims); then the largest, the first on ties.
    """

    def narrow(candidates: list[int], keep) -> list[int]:
        return [f for f in candidates if keep(f)] or candidates

    for d, ids in enumerate(dims):
        if not ids:
            continue
        candidates = narrow(ids, lambda f: (op, f) not in b.indexed_factors)
        candidates = narrow(candidates, lambda f: (f in repeats) == b.query_heads)
        candidates = narrow(candidates, lambda f: f in free)
        if len(ids) > 1:
            head = [f for f in ids if (op, f) in b.head_dim_factors]
            wanted = head if b.head_dims else [f for f in candidates if f not in head]
            candidates = [f for f in candidates if f in wanted] or wanted or candidates
        carrier = max(candidates, key=lambda f: (sizes[f], -ids.index(f)))
        stride = int(np.prod([sizes[f] for f in ids[ids.index(carrier) + 1 :]], dtype=np.int64))
        index = np.arange(t.shape[d]) // stride % sizes[carrier]
        how = "identity" if len(ids) == 1 else "factor"
        b.couple(t.dim(d), factors[carrier], op, how, b_idx=index)
        for f in ids:
            if f == carrier:
                continue
            if (op, f) in b.head_dim_factors:
                why = "heads are the units (trace with head_dims=True to prune head dims)"
                if b.head_dims:
                    why = "head dims are the units (traced with head_dims=True)"
                b.freeze(factors[f], f"attention {why}")
            else:
                b.freeze(factors[f], f"reshape factor {sizes[f]} of a {t.shape[d]}-wide dim")


@kind("reshape", input=0)
def reshape(ctx: OpContext) -> None:
    """Couple input and output dims through the factors of their common refinement."""
    b, x, out = ctx.builder, ctx.tensor("input"), ctx.out
    found = refine(x.shape, out.shape)
    if found is None:
        reason = f"reshape {list(x.shape)} -> {list(out.shape)} mixes dims"
        b.freeze_all([x, out], reason)
        return
    fa, fb, sizes = found
    # A factor that is a whole dim on both sides is a plain identity: skip the factor slot.
    whole_a = {ids[0]: d for d, ids in enumerate(fa) if len(ids) == 1}
    whole_b = {ids[0]: d for d, ids in enumerate(fb) if len(ids) == 1}
    factors: list[int] = []
    for f, n in enumerate(sizes):
        if f in whole_a and f in whole_b:
            b.couple(x.dim(whole_a[f]), out.dim(whole_b[f]), ctx.name)
            factors.append(-1)
        else:
            factors.append(b.factor(n, ctx.name, f))
    # A factor that is a whole input dim not frozen so far is preferred as a carrier: the
    # C of a flattened (C, H, W) whose H and W are frozen spatial sizes, however small C is.
    free = {ids[0] for d, ids in enumerate(fa) if len(ids) == 1 and not b.is_frozen(x.dim(d))}
    repeats = {ids[0] for d, ids in enumerate(fa) if len(ids) == 1 and b.is_repeat(x.dim(d))}
    keep_a = [ids if not (len(ids) == 1 and factors[ids[0]] < 0) else [] for ids in fa]
    keep_b = [ids if not (len(ids) == 1 and factors[ids[0]] < 0) else [] for ids in fb]
    _carry(b, x, keep_a, factors, sizes, ctx.name, free, repeats)
    _carry(b, out, keep_b, factors, sizes, ctx.name, free, repeats)
