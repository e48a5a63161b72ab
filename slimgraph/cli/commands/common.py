"""What several commands do alike: check the paths and flags they were given before any
work, build and trace the model, read a plan, write the slim model, describe the inputs.

>>> inputs_json({"input_ids": torch.zeros(1, 16, dtype=torch.long)})
[{'name': 'input_ids', 'shape': [1, 16], 'dtype': 'int64'}]
"""

from __future__ import annotations

import argparse
import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from pydantic import BaseModel, ValidationError
from safetensors import SafetensorError
from torch import nn

import slimgraph as sg
from slimgraph._core.files import (
    check_output_dir,
    check_output_file,
    prepare_output_dir,
    write_text_atomic,
)
from slimgraph._core.inputs import input_specs, split_inputs
from slimgraph._core.progress import Progress
from slimgraph.cli.commands.latency import latency_fields
from slimgraph.cli.flags import config_from_args
from slimgraph.criteria.calibration import needs_of
from slimgraph.errors import OutputError, SlimGraphError, UsageError
from slimgraph.io.specs import build
from slimgraph.io.weights import load_weights, save_weights

__all__ = [
    "Outcome",
    "Parents",
    "add_overwrite",
    "build_model",
    "build_traced",
    "check_out",
    "check_patterns",
    "inputs_json",
    "inputs_report",
    "load_weights_flag",
    "planning_config",
    "read_plan",
    "write_json",
    "write_slim",
]

# A command's result (printed as JSON with --json) and the function that prints it as text.
Outcome = tuple[dict[str, Any], Callable[[dict[str, Any]], None]]


@dataclass(frozen=True)
class Parents:
    """The argument sets a command's parser may take as argparse parents: ``output`` (-v,
    --json), ``model`` (SPEC), ``shaped`` (--input-shape), ``planning`` (PruneConfig)."""

    output: argparse.ArgumentParser
    model: argparse.ArgumentParser
    shaped: argparse.ArgumentParser
    planning: argparse.ArgumentParser

    def common(self) -> list[argparse.ArgumentParser]:
        """What a command that builds and traces a model at a chosen shape takes."""
        return [self.output, self.shaped, self.model]


def planning_config(args: argparse.Namespace) -> sg.PruneConfig:
    """The planning flags as a validated PruneConfig; a criterion that reads calibration
    data is refused, since the command line takes none."""
    config = cast(sg.PruneConfig, config_from_args(args, extra=latency_fields(args)))
    if needs_of(config):
        raise UsageError(
            f"--importance {config.importance} reads calibration data, which the command line "
            f"does not take; in Python: sg.slim(model, inputs, importance="
            f"{config.importance!r}, calibration=batches)"
        )
    return config


def build_model(
    spec: str, shape: tuple[int, ...] | None, seed: int, progress: Progress
) -> tuple[nn.Module, Any]:
    """The model in eval mode (deployment: dropout off, BatchNorm frozen) and its example
    inputs, both random from ``seed`` where the spec does not bring them."""
    torch.manual_seed(seed)
    with progress.step("load", f"building {spec}…"):
        model, example = build(spec, shape)
        model.eval()
    return model, example


def build_traced(
    spec: str,
    shape: tuple[int, ...] | None,
    seed: int,
    progress: Progress,
    check: Callable[[nn.Module], None] | None = None,
):
    """Build the model in eval mode and its example inputs, check it, then trace it.

    The example inputs are what ``sg.trace`` takes: a tuple of positional tensors, or a
    dict of keyword tensors (``hf:`` specs).
    """
    model, example = build_model(spec, shape, seed, progress)
    if check is not None:
        check(model)
    with progress.step("trace", "tracing…"):
        graph = sg.trace(model, example)
    return model, example, graph


def inputs_json(example_inputs: Any) -> list[dict[str, Any]]:
    """Name (None for a positional input), shape and dtype of every example input."""
    args, kwargs = split_inputs(example_inputs)
    tensors = tuple(t for t in args if isinstance(t, torch.Tensor))
    specs = input_specs(tensors, {k: t for k, t in kwargs.items() if isinstance(t, torch.Tensor)})
    return [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in specs]


def inputs_report(example: Any) -> dict[str, Any]:
    """The example inputs in a report: the first one's shape, and every one's name,
    shape and dtype."""
    inputs = inputs_json(example)
    return {"input_shape": inputs[0]["shape"] if inputs else [], "inputs": inputs}


def add_overwrite(parser: argparse.ArgumentParser, what: str = "files in --out") -> None:
    """The ``--overwrite`` flag: without it an existing output is refused."""
    parser.add_argument(
        "--overwrite", action="store_true", help=f"replace {what} (refused without it)"
    )


