"""Shape-only kernels on the meta device for the ops that keep their input's shape.

A forward on the meta device (the recorder's, the dry run's) computes shapes, not values.
For convolutions and matmuls the registered meta kernels are cheap, but those of norms
and activations are Python decompositions that run a dozen meta ops each: they were half
of a resnet50 recording and 80 % of a mobilenet_v2 dry run. What such an op says about
shapes is short: its output is shaped as its input (the input itself when in place), once
the widths of its weights and statistics agree with the input's. :func:`shape_only` checks
those widths, as the real kernels do, and makes the output with ``empty_like``;
``tests/core/test_metakernels.py`` holds every entry to its registered meta kernel (shapes,
dtypes, strides, and a refusal of every width that does not agree).

The same holds for ``add``, ``sub`` and ``mul`` (about 0.12 ms each through their Python
meta kernel) and for adaptive average pooling (0.2 ms): on operands with the strides
``torch.empty`` gives them, and a floating result, their output is the broadcast shape
with those strides, of the promoted dtype.
Other layouts and mixtures are left to the registered kernels, which decide the strides.

The other kernels run once per signature (:class:`KernelCache`): a meta output is a
function of its arguments' shapes, strides and dtypes, and models repeat their layers.

>>> x, w = torch.empty(2, 8, 4, 4, device="meta"), torch.empty(8, device="meta")
>>> with ShapeKernels():
...     y = torch.nn.functional.batch_norm(x, w, w, training=False)
>>> y.shape, y.device.type
(torch.Size([2, 8, 4, 4]), 'meta')
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from slimgraph._core.inputs import output_tensors

__all__ = ["KernelCache", "ShapeKernels", "shape_only"]

aten = torch.ops.aten
Kernel = Callable[..., Any]


def _width(what: str, tensor: Any, width: int) -> None:
    if isinstance(tensor, torch.Tensor) and tensor.numel() != width:
        raise RuntimeError(f"{what} should contain {width} elements not {tensor.numel()}")


def _channels(x: torch.Tensor) -> int:
    return x.shape[1] if x.dim() > 1 else x.shape[0]


def _batch_norm_widths(x: torch.Tensor, *tensors: Any) -> None:
    for what, t in zip(("weight", "bias", "running_mean", "running_var"), tensors):
        _width(what, t, _channels(x))


def _stats(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A norm's saved mean or inverse deviation: float32 for half inputs, as the kernels do."""
    low = x.dtype in (torch.float16, torch.bfloat16)
    return x.new_empty(shape, dtype=torch.float32 if low else x.dtype)


def _layer_norm_widths(x: torch.Tensor, shape: Sequence[int], *tensors: Any) -> None:
    shape = tuple(shape)
    if tuple(x.shape[x.dim() - len(shape) :]) != shape:
        raise RuntimeError(
            f"Given normalized_shape={list(shape)}, expected input with shape "
            f"[*, {', '.join(map(str, shape))}], but got input of size{list(x.shape)}"
        )
    for t in tensors:
        if isinstance(t, torch.Tensor) and tuple(t.shape) != shape:
            raise RuntimeError(
                f"Expected weight and bias of shape {list(shape)}, got {list(t.shape)}"
            )


def _group_norm_widths(x: torch.Tensor, groups: int, *tensors: Any) -> None:
    channels = _channels(x)
    if channels % groups:
        raise RuntimeError(
            f"Expected number of channels in input to be divisible by num_groups, but got "
            f"input of shape {list(x.shape)} and num_groups={groups}"
        )
    for what, t in zip(("weight", "bias"), tensors):
        _width(what, t, channels)


# Pre-dispatch ops (the recorder sees these): one output, shaped as the input.
def _batch_norm(x, w, b, mean, var, *_):
    _batch_norm_widths(x, w, b, mean, var)
    return torch.empty_like(x)


def _instance_norm(x, w, b, mean, var, *_):
    _batch_norm_widths(x, w, b, mean, var)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous, as its kernel


def _layer_norm(x, shape, w=None, b=None, *_):
    _layer_norm_widths(x, shape, w, b)
    return torch.empty_like(x)


def _group_norm(x, groups, w=None, b=None, *_):
    _group_norm_widths(x, groups, w, b)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


# After autograd (a plain dispatch mode sees these): the output and the saved statistics.
def _native_batch_norm(x, w, b, mean, var, *_):
    _batch_norm_widths(x, w, b, mean, var)
    return torch.empty_like(x), _stats(x, (_channels(x),)), _stats(x, (_channels(x),))


def _batch_norm_no_stats(x, w, b, *_):
    return _native_batch_norm(x, w, b, None, None)


def _native_layer_norm(x, shape, w, b, *_):
    _layer_norm_widths(x, shape, w, b)
    kept = tuple(x.shape[: x.dim() - len(shape)]) + (1,) * len(shape)
    return torch.empty_like(x), _stats(x, kept), _stats(x, kept)


