"""Save a slim model so that it reloads, and reload it.

A Hugging Face model whose updated config describes it exactly reloads with plain
``from_pretrained``. When it cannot (layers slimmed differently under global scope; heads
pruned in a family whose config derives the head size from the hidden size), :func:`load`
rebuilds the original model from the config it was slimmed from (kept in
``config.json``), applies the saved plan, and loads the safetensors weights. No pickle
anywhere.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from slimgraph._core.files import check_output_dir, staged_files, write_text_atomic
from slimgraph._core.inputs import synthesize
from slimgraph.errors import LoadError, SlimGraphError
from slimgraph.graph.trace import trace
from slimgraph.io.weights import save_weights
from slimgraph.resolve.plan import PruningPlan
from slimgraph.rewrite.apply import apply
from slimgraph.rewrite.hf_config import EXACT, SOURCE

__all__ = ["PLAN_FILE", "load", "save"]

PLAN_FILE = "slimgraph_plan.json"
WEIGHTS_FILE = "model.safetensors"


def save(model: nn.Module, directory: str | os.PathLike, plan: Any = None) -> Path:
    """Save a slim model so that :func:`load` rebuilds it: weights, config and plan.

    Hugging Face models go through their own ``save_pretrained`` (``config.json`` and
    ``model.safetensors``); any other module's weights are written with
    :func:`slimgraph.save_weights`. ``plan`` (the :class:`~slimgraph.PruningPlan` that made
    the model) is written as ``slimgraph_plan.json``. Every file is written under a
    temporary name and renamed into place; a symbolic link is refused.
    """
    directory = check_output_dir(directory, overwrite=True)
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        with staged_files(directory) as stage, _quiet_progress():  # renamed into place
            model.save_pretrained(stage)
    else:
        save_weights(model, directory / "model.safetensors")
    if plan is not None:
        write_text_atomic(directory / PLAN_FILE, plan.model_dump_json(indent=2))
    return directory


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


def load(directory: str | os.PathLike) -> nn.Module:
    """Reload a slim Hugging Face model saved with :func:`save` (or ``save_pretrained``).

    When its config describes it exactly, this is ``from_pretrained``. Otherwise the
    original architecture is built from the source config recorded at slimming time, the
    saved plan is applied to it, and the weights are loaded from ``model.safetensors``.
    Either way the model is first built on the meta device and its shapes compared with
    the weights file's header, so a config that does not fit the weights (a vocabulary of
    10¹² tokens) is refused before any memory is allocated. The model comes back in eval
    mode. Needs transformers (``pip install "slimgraph[hf]"``); every failure is a
    :class:`~slimgraph.errors.LoadError`.

    >>> load("no/such/folder")
    Traceback (most recent call last):
    ...
    slimgraph.errors.LoadError: no/such/folder is not a directory; pass the folder sg.save wrote
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise LoadError(f"{directory} is not a directory; pass the folder sg.save wrote")
    data = _read_config(directory)
    transformers = _import_transformers()
    arch = _architecture(transformers, directory, data)
    weights = directory / WEIGHTS_FILE
    if data.get(EXACT, True) or SOURCE not in data:
        if weights.is_file():
            meta = _on_meta(arch, _config(transformers, directory, data))
            _check_fits(meta, weights, by_name=False)
        try:
            # safetensors only: a pytorch_model.bin is a pickle, which is never read
            return arch.from_pretrained(
                directory, local_files_only=True, use_safetensors=True
            ).eval()
        except Exception as err:
            raise LoadError(
                f"{directory}: {arch.__name__}.from_pretrained failed ({_first_line(err)}); "
                "check that the folder holds the weights save_pretrained wrote"
            ) from err
    plan = _read_plan(directory)
    if not weights.is_file():
        raise LoadError(f"{directory} has no {WEIGHTS_FILE}; save the model again with sg.save")
    source = _config(transformers, directory, data[SOURCE])
    meta = _on_meta(arch, copy.deepcopy(source))  # apply updates the config it is given
    count = sum(p.numel() for p in meta.parameters())
    if plan.params_before and count != plan.params_before:  # before tracing: it sizes arrays
        raise LoadError(
            f"{directory}: the source config in config.json builds a model of {count:,} "
            f"parameters, but {PLAN_FILE} was made for one of {plan.params_before:,}; "
            "nothing was allocated. Save the model again with sg.save"
        )
    try:
        _check_fits(apply(meta, plan, inplace=True), weights)
    except LoadError:
        raise
    except SlimGraphError:  # traces differently on the meta device (Falcon): size only
        _check_size(weights, plan.params_after)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = arch(source).eval()
    # traced with real weights: some models (Falcon) trace differently on the meta device
    graph = trace(
        model, synthesize(plan.inputs), head_dims=plan.head_dims, query_heads=plan.query_heads
    )
    slim = apply(model, plan, graph=graph, inplace=True)
    try:
        state = _model_names(slim, load_file(weights))
    except Exception as err:
        raise LoadError(f"{weights} cannot be read ({_first_line(err)})") from err
    missing, unexpected = slim.load_state_dict(state, strict=False)
    tensors = slim.state_dict(keep_vars=True)
    loaded = {id(tensors[k]) for k in state if k in tensors}
    untied = [k for k in missing if id(tensors[k]) not in loaded]  # tied names are not saved
    if unexpected or untied:
        raise LoadError(
            f"{directory}: the weights do not fit the rebuilt model (missing {untied[:3]}, "
            f"unexpected {list(unexpected)[:3]})"
        )
    return slim.eval()


