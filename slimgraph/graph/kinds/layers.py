"""Layers with weights: producers and consumers of channels."""

from __future__ import annotations

import re

import numpy as np
from torch import fx

from slimgraph.graph.builder import OpContext, TensorSlots
from slimgraph.graph.kinds import kind


def _couple_leading(ctx: OpContext, x: TensorSlots, out: TensorSlots, keep_last: int) -> None:
    """Batch-like dims (all but the last ``keep_last``) pass through unchanged."""
    for k in range(keep_last + 1, min(x.ndim, out.ndim) + 1):
        if x.shape[-k] == out.shape[-k] and x.shape[-k] > 1:
            ctx.builder.couple(x.dim(-k), out.dim(-k), ctx.name)


@kind("conv", input=0, weight=1, bias=2, groups=6, transposed=None)
def conv(ctx: OpContext) -> None:
    """A convolution; ``aten.convolution`` says in an argument whether it is transposed."""
    _conv(ctx, transposed=bool(ctx.arg("transposed", False)))


@kind("conv_transpose", input=0, weight=1, bias=2, groups=6)
def conv_transpose(ctx: OpContext) -> None:
    """A transposed convolution: weight is (in, out/groups, k...)."""
    _conv(ctx, transposed=True)


def _conv(ctx: OpContext, transposed: bool) -> None:
    """out[:, o] = sum over the in channels of o's group of weight[o, i] * x[:, i] + bias[o].

    With ``groups > 1`` the grouped structure survives one of two ways. When every group
    reads and writes the same number w > 1 of channels (ResNeXt, RegNet), a unit is one
    offset j < w in every group, in and out: groups stay and each gets narrower, which
    cuts the conv's MACs quadratically. Otherwise (depthwise, channel multipliers) a unit
    is a whole group, its in and out channels together: ``groups`` shrinks.
    """
    b = ctx.builder
    x, w, bias, out = ctx.tensor("input"), ctx.tensor("weight"), ctx.tensor("bias"), ctx.out
    groups = int(ctx.arg("groups", 1) or 1)
    spatial = w.ndim - 2
    batched = x.ndim == w.ndim
    c_in, c_out = x.dim(1 if batched else 0), out.dim(1 if batched else 0)
    if batched and x.shape[0] > 1:
        b.couple(x.dim(0), out.dim(0), ctx.name)
    for d in range(2, 2 + spatial):
        b.freeze(w.dim(d), "convolution kernel size")
    w_in, w_out = (w.dim(0), w.dim(1)) if transposed else (w.dim(1), w.dim(0))
    if bias is not None:
        b.couple(bias.dim(0), c_out, ctx.name)
    if groups == 1:
        b.couple(c_in, w_in, ctx.name)
        b.couple(w_out, c_out, ctx.name)
        return
    if transposed:
        b.freeze_all([x, w, out], "grouped transposed convolution is not pruned through")
        return
    n_in, n_out = x.shape[1 if batched else 0], out.shape[1 if batched else 0]
    b.couple(w_out, c_out, ctx.name)
    width = n_in // groups
    if width == n_out // groups > 1:
        offsets = b.factor(width, ctx.name)
        b.couple(c_in, offsets, ctx.name, "offset in group", b_idx=np.arange(n_in) % width)
        b.couple(c_out, offsets, ctx.name, "offset in group", b_idx=np.arange(n_out) % width)
        b.couple(w_in, offsets, ctx.name)
        return
    b.freeze(w_in, "grouped convolution keeps its channels per group")
    atom = b.factor(groups, ctx.name)
    b.couple(c_in, atom, ctx.name, "group", b_idx=np.arange(n_in) // (n_in // groups))
    b.couple(c_out, atom, ctx.name, "group", b_idx=np.arange(n_out) // (n_out // groups))


@kind("linear", input=0, weight=1, bias=2)
def linear(ctx: OpContext) -> None:
    """out[..., o] = sum_i weight[o, i] * x[..., i] + bias[o]."""
    b = ctx.builder
    x, w, bias, out = ctx.tensor("input"), ctx.tensor("weight"), ctx.tensor("bias"), ctx.out
    b.couple(x.dim(-1), w.dim(1), ctx.name)
    b.couple(w.dim(0), out.dim(-1), ctx.name)
    if bias is not None:
        b.couple(bias.dim(0), out.dim(-1), ctx.name)
    _couple_leading(ctx, x, out, keep_last=1)


@kind("matmul", input=0, other=1)
def matmul(ctx: OpContext) -> None:
    """(a @ b)[..., i, j] = sum_k a[..., i, k] * b[..., k, j]; batch dims broadcast."""
    bld = ctx.builder
    a, m, out = ctx.tensor("input"), ctx.tensor("other"), ctx.out
    if a.ndim < 2 or m.ndim < 2:
        bld.freeze_all([a, m, out], "matmul with a 1-D operand is not pruned through")
        return
    bld.couple(a.dim(-1), m.dim(-2), ctx.name)
    if _is_attention(ctx):  # q @ k^T contracts the head dim; softmax(..) @ v keeps v's
        bld.head_dim(m.dim(-1) if _after_softmax(ctx.arg("input")) else a.dim(-1))
        if a.ndim >= 4:
            bld.head_slots.add(a.dim(-3))
    bld.couple(a.dim(-2), out.dim(-2), ctx.name)
    bld.couple(m.dim(-1), out.dim(-1), ctx.name)
    for t in (a, m):
        for k in range(3, min(t.ndim, out.ndim) + 1):
            if t.shape[-k] == out.shape[-k] and t.shape[-k] > 1:
                bld.couple(t.dim(-k), out.dim(-k), ctx.name)


@kind("addmm", input=0, mat1=1, mat2=2)
def addmm(ctx: OpContext) -> None:
    """out = input + mat1 @ mat2: a linear layer whose weight is stored (in, out), as in
    GPT-2's ``Conv1D``; ``input`` (the bias) broadcasts over the rows."""
    b = ctx.builder
    bias, x, w, out = ctx.tensor("input"), ctx.tensor("mat1"), ctx.tensor("mat2"), ctx.out
    b.couple(x.dim(-1), w.dim(0), ctx.name)
    b.couple(w.dim(1), out.dim(-1), ctx.name)
    if x.shape[0] > 1:
        b.couple(x.dim(0), out.dim(0), ctx.name)
    if bias is not None:
        b.broadcast(bias, out, ctx.name)


def _activation(b, t: TensorSlots | None) -> bool:
    """A batched tensor computed from the input (not a weight)."""
    return (
        t is not None
        and t.ndim >= 3
        and b.slots[t.slots[0]].role not in ("param", "buffer", "constant")
    )


def _is_attention(ctx: OpContext) -> bool:
    """A batched product of two activations (no weights), as attention computes."""
    return _activation(ctx.builder, ctx.tensor("input")) and _activation(
        ctx.builder, ctx.tensor("other")
    )


def _mark_einsum_head_dim(ctx: OpContext, terms: list[list[str]], rhs: str) -> None:
    """Attention written as einsum: ``q k`` contracts the head dim; ``softmax(..) v`` keeps
    v's head dim, the letter of v that reaches the output without being in the weights."""
    b = ctx.builder
    operands = [b.tensor(n) for n in ctx.arg("operands")]
    out_letters = set(re.findall(r"[a-zA-Z]", rhs))
    if _after_softmax(ctx.arg("operands")[0]):
        marked = [(1, d) for d, c in enumerate(terms[1]) if c in out_letters - set(terms[0])]
    else:
        shared = (set(terms[0]) & set(terms[1])) - out_letters
        marked = [(0, d) for d, c in enumerate(terms[0]) if c in shared]
    for i, d in marked:
        b.head_dim(operands[i].dim(d))


# Ops between softmax and the product with v that keep the attention weights' meaning
# (``slice``: GPT-OSS drops its attention sinks' column after the softmax).
_PASS_THROUGH = (
    "dropout",
    "to",
    "_to_copy",
    "type_as",
    "clone",
    "contiguous",
    "expand",
    "view",
    "slice",
)


# Ops through which attention weights stay attention weights (renormalised, masked, cast).
_RESHAPING = ("div", "mul", "add", "sub", "masked_fill", "where", "sigmoid")


def _after_softmax(node: object, depth: int = 6) -> bool:
    """Whether ``node`` is attention weights: a softmax, a few pass-through or
    renormalising steps back along any argument (ConViT's gated, renormalised mix)."""
    if depth == 0 or not isinstance(node, fx.Node) or node.op != "call_function":
        return False
    name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
    if "softmax" in name:
        return True
    if name in _PASS_THROUGH:
        return bool(node.args) and _after_softmax(node.args[0], depth - 1)
    if name in _RESHAPING:
        return any(_after_softmax(a, depth - 1) for a in node.args)
    return False


@kind("einsum", equation=0, operands=1)
def einsum(ctx: OpContext) -> None:
    """Dims that share a letter share an index; ``...`` dims broadcast from the right."""
    b = ctx.builder
    equation = ctx.arg("equation").replace(" ", "")
    operands = [b.tensor(n) for n in ctx.arg("operands")]
    lhs, _, rhs = equation.partition("->")
    terms = lhs.split(",")
    if not rhs or len(terms) != len(operands) or any(t is None for t in operands):
        b.freeze_all([t for t in operands if t] + ctx.outs, "einsum equation not understood")
        return
    out = ctx.out

    def letters(term: str, ndim: int) -> list[str]:
        named = re.findall(r"\.\.\.|[a-zA-Z]", term)
        if "..." in named:
            i = named.index("...")
            n_ell = ndim - (len(named) - 1)
            named = named[:i] + [f"...{j - n_ell}" for j in range(n_ell)] + named[i + 1 :]
        return named

    if len(operands) == 2 and all(_activation(b, t) for t in operands):
        _mark_einsum_head_dim(ctx, [letters(t, o.ndim) for t, o in zip(terms, operands)], rhs)
    first: dict[str, int] = {}
    for term, t in [*zip(terms, operands), (rhs, out)]:
        for letter, slot in zip(letters(term, t.ndim), t.slots):
            if b.slots[slot].size <= 1:
                continue
            if letter in first and b.slots[first[letter]].size == b.slots[slot].size:
                b.couple(first[letter], slot, ctx.name)
            else:
                first.setdefault(letter, slot)


@kind("embedding", weight=0, indices=1)
def embedding(ctx: OpContext) -> None:
    """out[..., d] = weight[token, d]: the embedding width couples, the vocabulary doesn't."""
    b = ctx.builder
    w, idx, out = ctx.tensor("weight"), ctx.tensor("indices"), ctx.out
    b.freeze(w.dim(0), "embedding rows are addressed by token ids")
    b.couple(w.dim(1), out.dim(-1), ctx.name)
    for d in range(idx.ndim):
        if idx.shape[d] > 1:
            b.couple(idx.dim(d), out.dim(d), ctx.name)