def _native_group_norm(x, w, b, n, c, hw, groups, *_):
    _group_norm_widths(x, groups, w, b)
    if x.numel() != n * c * hw or _channels(x) != c:
        raise RuntimeError(f"Expected input of {n} x {c} x {hw} elements, got {list(x.shape)}")
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return out, x.new_empty((n, groups)), x.new_empty((n, groups))


def _native_dropout(x, *_):
    return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)


def _like(x, *_):
    return torch.empty_like(x)


def _itself(x, *_):
    return x


def _dense(t: torch.Tensor) -> bool:
    """Whether ``t`` has exactly the strides ``torch.empty`` gives its shape (a size-1 dim
    included: ``is_contiguous`` ignores its stride, a kernel's output strides may not)."""
    expected = 1
    for size, stride in zip(reversed(t.shape), reversed(t.stride())):
        if stride != expected:
            return False
        expected *= max(size, 1)
    return True


def _operands(x: torch.Tensor, other: Any) -> tuple[torch.Size, torch.dtype] | None:
    """The broadcast shape and promoted dtype of ``x`` and ``other`` (a meta tensor or a
    Python number) when both are dense and the result is floating; None otherwise
    (the registered kernel decides the strides of other layouts, and refuses mixtures)."""
    if isinstance(other, torch.Tensor):
        if not (other.is_meta and _dense(other) and _dense(x)):
            return None
        try:
            shape = (
                x.shape if other.shape == x.shape else torch.broadcast_shapes(x.shape, other.shape)
            )
        except RuntimeError:  # the kernel's own message names the sizes
            return None
    elif type(other) in (int, float) and _dense(x):
        shape = x.shape
    else:
        return None
    dtype = torch.result_type(x, other)
    return (shape, dtype) if dtype.is_floating_point else None


def _binary(x, other, *_):  # add, sub, mul: dense operands give a dense result
    found = _operands(x, other)
    return None if found is None else torch.empty(found[0], dtype=found[1], device=x.device)


def _binary_(x, other, *_):  # x += other: other broadcasts to x, and casts to its dtype
    found = _operands(x, other)
    if found is None or found[0] != x.shape or not torch.can_cast(found[1], x.dtype):
        return None
    return x


def _adaptive_avg_pool2d(x, size, *_):  # the input's leading dims, then ``size``
    if x.dim() not in (3, 4) or not _dense(x) or not x.numel() or min(size) < 0:
        return None
    return torch.empty((*x.shape[:-2], *size), dtype=x.dtype, device=x.device)


_ACTIVATIONS: tuple[str, ...] = ("relu", "hardtanh", "silu", "gelu", "sigmoid", "tanh", "hardswish")
_ACTIVATIONS += ("hardsigmoid", "leaky_relu", "elu", "mish")
_BINARY = ("add", "sub", "mul")

KERNELS: dict[Any, Kernel] = {
    aten.batch_norm.default: _batch_norm,  # out = (x - mean) / sqrt(var + eps) * w + b, per channel
    aten.instance_norm.default: _instance_norm,  # the same per sample
    aten.layer_norm.default: _layer_norm,  # over the trailing normalized_shape
    aten.group_norm.default: _group_norm,  # over channel groups
    aten.dropout.default: _like,
    aten.native_batch_norm.default: _native_batch_norm,
    aten._native_batch_norm_legit.default: _native_batch_norm,
    aten._native_batch_norm_legit_no_training.default: _native_batch_norm,
    aten._native_batch_norm_legit.no_stats: _batch_norm_no_stats,
    aten.native_layer_norm.default: _native_layer_norm,
    aten.native_group_norm.default: _native_group_norm,
    aten.native_dropout.default: _native_dropout,
}
KERNELS |= {getattr(aten, op).Tensor: _binary for op in _BINARY}  # x op y, broadcast
KERNELS |= {getattr(aten, f"{op}_").Tensor: _binary_ for op in _BINARY}  # x op= y
KERNELS[aten.adaptive_avg_pool2d.default] = _adaptive_avg_pool2d
KERNELS |= {getattr(aten, op).default: _like for op in _ACTIVATIONS}  # f(x), elementwise
KERNELS |= {getattr(aten, f"{op}_").default: _itself for op in _ACTIVATIONS}  # x = f(x)


def shape_only(func: Any, args: tuple, kwargs: dict[str, Any] | None = None) -> Any:
    """The output of ``func(*args, **kwargs)`` on a floating meta input, without running
    its meta kernel: ``None`` where it has no shape-only kernel (run it)."""
    kernel = KERNELS.get(func)
    x = args[0] if args else None
    if kernel is None or not isinstance(x, torch.Tensor):
        return None
    if not (x.is_meta and x.is_floating_point()):
        return None
    return kernel(*args)  # kwargs are keyword-only options (gelu's approximate), no widths


