"""The arguments of ``export_onnx``, checked before anything runs: the path, the options,
the weights and the example inputs, with the ONNX input names and the batch size they give.

>>> import torch
>>> net = torch.nn.Linear(4, 2)
>>> args, kwargs = checked_inputs(net, torch.zeros(2, 4))
>>> input_names(net, args, kwargs), batch_size([*args, *kwargs.values()])
(['input'], 2)
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimgraph.errors import ExportArgumentError

__all__ = [
    "QUANTIZE_CHOICES",
    "batch_size",
    "check_options",
    "check_path",
    "check_weights",
    "checked_inputs",
    "has_batch",
    "input_names",
]

QUANTIZE_CHOICES = ("int8",)


def check_path(path: Any) -> Path:
    """``path`` as a :class:`~pathlib.Path` to a file that can be written.

    >>> check_path("/no/such/dir/net.onnx")
    Traceback (most recent call last):
    ...
    slimgraph.errors.ExportArgumentError: cannot write /no/such/dir/net.onnx: the directory /no/such/dir does not exist; create it first or choose another path
    """
    try:
        path = Path(path)
    except TypeError:
        raise ExportArgumentError(
            f"path must be a file path such as 'model.onnx', not {type(path).__name__}"
        ) from None
    if path.is_dir():
        raise ExportArgumentError(
            f"{path} is a directory; give a file name inside it, such as {path / 'model.onnx'}"
        )
    parent = path.parent
    if not parent.is_dir():
        raise ExportArgumentError(
            f"cannot write {path}: the directory {parent} does not exist; create it first "
            "or choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportArgumentError(
            f"cannot write {path}: permission denied; choose a writable directory"
        )
    return path


def check_options(quantize: Any, opset: Any, rtol: Any, int8_rtol: Any) -> None:
    """Refuse an unknown ``quantize``, an opset that is no number, a tolerance that is not
    positive.

    >>> check_options(None, 18, 1e-4, 0.1)
    >>> check_options("int4", None, 1e-4, 0.1)
    Traceback (most recent call last):
    ...
    slimgraph.errors.ExportArgumentError: unknown quantize='int4'; use one of 'int8' or None
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ExportArgumentError(
            f"unknown quantize={quantize!r}; use one of {', '.join(map(repr, QUANTIZE_CHOICES))} "
            "or None"
        )
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise ExportArgumentError(f"opset must be an ONNX opset number such as 18, not {opset!r}")
    for name, value in (("rtol", rtol), ("int8_rtol", int8_rtol)):
        if not isinstance(value, int | float) or not value > 0:
            raise ExportArgumentError(f"{name} must be a positive number, not {value!r}")


def check_weights(model: Any) -> None:
    """Refuse anything but a module, and a module with weights on the meta device.

    >>> with torch.device("meta"):
    ...     check_weights(torch.nn.Linear(2, 2))
    Traceback (most recent call last):
    ...
    slimgraph.errors.ExportArgumentError: weight (and 1 more) is on the meta device and has no values to export; load real weights first (e.g. sg.load_weights)
    """
    if not isinstance(model, nn.Module):
        raise ExportArgumentError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if meta:
        raise ExportArgumentError(
            f"{meta[0]} (and {len(meta) - 1} more) is on the meta device and has no values to "
            "export; load real weights first (e.g. sg.load_weights)"
        )


def checked_inputs(
    model: nn.Module, example_inputs: Any
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """Positional or keyword tensors; keywords reordered to ``forward``'s signature.

    Both exporters must agree on the input order: the legacy one follows the signature,
    the dynamo one the dict, so the dict is put in signature order first.

    >>> class Pair(torch.nn.Module):
    ...     def forward(self, ids, mask):
    ...         return ids * mask
    >>> list(checked_inputs(Pair(), {"mask": torch.ones(1), "ids": torch.ones(1)})[1])
    ['ids', 'mask']
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, Mapping):
        items = list(example_inputs.items())
        where = [f"example_inputs[{k!r}]" for k, _ in items]
    elif isinstance(example_inputs, tuple | list):
        items = list(enumerate(example_inputs))
        where = [f"example_inputs[{i}]" for i, _ in items]
    else:
        raise ExportArgumentError(
            "example_inputs must be a tuple of positional tensors or a dict of keyword "
            f"tensors, not {type(example_inputs).__name__}"
        )
    if not items:
        raise ExportArgumentError("example_inputs is empty; give the tensors forward takes")
    for (key, value), at in zip(items, where):
        if isinstance(example_inputs, Mapping) and not isinstance(key, str):
            raise ExportArgumentError(f"keyword input names must be strings, not {key!r}")
        if not isinstance(value, torch.Tensor):
            raise ExportArgumentError(
                f"{at} is a {type(value).__name__}; export_onnx takes tensors only (fix "
                "other arguments with functools.partial or a wrapper module)"
            )
    if not isinstance(example_inputs, Mapping):
        return tuple(example_inputs), {}
    order = [p for p in _parameters(model) if p in example_inputs]
    order += [k for k in example_inputs if k not in order]
    return (), {k: example_inputs[k] for k in order}


def _parameters(model: nn.Module) -> list[str]:
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds or p.kind is inspect.Parameter.KEYWORD_ONLY]


def input_names(model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> list[str]:
    """The ONNX input names: the dict's keys, else ``forward``'s parameters, else
    ``input_<i>`` for positions past them.

    >>> input_names(torch.nn.Linear(2, 2), (torch.ones(2), torch.ones(2)), {})
    ['input', 'input_1']
    """
    if kwargs:
        return list(kwargs)
    named = _parameters(model)[: len(args)]
    return named + [f"input_{i}" for i in range(len(named), len(args))]


def batch_size(inputs: Sequence[torch.Tensor]) -> int | None:
    """Dim 0 of the first input that has one; ``None`` when every input is a scalar.

    >>> batch_size([torch.tensor(1.0), torch.zeros(5, 2)])
    5
    """
    return next((int(t.shape[0]) for t in inputs if t.ndim >= 1), None)


def has_batch(t: torch.Tensor, batch: int | None) -> bool:
    """Whether dim 0 of ``t`` is the batch (of size ``batch``).

    >>> has_batch(torch.zeros(2, 3), 2), has_batch(torch.zeros(3), 2)
    (True, False)
    """
    return batch is not None and t.ndim >= 1 and t.shape[0] == batch
