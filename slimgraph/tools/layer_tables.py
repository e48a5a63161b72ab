"""The layer tables behind :func:`slimgraph.profile_latency`: which layers a forward
calls, and each one timed alone at a few widths.

Every convolution and linear layer is timed on an input of the shape it gets in the
model, in the dtype of its weights, at fractions of its output and input widths (a depthwise convolution at its
channel widths only); a layer run more than once per forward counts as often. A
:class:`torch.nn.MultiheadAttention` used as self-attention is timed whole (projections,
softmax and all) at fractions of its heads: its width is one, in and out.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
>>> {name: (shape, calls) for name, (_, shape, calls) in layer_inputs(net, (torch.randn(32, 64),)).items()}
{'0': ((32, 64), 1), '2': ((32, 256), 1)}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimgraph._core.inputs import preserve_modes, split_inputs, without_kv_cache
from slimgraph.criteria.latency import LayerTable
from slimgraph.tools.layer_timer import LayerTimer

__all__ = ["LAYERS", "layer_inputs", "layer_table"]

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.MultiheadAttention)


def layer_inputs(
    model: nn.Module, example_inputs: Any
) -> dict[str, tuple[nn.Module, tuple[int, ...], int]]:
    """Name -> (layer, the shape of its first input, calls per forward), for every layer
    whose cost the tables model."""
    found: dict[str, tuple[nn.Module, tuple[int, ...], int]] = {}

    skipped: set[str] = set()  # attention over other keys than its queries: not tabled

    def seen(name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if isinstance(module, nn.MultiheadAttention) and not _self_attention(args, kwargs):
            skipped.add(name)
        elif name in found:
            found[name] = (module, found[name][1], found[name][2] + 1)
        elif args and isinstance(args[0], torch.Tensor):
            found[name] = (module, tuple(args[0].shape), 1)

    handles = [
        m.register_forward_pre_hook(
            lambda mod, args, kwargs, n=name: seen(n, mod, args, kwargs), with_kwargs=True
        )
        for name, m in model.named_modules()
        if isinstance(m, LAYERS) and _tabled(m)
    ]
    args, kwargs = split_inputs(example_inputs)
    try:
        with preserve_modes(model), torch.no_grad(), without_kv_cache(model):
            model.eval()
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return {k: v for k, v in found.items() if k not in skipped}


def _tabled(module: nn.Module) -> bool:
    """Whether the tables can model ``module``: attention only with packed projections."""
    return not isinstance(module, nn.MultiheadAttention) or module._qkv_same_embed_dim


def _self_attention(args: tuple, kwargs: dict) -> bool:
    qkv = [*args[:3], *(kwargs.get(k) for k in ("query", "key", "value")[len(args) :])]
    return len(qkv) == 3 and qkv[0] is qkv[1] is qkv[2]


class _SelfAttention(nn.Module):
    """An attention layer over its own input, as one module to time."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]

    def extra_repr(self) -> str:  # the cache key: heads are not in the layer's repr
        a = self.attention
        return f"embed_dim={a.embed_dim}, num_heads={a.num_heads}, batch_first={a.batch_first}"


def _widths(full: int, fractions: Sequence[float], step: int) -> tuple[int, ...]:
    """``fractions`` of ``full``, as multiples of ``step``, distinct and ascending."""
    return tuple(sorted({max(step, round(f * full / step) * step) for f in fractions}))


Variant = tuple[nn.Module, tuple[int, ...]]  # a layer at other widths, and its input shape


def layer_table(
    module: nn.Module,
    shape: tuple[int, ...],
    calls: int,
    fractions: Sequence[float],
    timer: LayerTimer,
) -> LayerTable:
    layer: Any = module
    if isinstance(layer, nn.MultiheadAttention):
        return _attention_table(layer, shape, calls, fractions, timer)
    weight: tuple[int, ...] = tuple(layer.weight.shape)
    dtype = layer.weight.dtype  # timed in the model's dtype: bfloat16 runs other kernels
    if isinstance(layer, nn.Linear):
        outs, ins = _widths(weight[0], fractions, 1), _widths(weight[1], fractions, 1)

        def make(o: int, i: int) -> Variant:
            return nn.Linear(i, o, bias=layer.bias is not None, dtype=dtype), (*shape[:-1], i)
    else:
        g = layer.groups
        depthwise = g > 1 and g == layer.in_channels  # its channels are its groups
        outs = _widths(weight[0], fractions, weight[0] // g if depthwise else g)
        ins = (weight[1],) if depthwise else _widths(weight[1], fractions, 1)

        def make(o: int, i: int) -> Variant:
            groups = o * g // weight[0] if depthwise else g
            cin = groups if depthwise else i * g
            conv = type(layer)(
                cin,
                o,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                layer.dilation,
                groups,
                layer.bias is not None,
                layer.padding_mode,
                dtype=dtype,
            )
            return conv, (shape[0], cin, *shape[2:])

    ms = tuple(tuple(timer.time(*make(o, i)) for i in ins) for o in outs)
    return LayerTable(shape=weight, outs=outs, ins=ins, ms=ms, calls=calls)


def _attention_table(
    layer: nn.MultiheadAttention,
    shape: tuple[int, ...],
    calls: int,
    fractions: Sequence[float],
    timer: LayerTimer,
) -> LayerTable:
    """Milliseconds by the rows of ``in_proj_weight`` (3 x heads x head_dim), whole heads
    dropped; one column, since the layer's input width is its embedding width."""
    embed, head_dim = layer.embed_dim, layer.head_dim
    widths = _widths(embed, fractions, head_dim)
    ms = []
    for width in widths:
        attention = nn.MultiheadAttention(
            width,
            width // head_dim,
            bias=layer.in_proj_bias is not None,
            batch_first=layer.batch_first,
            dtype=layer.in_proj_weight.dtype,
        )
        ms.append((timer.time(_SelfAttention(attention), (*shape[:-1], width)),))
    outs = tuple(3 * w for w in widths)
    return LayerTable(shape=(3 * embed, embed), outs=outs, ins=(embed,), ms=tuple(ms), calls=calls)