def _read_config(directory: Path) -> dict[str, Any]:
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
    return data


def _import_transformers() -> Any:
    try:
        import transformers  # optional: only Hugging Face models come back through here
    except ImportError as err:
        raise LoadError(
            'sg.load rebuilds Hugging Face models and needs transformers: pip install "slimgraph[hf]"'
        ) from err
    return transformers


def _architecture(transformers: Any, directory: Path, data: dict[str, Any]) -> Any:
    """The model class ``config.json``'s ``architectures`` names."""
    names = data.get("architectures")
    name = names[0] if isinstance(names, list) and names else None
    arch = getattr(transformers, name, None) if isinstance(name, str) else None
    if not (isinstance(arch, type) and issubclass(arch, transformers.PreTrainedModel)):
        raise LoadError(
            f"{directory / 'config.json'}: architectures {names!r} names no model class of "
            f'transformers {transformers.__version__}; it should be e.g. ["LlamaForCausalLM"]'
        )
    return arch


def _config(transformers: Any, directory: Path, data: Any) -> Any:
    """A transformers config from a dict (``config.json`` or the recorded source config)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return transformers.AutoConfig.for_model(**data)
    except Exception as err:
        raise LoadError(
            f"{directory / 'config.json'}: the config does not load ({_first_line(err)}); "
            "save the model again with sg.save"
        ) from err


def _read_plan(directory: Path) -> PruningPlan:
    plan_path = directory / PLAN_FILE
    if not plan_path.is_file():
        raise LoadError(
            f"{directory}: the config cannot describe this slim model and {PLAN_FILE} is "
            "missing; save it with sg.save(model, directory, plan)"
        )
    try:
        return PruningPlan.model_validate_json(plan_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:  # pydantic's ValidationError
        raise LoadError(
            f"{plan_path} is not a valid plan ({_first_line(err)}); save the model again "
            "with sg.save(model, directory, plan)"
        ) from err


def _on_meta(arch: Any, config: Any) -> nn.Module:
    """The architecture on the meta device: shapes without memory."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return arch(config)
    except Exception as err:
        raise LoadError(
            f"{arch.__name__} cannot be built from the saved config ({_first_line(err)})"
        ) from err


def _check_fits(model: nn.Module, weights: Path, by_name: bool = True) -> None:
    """Refuse weights whose header does not match ``model``'s tensors: names and shapes
    (``by_name``), or only the total size, as ``from_pretrained`` may rename keys (ViT in
    transformers 5). Only the header is read; nothing is allocated."""
    shapes = _header_shapes(weights)
    tensors = model.state_dict(keep_vars=True)
    shapes = _model_names(model, shapes)  # checkpoint names back to the model's (GPT-NeoX)
    unique = {id(t): t for t in tensors.values()}.values()  # a tied tensor is stored once
    needed, stored = sum(t.numel() for t in unique), sum(math.prod(s) for s in shapes.values())
    if not by_name:
        if needed > stored:
            raise LoadError(
                f"{weights} holds {stored:,} numbers but the model its config.json builds "
                f"needs {needed:,}; the config does not fit the weights, so nothing was "
                "allocated. Save the model again with sg.save"
            )
        return
    loaded = {id(tensors[k]) for k in shapes if k in tensors}
    unexpected = [k for k in shapes if k not in tensors]
    missing = [k for k, t in tensors.items() if k not in shapes and id(t) not in loaded]
    wrong = [
        f"{k} {list(shapes[k])} in the file, {list(t.shape)} in the model"
        for k, t in tensors.items()
        if k in shapes and shapes[k] != tuple(t.shape)
    ]
    if missing or unexpected or wrong:
        raise LoadError(
            f"{weights} does not fit the model its saved config and plan build ({needed:,} "
            f"numbers, the file holds {stored:,}): missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shapes {wrong[:3]}; nothing was allocated. Save the "
            "model again with sg.save"
        )


def _header_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, from its header alone."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as err:
        raise LoadError(f"{weights} cannot be read as safetensors ({_first_line(err)})") from err


def _check_size(weights: Path, numbers: int) -> None:
    """Refuse a weights file that holds fewer than ``numbers`` numbers (header only)."""
    stored = sum(math.prod(shape) for shape in _header_shapes(weights).values())
    if stored < numbers:
        raise LoadError(
            f"{weights} holds {stored:,} numbers but the saved plan keeps {numbers:,} "
            "parameters; nothing was allocated. Save the model again with sg.save"
        )


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _model_names(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """``save_pretrained`` stores some weights under their checkpoint names (GPT-NeoX's
    ``lm_head`` as ``embed_out``): rename them back to the model's own names."""
    try:  # transformers 5 keeps the renaming in its loader; older ones do not rename
        from transformers.core_model_loading import revert_weight_conversion

        ours = model.state_dict()
        saved = revert_weight_conversion(model, dict(ours))
    except Exception:  # nothing to rename back
        return state
    names = {id(t): n for n, t in ours.items()}
    rename = {k: names[id(t)] for k, t in saved.items() if names.get(id(t), k) != k}
    return {rename.get(k, k): v for k, v in state.items()}
