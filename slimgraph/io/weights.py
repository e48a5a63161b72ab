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
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from slimgraph._core.files import atomic_write

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
    ``strict=False``.

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
    RuntimeError: Error(s) in loading state_dict for Linear:
    ...
    """
    state = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get(ALIASES, "{}"))
    for name, stored in aliases.items():
        state[name] = state[stored]
    return model.load_state_dict(state, strict=strict)
