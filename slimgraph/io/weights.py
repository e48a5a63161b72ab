"""Save a model's weights as safetensors, and load them back, tied weights included.

safetensors refuses tensors that share memory, so :func:`save_weights` stores a tied
tensor once and records its other names in the file's metadata; :func:`load_weights`
puts them back before ``load_state_dict``.

>>> import tempfile, torch
>>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
>>> net[1].weight = net[0].weight
>>> path = tempfile.mkdtemp() + "/w.safetensors"
>>> save_weights(net, path)
{'1.weight': '0.weight'}
>>> fresh = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
>>> load_weights(fresh, path)
<All keys matched successfully>
>>> torch.equal(fresh[1].weight, net[0].weight)
True
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from slimgraph._core.files import atomic_write
from slimgraph._core.inputs import dtype_name
from slimgraph.errors import WeightsError

__all__ = ["save_weights", "load_weights"]

# Metadata key of the tied names: JSON, name -> the name it is stored under.
ALIASES = "slimgraph.aliases"


def save_weights(
    model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> dict[str, str]:
    """Write ``model.state_dict()`` as safetensors; return the aliases that were left out.

    Tensors are made contiguous; a key whose tensor is the same view as an earlier key's
    (tied weights) is stored once and recorded in the ``slimgraph.aliases`` metadata
    (JSON, key -> stored key); entries that are not tensors are skipped. ``metadata`` is
    added to the file's metadata. The file is written to a temporary name and renamed into
    place; a symbolic link at ``path`` is refused.

    >>> import tempfile, safetensors.torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    >>> net[1].weight = net[0].weight
    >>> path = tempfile.mkdtemp() + "/w.safetensors"
    >>> save_weights(net, path)
    {'1.weight': '0.weight'}
    >>> sorted(safetensors.torch.load_file(path))
    ['0.bias', '0.weight', '1.bias']
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, value in model.state_dict(keep_vars=False).items():
        if not isinstance(value, torch.Tensor):
            continue
        storage = value.untyped_storage().data_ptr()
        view = (storage, value.storage_offset(), tuple(value.shape), value.stride(), value.dtype)
        if view in views and value.numel():
            aliases[name] = views[view]
            continue
        views[view] = name
        tensor = value.detach()
        # safetensors refuses tensors that share memory: give later sharers their own copy
        tensor = (
            tensor.clone(memory_format=torch.contiguous_format)
            if storage in storages
            else tensor.contiguous()
        )
        storages.add(storage)
        tensors[name] = tensor
    meta = {"format": "pt", **(metadata or {})}
    if aliases:
        meta[ALIASES] = json.dumps(aliases)
    # written beside the target and renamed: an interrupted save keeps the previous file
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return aliases


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> Any:
    """Load a file written by :func:`save_weights` into ``model``; return what
    ``model.load_state_dict`` returns (the missing and unexpected keys).

    The tied names recorded in the metadata get their stored tensor back, so a model
    with tied weights loads strictly. A plain safetensors file loads too. Entries that
    were not tensors (a module's extra state) were never saved: load such a model with
    ``strict=False``. Everything is checked before anything is loaded: a file that does
    not fit (keys, shapes, a dtype that would be converted, malformed aliases) raises a
    :class:`~slimgraph.errors.WeightsError` naming the keys, and leaves the model as it was.

    >>> import tempfile
    >>> net = torch.nn.Linear(2, 3)
    >>> path = tempfile.mkdtemp() + "/w.safetensors"
    >>> _ = save_weights(net, path)
    >>> fresh = torch.nn.Linear(2, 3)
    >>> load_weights(fresh, path)
    <All keys matched successfully>
    >>> torch.equal(fresh.weight, net.weight)
    True
    >>> load_weights(torch.nn.Linear(2, 4), path)
    Traceback (most recent call last):
    ...
    slimgraph.errors.WeightsError: ...w.safetensors does not fit Linear: size mismatch for weight: the file holds [3, 2], the model [4, 2]; size mismatch for bias: ...; nothing was loaded
    """
    state = _read_weights(path)
    expected = model.state_dict(keep_vars=True)
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if strict and missing:
        problems.append(
            f"missing keys {_names(missing)} (entries that are not tensors, such as a "
            "module's extra state, are never saved: load with strict=False)"
        )
    if strict and unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    for name, target in expected.items():  # in the model's order
        tensor = state.get(name)
        if tensor is None or not isinstance(target, torch.Tensor):
            continue
        if tensor.shape != target.shape:
            problems.append(
                f"size mismatch for {name}: the file holds {list(tensor.shape)}, "
                f"the model {list(target.shape)}"
            )
        elif tensor.dtype != target.dtype and not (
            tensor.dtype.is_floating_point and target.dtype.is_floating_point
        ):  # float widths convert losslessly enough; ints, bools and floats do not mix
            problems.append(
                f"dtype mismatch for {name}: the file holds {dtype_name(tensor.dtype)}, "
                f"the model {dtype_name(target.dtype)}"
            )
    if problems:
        raise WeightsError(
            f"{path} does not fit {type(model).__name__}: {'; '.join(problems)}; nothing was loaded"
        )
    return model.load_state_dict(state, strict=strict)


def _read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The file's tensors, with every tied name recorded in its metadata put back."""
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(ALIASES, "{}")
    except (OSError, SafetensorError) as err:
        raise WeightsError(
            f"{path} cannot be read as safetensors ({err}); pass a file written by "
            "sg.save_weights or save_file"
        ) from err
    try:
        aliases = json.loads(text)
    except json.JSONDecodeError as err:
        raise WeightsError(f"{path}: the {ALIASES} metadata is not JSON ({err})") from err
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        raise WeightsError(
            f"{path}: the {ALIASES} metadata must map names to stored names, "
            f"not {type(aliases).__name__} {text[:80]}"
        )
    clashing = [name for name in aliases if name in state]
    if clashing:
        raise WeightsError(
            f"{path}: the {ALIASES} metadata would replace the stored tensors "
            f"{_names(clashing)}; a tied name is stored once, so this file is corrupt"
        )
    dangling = [f"{name} -> {stored}" for name, stored in aliases.items() if stored not in state]
    if dangling:
        raise WeightsError(
            f"{path}: the {ALIASES} metadata points at keys the file does not hold: "
            f"{', '.join(dangling[:5])}"
        )
    return {**state, **{name: state[stored] for name, stored in aliases.items()}}


def _names(keys: list[str]) -> str:
    shown = ", ".join(f'"{k}"' for k in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
