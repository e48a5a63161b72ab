"""Example inputs: split them, record their shapes, synthesise them back, and run a model
on them without changing its train/eval modes or its key/value-cache setting.

>>> import torch
>>> spec = input_specs((torch.zeros(2, 3),), {})[0]
>>> spec, spec.example("meta").device.type
(InputSpec(shape=(2, 3), dtype='float32', name=None), 'meta')
>>> synthesize([InputSpec((1, 4), "int64", "input_ids")], "meta")["input_ids"].shape
torch.Size([1, 4])
>>> synthesize([InputSpec((10**7, 10**6), "float32")])
Traceback (most recent call last):
...
slimgraph.errors.TraceError: the inputs to synthesise (10000000x1000000 float32) take 40000000000000 bytes, over the limit of 268435456 (2**28); pass smaller example inputs, or raise the limit with max_input_bytes= (--max-input-bytes on the command line)
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

from slimgraph.errors import TraceError

__all__ = [
    "MAX_INPUT_BYTES",
    "ExampleInputs",
    "attributes_kept",
    "check_input_bytes",
    "dtype_name",
    "InputSpec",
    "input_specs",
    "map_tensors",
    "output_shapes",
    "output_tensors",
    "preserve_modes",
    "random_tensor",
    "split_inputs",
    "synthesize",
    "without_kv_cache",
]

ExampleInputs = tuple | list | Mapping[str, Any] | torch.Tensor

MAX_INPUT_BYTES = 2**28
"""Default limit on the memory of inputs synthesised from recorded shapes (256 MiB): a
recorded shape comes from a file (a plan) and is checked before anything is allocated."""


def split_inputs(example_inputs: ExampleInputs) -> tuple[tuple, dict[str, Any]]:
    """A tuple of positional inputs, or a dict of keyword inputs, as ``(args, kwargs)``."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise TraceError(
        f"example_inputs must be a tuple of tensors or a dict of keyword tensors, "
        f"not {type(example_inputs).__name__}"
    )


