"""Exported programs (``PATH.pt2``, written by ``torch.export.save``) as model specs: the
program as a module, the example inputs it was saved with, or inputs synthesised from the
shapes its placeholders record.

>>> import tempfile, torch
>>> path = tempfile.mkdtemp() + "/net.pt2"
>>> torch.export.save(torch.export.export(torch.nn.Linear(4, 2), (torch.randn(1, 4),)), path)
>>> module = program_module(load_program(path))
>>> [tuple(t.shape) for t in placeholder_inputs(module, path, None)]
[(1, 4)]
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from slimgraph._core.inputs import random_tensor
from slimgraph.errors import ModelSpecError

__all__ = ["ExampleInputs", "load_program", "placeholder_inputs", "program_module", "stored_inputs"]

ExampleInputs = tuple[torch.Tensor, ...] | dict[str, torch.Tensor]


def load_program(name: str) -> torch.export.ExportedProgram:
    """The exported program saved at ``name`` by ``torch.export.save``."""
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelSpecError(
            f"model spec {name!r}: no such file; pass an exported program written by "
            "torch.export.save"
        )
    export_log = logging.getLogger("torch.export")  # logs a traceback before raising
    disabled, export_log.disabled = export_log.disabled, True
    try:
        return torch.export.load(path)
    except Exception as err:
        raise ModelSpecError(
            f"model spec {name!r}: not an exported program (torch.export.load cannot read "
            "it); write one with torch.export.save(torch.export.export(model, args), path)"
        ) from err
    finally:
        export_log.disabled = disabled


def program_module(program: torch.export.ExportedProgram) -> nn.Module:
    """The program as a module that ``train()`` and ``eval()`` accept.

    torch makes them raise, as the graph keeps the mode it was exported in (dropout and
    BatchNorm statistics are baked in); slimgraph switches modes around its dry runs and
    counts, which is harmless here, so the module gets back nn.Module's methods.
    """
    module = program.module()
    for name in ("train", "eval"):
        module.__dict__.pop(name, None)
    return module


def stored_inputs(program: torch.export.ExportedProgram, name: str) -> ExampleInputs | None:
    """The example inputs ``torch.export.save`` kept, as a tuple or a dict; else None."""
    stored = getattr(program, "example_inputs", None)
    if not stored:
        return None
    args, kwargs = stored
    if args and kwargs:
        raise ModelSpecError(
            f"model spec {name!r}: the program takes positional and keyword inputs; "
            "slimgraph takes one kind, so export it with only args or only kwargs"
        )
    return dict(kwargs) if kwargs else tuple(args)


def placeholder_inputs(
    module: torch.fx.GraphModule, spec: str, shape: tuple[int, ...] | None
) -> tuple[torch.Tensor, ...]:
    """One tensor per placeholder of an exported module, of its recorded shape and dtype
    (random floats, zeros otherwise); ``shape`` replaces the shape of a single one."""
    values = [n.meta.get("val") for n in module.graph.nodes if n.op == "placeholder"]
    if not all(isinstance(v, torch.Tensor) for v in values):
        raise ModelSpecError(f"model spec {spec!r}: an input of the program is not a tensor")
    if shape is not None and len(values) != 1:
        raise ModelSpecError(
            f"model spec {spec!r} takes {len(values)} inputs; an input shape sets one, so "
            "leave it out to use the shapes the program was exported with"
        )
    inputs = []
    for value in values:
        static = all(isinstance(d, int) for d in value.shape)
        if shape is not None and static and tuple(value.shape) != shape:
            raise ModelSpecError(
                f"model spec {spec!r} was exported for input {'x'.join(map(str, value.shape))}; "
                "leave the input shape out, or export with dynamic_shapes"
            )
        if shape is None and not static:
            raise ModelSpecError(
                f"model spec {spec!r}: an input has a dynamic size and the program stores no "
                "example inputs; pass an input shape"
            )
        inputs.append(random_tensor(shape or tuple(value.shape), value.dtype))
    return tuple(inputs)