class _Unkeyed(Exception):
    """An argument the cache cannot key by (not a meta tensor, nor a plain value)."""


_PLAIN = (str, torch.dtype, torch.device, torch.layout, torch.memory_format, type(None))
_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _signature(value: Any) -> Hashable:
    """What a meta kernel may read of ``value``: a tensor's shape, strides, dtype and
    offset, a scalar's type with its value (``1``, ``1.0`` and ``True`` are equal keys
    alone, and an integer tensor plus ``1.0`` is a float tensor)."""
    kind = type(value)
    if kind in _TENSORS:
        if not value.is_meta or value.layout != torch.strided:
            raise _Unkeyed
        return (value.shape, value.stride(), value.dtype, value.storage_offset())
    if kind in (int, float, bool, complex):
        return (kind, value)
    if kind in (tuple, list):
        return (kind, *map(_signature, value))
    if kind is dict:
        return (kind, *((k, _signature(v)) for k, v in value.items()))
    if isinstance(value, _PLAIN):
        return value
    raise _Unkeyed


Layout = tuple[type, list[tuple[torch.Size, tuple[int, ...], torch.dtype]]]


def _fresh(func: Any, out: Any, args: tuple, kwargs: dict) -> Layout | None:
    """The layout of ``out`` when its tensors are new (no output aliases an input or
    another output, none is a view into a larger storage), else None."""
    outs = [out] if isinstance(out, torch.Tensor) else out if type(out) in (tuple, list) else []
    if not outs or func._schema.is_mutable:
        return None
    if not all(type(o) is torch.Tensor and o.is_meta and _whole(o) for o in outs):
        return None
    inputs = output_tensors((args, kwargs))
    if not inputs:  # a factory's output may follow the default dtype and device
        return None
    storages = [t.untyped_storage()._cdata for t in inputs]
    for o in outs:  # a view of an input, or of another output
        if o.untyped_storage()._cdata in storages:
            return None
        storages.append(o.untyped_storage()._cdata)
    return type(out), [(o.shape, o.stride(), o.dtype) for o in outs]


def _whole(t: torch.Tensor) -> bool:
    """Whether ``t`` spans its storage exactly, as ``empty_strided`` would make it."""
    if t.layout != torch.strided or t.storage_offset():
        return False
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) if t.numel() else 0
    return t.untyped_storage().nbytes() == span * t.element_size()


def _made(layout: Layout) -> Any:
    kind, parts = layout
    outs = [torch.empty_strided(*part[:2], dtype=part[2], device="meta") for part in parts]
    return outs[0] if kind not in (tuple, list) else kind(outs)


class KernelCache:
    """Meta kernels remembered by their arguments' metadata, for one forward.

    A meta kernel's output can depend on its inputs' shapes, strides and dtypes and on its
    other arguments, never on values (meta tensors have none): a forward that repeats a
    layer (a ViT's twelve blocks, the bottlenecks of a ResNet stage) runs each kernel once
    per signature, and the repeats get new tensors of the remembered layout. Only ops whose
    outputs are new tensors are remembered: views, in-place and ``out=`` ops run every
    time, as does any op with an argument that is not a meta tensor or a plain value.
    Outputs made from the cache carry no autograd history, as those of
    :func:`shape_only` do not.

    >>> cache, x = KernelCache(), torch.empty(2, 3, 8, 8, device="meta")
    >>> w = torch.empty(4, 3, 3, 3, device="meta")
    >>> first = cache(aten.conv2d.default, (x, w), {})
    >>> again = cache(aten.conv2d.default, (x, w), {})  # not run: made from the cache
    >>> again.shape, again.stride() == first.stride(), again is first, len(cache.seen)
    (torch.Size([2, 4, 6, 6]), True, False, 1)
    """

    def __init__(self) -> None:
        self.seen: dict[Hashable, Layout | None] = {}

    def __call__(self, func: Any, args: tuple, kwargs: dict[str, Any] | None) -> Any:
        kwargs = kwargs or {}
        try:
            key = (func, _signature(args), _signature(kwargs) if kwargs else None)
        except _Unkeyed:
            return func(*args, **kwargs)
        if key in self.seen:
            layout = self.seen[key]
            return func(*args, **kwargs) if layout is None else _made(layout)
        out = func(*args, **kwargs)
        self.seen[key] = _fresh(func, out, args, kwargs)
        return out


class ShapeKernels(TorchDispatchMode):
    """Run a forward on the meta device with the shape-only kernels of :func:`shape_only`,
    and the other kernels remembered (:class:`KernelCache`)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = KernelCache()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = shape_only(func, args, kwargs)
        return self.kernels(func, args, kwargs) if out is None else out