def add_timing_flags(parser: argparse.ArgumentParser, runs: int, what: str) -> None:
    """``--threads`` and ``--runs`` (``what`` the runs are), both positive integers."""
    parser.add_argument("--threads", type=_positive, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--runs", type=_positive, default=runs, help=f"{what} (default {runs})")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer; e.g. 1")
    return value


def check_out(out: Path, flag: str = "--out", file: bool = False, overwrite: bool = True) -> None:
    """Refuse a ``flag`` path that cannot become a writable directory (or, with ``file``, a
    file in a writable directory), before any work: also a symbolic link, and unless
    ``overwrite`` a directory that holds files (an existing file)."""
    if file and out.is_dir():
        raise UsageError(
            f"{flag} {out}: a directory is in the way; pass a file path, e.g. {out / 'plan.json'}"
        )
    if not file and out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out}: a file is in the way; pass a directory path")
    parent = out.parent if file else out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {out}: {parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag} {out}: {parent} is not writable; choose a directory you can write"
        )
    try:
        if file:
            check_output_file(out, overwrite)
        else:
            check_output_dir(out, overwrite)
    except OutputError as err:
        message = f"{flag}: {err}".replace("overwrite=True (--overwrite)", "--overwrite")
        raise OutputError(message) from None


def check_patterns(model: nn.Module, config: sg.PruneConfig) -> None:
    """A glob that matches no module is a typo: say so instead of silently slimming it."""
    names = [name for name, _ in model.named_modules() if name]
    for flag, patterns in (("--ignore", config.ignore), ("--override", config.overrides)):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                raise UsageError(
                    f"{flag} {pattern!r} matches no module of this model; module names look "
                    f"like {', '.join(names[:3])} (see 'slimgraph inspect --all')"
                )


def read_plan(path: Path, flag: str = "--plan") -> sg.PruningPlan:
    """The validated plan in ``path``; a bad file is one line naming ``flag`` and the path."""
    named = f"{flag} {path}" if flag else str(path)
    try:
        return sg.PruningPlan.model_validate_json(path.read_text())
    except OSError as err:
        raise UsageError(f"{named}: cannot read it ({err.strerror or err})") from err
    except (ValidationError, ValueError) as err:
        if not isinstance(err, ValidationError):  # not text: bytes that are not UTF-8
            raise UsageError(f"{named}: not a valid plan (not UTF-8 text)") from err
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "the file"
        raise UsageError(f"{named}: not a valid plan ({where}: {first['msg']})") from err


def load_weights_flag(model: nn.Module, path: Path, hint: str = "") -> None:
    """Load ``--weights path`` into ``model``; a file that is missing, corrupt or truncated,
    or weights that do not fit, are one line naming the flag (bad input, exit 2)."""
    try:
        load_weights(model, path)
    except (RuntimeError, OSError, ValueError, SafetensorError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise UsageError(f"--weights {path}: {first}{hint}") from err
    except SlimGraphError as err:  # refused by the reader: still the file's fault
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"--weights {path}: {err}") from err


def write_json(out: Path, data: BaseModel) -> None:
    """Write ``data`` (a plan, a latency model) as JSON to the file ``out`` (atomically;
    its directory made if missing)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, data.model_dump_json(indent=2))
    except OSError as err:
        raise UsageError(
            f"--out {out}: cannot write ({err.strerror or err}); choose another path"
        ) from err


def write_slim(
    out: Path, plan: sg.PruningPlan, slim: nn.Module, overwrite: bool = False
) -> dict[str, str]:
    """Write ``out/plan.json`` and ``out/model.safetensors`` (each atomically; with
    ``overwrite``, the files an earlier run left in ``out`` removed first); return their
    paths. A Hugging Face model is written by :func:`slimgraph.save` (its ``config.json``
    too), so the folder reloads with ``sg.load`` or, when the config describes the slim
    model, plain ``from_pretrained``."""
    files = {"plan": out / "plan.json", "weights": out / "model.safetensors"}
    try:
        check_out(out, overwrite=overwrite)
        prepare_output_dir(out, overwrite)
        write_text_atomic(files["plan"], plan.model_dump_json(indent=2))
        if hasattr(slim, "save_pretrained"):
            sg.save(slim, out, plan)
            files["config"] = out / "config.json"
        else:
            save_weights(slim, files["weights"], {"slimgraph.fingerprint": plan.fingerprint})
    except OSError as err:
        raise UsageError(
            f"--out {out}: cannot write ({err.strerror or err}); choose another directory"
        ) from err
    return {k: str(v) for k, v in files.items()}
