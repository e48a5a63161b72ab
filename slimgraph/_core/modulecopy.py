"""``copy.deepcopy`` of a module tree, three to four times faster.

Every ``sg.slim`` copies the model twice (the dry run's weightless copy and the slim model
itself), and ``copy.deepcopy`` spends most of that on the generic route through
``__reduce_ex__``: a dozen dicts per module (parameters, buffers, submodules, eight hook
tables), nearly all of them empty. :func:`module_copy` takes the same steps as deepcopy
(``cls.__new__``, a copy of ``__getstate__``'s dict, ``__setstate__``) on the module's own
dict directly: its submodules by the same route, an empty table as a new empty one, an
int or a string as itself, anything else by ``copy.deepcopy`` with the shared memo (so a
value reached twice is still copied once). A class that copies or pickles itself its own
way (``__deepcopy__``, ``__reduce_ex__``, ``__getstate__``, ``__slots__``) is copied by
``copy.deepcopy``.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
>>> twin = module_copy(net)
>>> twin[0].weight is net[0].weight, torch.equal(twin[0].weight, net[0].weight)
(False, True)
"""

from __future__ import annotations

import copy
import copyreg
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

__all__ = ["module_copy"]

_ATOMIC = (int, float, bool, str, bytes, type(None), torch.dtype, torch.device)
_TABLES = (dict, OrderedDict, set)
_PLAIN: dict[type, bool] = {}


def module_copy(module: nn.Module, memo: dict[int, Any] | None = None) -> nn.Module:
    """What ``copy.deepcopy(module, memo)`` returns; ``memo`` maps ``id`` of an original
    to its copy (tensors given there are used as they are)."""
    return _copy(module, {} if memo is None else memo)


def _plain(cls: type) -> bool:
    """Whether ``copy.deepcopy`` would copy an instance through ``nn.Module``'s state."""
    if cls not in _PLAIN:
        _PLAIN[cls] = (
            getattr(cls, "__deepcopy__", None) is None
            and all(_inherited(cls, name, object) for name in ("__reduce_ex__", "__reduce__"))
            and _inherited(cls, "__getstate__", nn.Module)
            and not copyreg._slotnames(cls)  # type: ignore[attr-defined]
        )
    return _PLAIN[cls]


def _inherited(cls: type, name: str, owner: type) -> bool:
    return getattr(cls, name) is getattr(owner, name)


def _copy(module: nn.Module, memo: dict[int, Any]) -> nn.Module:
    if id(module) in memo:
        return memo[id(module)]
    cls = type(module)
    if not _plain(cls):
        return copy.deepcopy(module, memo)
    new = cls.__new__(cls)
    memo[id(module)] = new
    state: dict[str, Any] = {}
    for key, value in module.__getstate__().items():
        if key == "_modules":
            state[key] = type(value)(
                (name, None if m is None else _copy(m, memo)) for name, m in value.items()
            )
        elif key in ("_parameters", "_buffers"):
            state[key] = type(value)((name, copy.deepcopy(t, memo)) for name, t in value.items())
        else:
            state[key] = _value(value, memo)
    new.__setstate__(state)
    return new


def _value(value: Any, memo: dict[int, Any]) -> Any:
    kind = type(value)
    if kind in _ATOMIC:
        return value
    if kind is tuple and all(type(v) in _ATOMIC for v in value):
        return value  # as deepcopy returns it (kernel sizes, strides, paddings)
    if kind in _TABLES and not value:  # the hook tables; an alias of one stays an alias
        if id(value) not in memo:
            memo[id(value)] = kind()
        return memo[id(value)]
    return copy.deepcopy(value, memo)
