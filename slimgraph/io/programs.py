"""Exported programs (``PATH.pt2``, written by ``torch.export.save``) as model specs: the
program as a module, the example inputs it was saved with, or inputs synthesised from the
shapes its placeholders record.

``torch.export.load`` unpickles parts of an archive (weights and constants marked
``use_pickle``, opaque objects, sample inputs that need ``weights_only=False``), and
unpickling runs whatever code the file names. So :func:`load_program` first reads the
archive's members and refuses any that torch would unpickle: a spec file from elsewhere
never runs code.

>>> import tempfile, torch
>>> path = tempfile.mkdtemp() + "/net.pt2"
>>> torch.export.save(torch.export.export(torch.nn.Linear(4, 2), (torch.randn(1, 4),)), path)
>>> module = program_module(load_program(path))
>>> [tuple(t.shape) for t in placeholder_inputs(module, path, None)]
[(1, 4)]
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from pathlib import Path

import torch
from torch import nn
from torch.export.pt2_archive import PT2ArchiveReader

from slimgraph._core.inputs import random_tensor
from slimgraph.errors import ModelSpecError

__all__ = [
    "ExampleInputs",
    "check_archive",
    "load_program",
    "placeholder_inputs",
    "program_module",
    "stored_inputs",
]

ExampleInputs = tuple[torch.Tensor, ...] | dict[str, torch.Tensor]

# The members torch.export.save writes for a program of plain tensors; torch reads them
# as raw bytes, JSON or text, except the sample inputs (a torch.save file, checked below).
# Anything else (legacy ``.pt`` pickles, opaque or custom objects, compiled AOTInductor
# libraries) is refused.
PLAIN_MEMBER = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/[^/]+\.json|data/sample_inputs/[^/]+\.pt|extra/.+"
    r"|data/weights/(weight_\d+|[^/]+_weights_config\.json)"
    r"|data/constants/(tensor_\d+|[^/]+_constants_config\.json)"
)
# The payload files a weights or constants config may point at.
PLAIN_PAYLOAD = re.compile(r"weight_\d+|tensor_\d+")


def load_program(name: str) -> torch.export.ExportedProgram:
    """The exported program saved at ``name`` by ``torch.export.save``."""
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelSpecError(
            f"model spec {name!r}: no such file; pass an exported program written by "
            "torch.export.save"
        )
    check_archive(path, name)
    export_log = logging.getLogger("torch.export")  # logs a traceback before raising
    disabled, export_log.disabled = export_log.disabled, True
    try:
        return torch.export.load(path)
    except Exception as err:
        raise _not_a_program(name) from err
    finally:
        export_log.disabled = disabled


def check_archive(path: Path, name: str) -> None:
    """Refuse an archive that ``torch.export.load`` would unpickle any part of, naming
    the member; an archive of plain tensors (what ``torch.export.save`` writes for an
    ordinary model) passes.

    >>> import tempfile, zipfile
    >>> path = Path(tempfile.mkdtemp()) / "odd.pt2"
    >>> with zipfile.ZipFile(path, "w") as archive:
    ...     archive.writestr("odd/.data/version", "3")
    ...     archive.writestr("odd/archive_format", "pt2")
    ...     archive.writestr("odd/data/weights/model.pt", b"")
    >>> check_archive(path, "odd.pt2")
    Traceback (most recent call last):
    ...
    slimgraph.errors.ModelSpecError: model spec 'odd.pt2': member data/weights/model.pt is not part of an exported program of plain tensors; torch.export.load would unpickle it, which can run any code, so slimgraph does not read it: export the model again with torch.export.save, from a model you trust
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
    except (OSError, zipfile.BadZipFile) as err:
        raise _not_a_program(name) from err
    outside = [n for n in names if n.partition("/")[0] != names[0].partition("/")[0]]
    if outside or any("/" not in n for n in names):  # torch < 2.8 read top-level pickles
        stray = (outside or [n for n in names if "/" not in n])[0]
        raise _unpickled(name, stray, "lies outside the archive's root folder")
    try:
        records = PT2ArchiveReader(str(path))
        members = {n.partition("/")[2] for n in names} | set(records.get_file_names())
    except Exception as err:
        raise _not_a_program(name) from err
    for member in sorted(members):
        if not PLAIN_MEMBER.fullmatch(member):
            raise _unpickled(name, member, "is not part of an exported program of plain tensors")
    for member in sorted(members):  # weights are raw bytes: only configs and inputs are read
        if member.endswith(("_weights_config.json", "_constants_config.json")):
            _check_payloads(name, member, records.read_bytes(member))
        elif member.startswith("data/sample_inputs/"):
            try:  # the restricted unpickler: it builds tensors and containers, nothing else
                torch.load(io.BytesIO(records.read_bytes(member)), weights_only=True)
            except Exception as err:
                raise _unpickled(name, member, "holds objects other than tensors") from err


def _check_payloads(name: str, member: str, data: bytes) -> None:
    """Every entry of a weights or constants config points at raw tensor bytes."""
    try:
        entries = json.loads(data)["config"].values()
    except Exception as err:
        raise _unpickled(name, member, "is not a config of tensors") from err
    for entry in entries:
        entry = entry if isinstance(entry, dict) else {}
        path = entry.get("path_name")
        if entry.get("use_pickle") is not False or not PLAIN_PAYLOAD.fullmatch(str(path)):
            target = f"{member.rpartition('/')[0]}/{path}"
            raise _unpickled(name, target, f"is not a plain tensor in {member}")


def _not_a_program(name: str) -> ModelSpecError:
    return ModelSpecError(
        f"model spec {name!r}: not an exported program (torch.export.load cannot read "
        "it); write one with torch.export.save(torch.export.export(model, args), path)"
    )


def _unpickled(name: str, member: str, why: str) -> ModelSpecError:
    return ModelSpecError(
        f"model spec {name!r}: member {member} {why}; torch.export.load would unpickle it, "
        "which can run any code, so slimgraph does not read it: export the model again "
        "with torch.export.save, from a model you trust"
    )


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
