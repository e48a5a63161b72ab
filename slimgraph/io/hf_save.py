"""Write a slim model so that :func:`slimgraph.load` rebuilds it, and read its config back.

A Hugging Face model whose config describes it exactly is written by its own
``save_pretrained``, for plain ``from_pretrained``. One whose config cannot
(``slimgraph_config_exact`` false) is rebuilt by :func:`slimgraph.load` from the config it
was slimmed from and the plan, so its weights are written under the model's own
``state_dict`` names (:func:`~slimgraph.io.weights.save_weights`): ``save_pretrained``
may rename keys or split stacked expert weights per expert (transformers 5), which the
rebuilt model would then have to convert back.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import safe_open
from torch import nn

from slimgraph._core.files import check_output_dir, staged_files, write_text_atomic
from slimgraph._core.inputs import dtype_name
from slimgraph.errors import LoadError, OutputError
from slimgraph.io.weights import save_weights
from slimgraph.rewrite.hf_config import EXACT, SOURCE

__all__ = ["NAMES", "PLAN_FILE", "WEIGHTS_FILE", "save", "own_names"]

PLAN_FILE = "slimgraph_plan.json"
WEIGHTS_FILE = "model.safetensors"
# safetensors metadata key: "state_dict" when the keys are the model's own names (not
# the checkpoint names save_pretrained writes)
NAMES = "slimgraph.names"


def save(
    model: nn.Module,
    directory: str | os.PathLike,
    plan: Any = None,
    *,
    max_shard_size: int | str | None = None,
) -> Path:
    """Save a slim model so that :func:`load` rebuilds it: weights, config and plan.

    A Hugging Face model whose config describes it goes through its own
    ``save_pretrained`` (``config.json`` and ``model.safetensors``); one that reloads
    through its plan gets its config written the same way and its weights under its own
    names; any other module's weights are written with :func:`slimgraph.save_weights`.
    ``plan`` (the :class:`~slimgraph.PruningPlan` that made the model) is written as
    ``slimgraph_plan.json``. Every file is written under a temporary name and renamed into
    place; a symbolic link is refused. ``max_shard_size`` (bytes, or ``"2GB"``) splits the
    weights of a model saved by ``save_pretrained`` into shards named by
    ``model.safetensors.index.json``, as ``save_pretrained`` does; other models' weights
    are written whole, and asking to shard them is refused.

    >>> import tempfile, torch
    >>> folder = save(torch.nn.Linear(2, 2), tempfile.mkdtemp())
    >>> sorted(p.name for p in folder.iterdir())
    ['model.safetensors']
    """
    directory = check_output_dir(directory, overwrite=True)
    shardable = hasattr(model, "save_pretrained") and not _by_plan(model)
    if max_shard_size is not None and not shardable:
        raise OutputError(
            "max_shard_size splits weights that save_pretrained writes; this model's are "
            + ("written under its own names for sg.load" if _by_plan(model) else "written whole")
            + " to model.safetensors: save it without max_shard_size"
        )
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        with staged_files(directory) as stage, _quiet_progress():  # renamed into place
            if _by_plan(model):
                _save_config(model, stage)
                save_weights(model, stage / WEIGHTS_FILE, metadata={NAMES: "state_dict"})
            else:
                pretrained: Any = model  # a transformers PreTrainedModel
                shards = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
                pretrained.save_pretrained(stage, **shards)
            _check_config_reloads(stage, type(model))
    else:
        save_weights(model, directory / WEIGHTS_FILE)
    if plan is not None:
        write_text_atomic(directory / PLAN_FILE, plan.model_dump_json(indent=2))
    return directory


def _by_plan(model: nn.Module) -> bool:
    """Whether :func:`load` will rebuild ``model`` from its source config and plan (the
    same test it applies to ``config.json``)."""
    config = getattr(model, "config", None)
    return not getattr(config, EXACT, True) and getattr(config, SOURCE, None) is not None


def _save_config(model: Any, stage: Path) -> None:
    """What ``save_pretrained`` writes besides the weights: the config naming the model's
    class and dtype, and the generation config of a model that generates."""
    model.config.architectures = [type(model).__name__]
    model.config.dtype = dtype_name(model.dtype)
    model.config.save_pretrained(stage)
    if model.can_generate() and getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(stage)


def _check_config_reloads(stage: Path, arch: type) -> None:
    """Refuse to finish a save whose config (the source config, for a model that reloads
    through its plan) would not load back: nothing is renamed into place."""
    data = read_config(stage)
    source = data.get(SOURCE)
    try:
        build_config(arch, stage, source if _by_plan_data(data) else data)
    except LoadError as err:
        raise LoadError(
            f"sg.save wrote a config that does not load back ({err}); nothing was saved. "
            "Please report it with the model's family"
        ) from err


def _by_plan_data(data: dict[str, Any]) -> bool:
    """:func:`_by_plan` for a ``config.json`` read back."""
    return not data.get(EXACT, True) and isinstance(data.get(SOURCE), dict)


def own_names(weights: Path) -> bool:
    """Whether a safetensors file holds a model's own ``state_dict`` names (written by
    :func:`save` for a model that reloads through its plan); ``False`` for a file
    ``save_pretrained`` wrote, or one that cannot be read."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return (f.metadata() or {}).get(NAMES) == "state_dict"
    except Exception:  # unreadable: the caller's header check says why
        return False


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """transformers' own progress bars off: the caller's (the CLI's) report progress, and
    ``--json`` output stays the only output."""
    from transformers.utils import logging as hf_logging  # only HF models are saved here

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` as a dict, with the floats JSON cannot hold (written by transformers
    as ``{"__float__": "Infinity"}``) decoded back."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        found = sorted(p.name for p in directory.iterdir())[:6]
        raise LoadError(
            f"{directory} has no config.json (it holds {', '.join(found) or 'nothing'}); "
            "sg.load rebuilds Hugging Face models, whose config.json sg.save and "
            "save_pretrained write. For another model, build it, apply the plan "
            f"(sg.apply) and load the weights with sg.load_weights(model, '{WEIGHTS_FILE}')"
        )
    try:
        data = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LoadError(f"{config_path} is not valid JSON ({err}); save the model again") from err
    if not isinstance(data, dict):
        raise LoadError(f"{config_path} holds a {type(data).__name__}, not a config object")
    return _decode_floats(data)


def _decode_floats(value: Any) -> Any:
    """``{"__float__": "Infinity"}`` (and ``-Infinity``, ``NaN``) back to floats, anywhere
    in ``value``: Falcon-H1's ``time_step_limit`` is ``(0.0, inf)``."""
    if isinstance(value, dict):
        tag = value.get("__float__")
        if len(value) == 1 and tag in ("Infinity", "-Infinity", "NaN"):
            return float(tag)
        return {k: _decode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_floats(v) for v in value]
    return value


def import_transformers() -> Any:
    """transformers, or a :class:`~slimgraph.errors.LoadError` naming the extra."""
    try:
        import transformers  # optional: only Hugging Face models come back through here
    except ImportError as err:
        raise LoadError(
            'sg.load rebuilds Hugging Face models and needs transformers: pip install "slimgraph[hf]"'
        ) from err
    return transformers


def build_config(arch: Any, directory: Path, data: Any) -> Any:
    """A transformers config from a dict (``config.json`` or the recorded source config):
    of the class ``arch`` (the model class) takes when it is of that model type (a text
    sub-config, such as Emu3's, has no entry in ``AutoConfig``), else of ``AutoConfig``'s."""
    own: Any = getattr(arch, "config_class", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(data, dict) and data.get("model_type") == getattr(
                own, "model_type", None
            ):
                return own(**{k: v for k, v in data.items() if k != "model_type"})
            return import_transformers().AutoConfig.for_model(**data)
    except Exception as err:
        raise LoadError(
            f"{directory / 'config.json'}: the config does not load ({first_line(err)}); "
            "save the model again with sg.save"
        ) from err


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``: enough to say what failed."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