def random_tensor(
    shape: tuple[int, ...], dtype: str | torch.dtype, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """A stand-in input: random floats, zero integers (token ids, masks, indices).

    On the meta device only the shape and dtype exist.
    """
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if dtype.is_floating_point and torch.device(device).type != "meta":
        return torch.randn(shape, dtype=dtype, device=device)
    return torch.zeros(shape, dtype=dtype, device=device)


@dataclass(frozen=True)
class InputSpec:
    """Shape and dtype of one example input (``name`` is set for keyword inputs)."""

    shape: tuple[int, ...]
    dtype: str
    name: str | None = None

    def example(self, device: str | torch.device = "cpu") -> torch.Tensor:
        return random_tensor(self.shape, self.dtype, device)


def input_specs(args: tuple, kwargs: Mapping[str, Any]) -> list[InputSpec]:
    """The recorded shape and dtype of every positional, then every keyword input."""
    specs = [InputSpec(tuple(t.shape), dtype_name(t.dtype)) for t in args]
    specs += [InputSpec(tuple(t.shape), dtype_name(t.dtype), name) for name, t in kwargs.items()]
    return specs


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``: the name files and messages use."""
    return str(dtype).removeprefix("torch.")


def check_input_bytes(specs: Iterable[Any], max_bytes: int = MAX_INPUT_BYTES) -> int:
    """The bytes that inputs of the recorded shapes and dtypes take; refuse (before any
    allocation) more than ``max_bytes``.

    >>> check_input_bytes([InputSpec((2, 3), "float32")])
    24
    """
    specs = list(specs)
    total = 0
    for s in specs:
        dtype = getattr(torch, s.dtype, None) if isinstance(s.dtype, str) else s.dtype
        if not isinstance(dtype, torch.dtype):
            raise TraceError(f"input dtype {s.dtype!r} is no torch dtype; use e.g. 'float32'")
        total += math.prod(s.shape) * dtype.itemsize
    if total > max_bytes:
        shapes = ", ".join(
            f"{s.name + ' ' if s.name else ''}{'x'.join(map(str, s.shape))} "
            f"{str(s.dtype).removeprefix('torch.')}"
            for s in specs
        )
        limit = f"{max_bytes}" + (" (2**28)" if max_bytes == MAX_INPUT_BYTES else "")
        raise TraceError(
            f"the inputs to synthesise ({shapes}) take {total} bytes, over the limit of "
            f"{limit}; pass smaller example inputs, or raise the limit with max_input_bytes= "
            "(--max-input-bytes on the command line)"
        )
    return total


def synthesize(
    specs: Iterable[Any],
    device: str | torch.device = "cpu",
    max_input_bytes: int = MAX_INPUT_BYTES,
) -> ExampleInputs:
    """Inputs of the recorded shapes (anything with ``shape``, ``dtype`` and ``name``):
    a dict when they are keyword inputs, else a tuple. Unless on the meta device (where
    nothing is allocated), inputs over ``max_input_bytes`` in all are refused first
    (:func:`check_input_bytes`)."""
    specs = list(specs)
    if torch.device(device).type != "meta":
        check_input_bytes(specs, max_input_bytes)
    kwargs = {s.name: random_tensor(s.shape, s.dtype, device) for s in specs if s.name}
    return kwargs or tuple(random_tensor(s.shape, s.dtype, device) for s in specs if not s.name)


def output_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor in a (possibly nested) model output, in order: tuples, lists, dicts
    (Hugging Face model outputs among them) and objects with ``to_tuple``."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in output_tensors(item)]
    if hasattr(out, "to_tuple"):
        return output_tensors(out.to_tuple())
    return []


def map_tensors(fn: Any, tree: Any) -> Any:
    """``fn`` on each tensor of an op's arguments or outputs (tuples, lists and dicts of
    them), the rest as it was. pytree's ``tree_map_only`` does the same, at several times
    the cost per op (half of a resnet50 recording); it only gets the containers it
    registers that are not plain tuples, lists or dicts.

    >>> map_tensors(lambda t: t + 1, ([torch.zeros(1)], {"k": 2}))
    ([tensor([1.])], {'k': 2})
    """
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    kind = type(tree)
    if kind is tuple or kind is list:
        return kind([map_tensors(fn, item) for item in tree])
    if kind is dict:
        return {key: map_tensors(fn, value) for key, value in tree.items()}
    if isinstance(tree, (tuple, list, dict)) or kind in pytree.SUPPORTED_NODES:
        return pytree.tree_map_only(torch.Tensor, fn, tree)  # other containers (rare)
    # a leaf (an op's ints, floats, dtypes): pytree would take 60 us to hand it back
    return tree


def output_shapes(out: Any) -> list[tuple[int, ...]]:
    """Shapes of every tensor in a (possibly nested) model output, in order."""
    return [tuple(t.shape) for t in output_tensors(out)]


@contextlib.contextmanager
def preserve_modes(model: torch.nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval flag on exit (mixed modes included)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def without_kv_cache(model: torch.nn.Module) -> Iterator[None]:
    """Switch off a Hugging Face model's key/value cache for the duration.

    The cache is inference state, not computation on the weights, and its ``DynamicCache``
    output is no tensor pytree ``torch.export`` can return. Every config in the model is
    switched (an encoder-decoder's decoder stack holds its own copy).
    """
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None}
    switched = [c for c in configs.values() if getattr(c, "use_cache", None) is True]
    for c in switched:
        c.use_cache = False
    try:
        yield
    finally:
        for c in switched:
            c.use_cache = True


@contextlib.contextmanager
def attributes_kept(model: torch.nn.Module) -> Iterator[None]:
    """Every module's public attributes and submodules as they were on entry.

    A forward may fill a cache (timm LeViT's ``attention_bias_cache``) or swap a submodule
    (BigBird's switch to full attention on short inputs): a forward run to trace or to
    check must not leave either behind, at the old width or on the meta device. Containers
    are restored in place, new attributes removed."""
    saved = []
    for module in model.modules():
        attrs = {k: v for k, v in vars(module).items() if not k.startswith("_")}
        attrs["_modules"] = module._modules
        contents = {k: copy.copy(v) for k, v in attrs.items() if isinstance(v, (dict, list))}
        saved.append((module, attrs, contents))
    try:
        yield
    finally:
        for module, attrs, contents in saved:
            for key in [k for k in vars(module) if not k.startswith("_") and k not in attrs]:
                delattr(module, key)
            for key, value in attrs.items():
                object.__setattr__(module, key, value)
                if isinstance(value, list):
                    value[:] = contents[key]
                elif key in contents:
                    value.clear()
                    value.update(contents[key])
