"""Normalisation layers: per-channel affine parameters follow the channel they scale."""

from __future__ import annotations

import numpy as np

from slimgraph.graph.builder import OpContext
from slimgraph.graph.kinds import kind


def _pass_through(ctx: OpContext) -> None:
    x = ctx.tensor("input")
    for a, b in zip(x.slots, ctx.out.slots):
        ctx.builder.couple(a, b, ctx.name)


@kind("batch_norm", input=0, weight=1, bias=2, running_mean=3, running_var=4)
def batch_norm(ctx: OpContext) -> None:
    """y[:, c] = (x[:, c] - mean[c]) / std[c] * weight[c] + bias[c]: exact per channel."""
    _pass_through(ctx)
    x = ctx.tensor("input")
    channel = x.dim(1) if x.ndim > 1 else x.dim(0)
    for role in ("weight", "bias", "running_mean", "running_var"):
        p = ctx.tensor(role)
        if p is not None:
            ctx.builder.couple(p.dim(0), channel, ctx.name)


@kind("layer_norm", input=0, normalized_shape=1, weight=2, bias=3)
def layer_norm(ctx: OpContext) -> None:
    """Statistics over the last dims: the affine params couple, the values are not exact.
    Without an affine weight, ``normalized_shape`` follows the input's width (the module
    attribute that holds it is updated by the rewrite)."""
    _pass_through(ctx)
    b, x = ctx.builder, ctx.tensor("input")
    shape = list(ctx.arg("normalized_shape"))
    k = len(shape)
    if ctx.tensor("weight") is None:  # nothing holds the width but the shape argument
        b.follow(ctx.node, shape, [x.dim(-j) for j in range(k, 0, -1)])
    for j in range(1, k + 1):
        b.inexact(x.dim(-j), "layer_norm statistics include every channel of this dim")
        for role in ("weight", "bias"):
            p = ctx.tensor(role)
            if p is not None:
                b.couple(p.dim(-j), x.dim(-j), ctx.name)


@kind("group_norm", input=0, num_groups=1, weight=2, bias=3)
def group_norm(ctx: OpContext) -> None:
    """Channels are normalised in whole groups: a unit is one group, which stays exact."""
    _pass_through(ctx)
    b, x = ctx.builder, ctx.tensor("input")
    channel, groups = x.dim(1), int(ctx.arg("num_groups"))
    size = x.shape[1]
    if ctx.tensor("weight") is None:
        b.freeze(channel, "group_norm without affine weight: num_channels is fixed")
    for role in ("weight", "bias"):
        p = ctx.tensor(role)
        if p is not None:
            b.couple(p.dim(0), channel, ctx.name)
    if groups == 1:
        b.inexact(channel, "group_norm with one group: statistics include every channel")
    else:
        atom = b.factor(groups, ctx.name)
        b.couple(channel, atom, ctx.name, "group", b_idx=np.arange(size) // (size // groups))
