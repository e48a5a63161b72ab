"""Save a slim model so that it reloads, and reload it.

A Hugging Face model whose updated config describes it exactly reloads with plain
``from_pretrained``. When it cannot (layers slimmed differently under global scope; heads
pruned in a family whose config derives the head size from the hidden size), :func:`load`
rebuilds the original model from the config it was slimmed from (kept in
``config.json``), applies the saved plan, and loads the safetensors weights. No pickle
anywhere. :func:`save` lives in :mod:`slimgraph.io.hf_save` and is re-exported here.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from slimgraph._core.inputs import split_inputs, synthesize
from slimgraph.errors import LoadError, SlimGraphError, WeightsError
from slimgraph.graph.trace import trace
from slimgraph.io.hf_save import (
    PLAN_FILE,
    WEIGHTS_FILE,
    build_config,
    first_line,
    import_transformers,
    own_names,
    read_config,
    save,
)
from slimgraph.io.weights import ALIASES, load_weights
from slimgraph.resolve.plan import PruningPlan
from slimgraph.rewrite.apply import apply, without_blocks
from slimgraph.rewrite.hf_config import EXACT, SOURCE

__all__ = ["PLAN_FILE", "architecture", "load", "on_meta", "save"]


def load(directory: str | os.PathLike) -> nn.Module:
    """Reload a slim Hugging Face model saved with :func:`save` (or ``save_pretrained``).

    When its config describes it exactly, this is ``from_pretrained``. Otherwise the
    original architecture is built from the source config recorded at slimming time, the
    saved plan is applied to it, and the weights are loaded from ``model.safetensors``
    (under the model's own names, as :func:`save` writes them; a folder ``save_pretrained``
    wrote has its checkpoint names mapped back).
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
    data = read_config(directory)
    transformers = import_transformers()
    arch = architecture(transformers, directory, data)
    weights = directory / WEIGHTS_FILE
    if data.get(EXACT, True) or SOURCE not in data:
        if weights.is_file():
            meta = on_meta(arch, build_config(arch, directory, data))
            _check_fits(meta, weights, by_name=False)
        try:
            # safetensors only: a pytorch_model.bin is a pickle, which is never read
            return arch.from_pretrained(
                directory, local_files_only=True, use_safetensors=True
            ).eval()
        except Exception as err:
            raise LoadError(
                f"{directory}: {arch.__name__}.from_pretrained failed ({first_line(err)}); "
                "check that the folder holds the weights save_pretrained wrote"
            ) from err
    plan = _read_plan(directory)
    if not weights.is_file():
        raise LoadError(f"{directory} has no {WEIGHTS_FILE}; save the model again with sg.save")
    source = build_config(arch, directory, data[SOURCE])
    own = own_names(weights)  # sg.save wrote the model's own names: nothing to convert
    meta = on_meta(arch, copy.deepcopy(source))  # apply updates the config it is given
    count = sum(p.numel() for p in meta.parameters())
    if plan.params_before and count != plan.params_before:  # before tracing: it sizes arrays
        raise LoadError(
            f"{directory}: the source config in config.json builds a model of {count:,} "
            f"parameters, but {PLAN_FILE} was made for one of {plan.params_before:,}; "
            "nothing was allocated. Save the model again with sg.save"
        )
    try:
        _check_fits(apply(meta, plan, inplace=True), weights, rename=not own)
    except LoadError:
        raise
    except SlimGraphError:  # traces differently on the meta device (Falcon): size only
        _check_size(weights, plan.params_after)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = arch(source).eval()
    if plan.blocks:  # the plan's graph and cuts are of the model without them
        plan = without_blocks(model, plan)
    # traced with real weights: some models (Falcon) trace differently on the meta device
    inputs = synthesize(plan.inputs)
    graph = trace(model, inputs, head_dims=plan.head_dims, query_heads=plan.query_heads)
    if graph.fingerprint != plan.fingerprint:
        # a model that rebuilds parts of itself on its first forward (BigBird swaps its
        # block-sparse attention for full attention on short inputs) was slimmed after that
        # forward: run it once as it had run, and trace again
        args, kwargs = split_inputs(inputs)
        try:
            with torch.no_grad():
                model(*args, **kwargs)
        except Exception as err:
            raise LoadError(
                f"{directory}: the rebuilt model traces differently from the one the plan "
                f"was made for, and it does not run on the plan's inputs ({first_line(err)})"
            ) from err
        graph = trace(model, inputs, head_dims=plan.head_dims, query_heads=plan.query_heads)
    slim = apply(model, plan, graph=graph, inplace=True)
    if own:
        try:
            load_weights(slim, weights)
        except WeightsError as err:
            raise LoadError(f"{directory}: {err}; save the model again with sg.save") from err
        return slim.eval()
    try:  # a folder save_pretrained wrote (older sg.save): checkpoint names
        state = _model_names(slim, load_file(weights))
    except Exception as err:
        raise LoadError(f"{weights} cannot be read ({first_line(err)})") from err
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


def architecture(transformers: Any, directory: Path, data: dict[str, Any]) -> Any:
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
            f"{plan_path} is not a valid plan ({first_line(err)}); save the model again "
            "with sg.save(model, directory, plan)"
        ) from err


def on_meta(arch: Any, config: Any) -> nn.Module:
    """The architecture on the meta device: shapes without memory."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return arch(config)
    except Exception as err:
        raise LoadError(
            f"{arch.__name__} cannot be built from the saved config ({first_line(err)})"
        ) from err


def _check_fits(model: nn.Module, weights: Path, by_name: bool = True, rename: bool = True) -> None:
    """Refuse weights whose header does not match ``model``'s tensors: names and shapes
    (``by_name``), or only the total size, as ``from_pretrained`` may rename keys (ViT in
    transformers 5). ``rename``: the file holds checkpoint names, to be mapped back to the
    model's (GPT-NeoX); else the model's own, with tied names in the metadata. Only the
    header is read; nothing is allocated."""
    shapes = _header_shapes(weights)
    tensors = model.state_dict(keep_vars=True)
    unique = {id(t): t for t in tensors.values()}.values()  # a tied tensor is stored once
    needed, stored = sum(t.numel() for t in unique), sum(math.prod(s) for s in shapes.values())
    shapes = _model_names(model, shapes) if rename else shapes | _aliases(weights, shapes)
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
        raise LoadError(f"{weights} cannot be read as safetensors ({first_line(err)})") from err


def _aliases(weights: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the tied names :func:`~slimgraph.io.weights.save_weights` recorded
    in the metadata instead of storing them again (:func:`load_weights` checks the rest)."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            aliases = json.loads((f.metadata() or {}).get(ALIASES, "{}"))
        return {k: shapes[v] for k, v in aliases.items() if v in shapes}
    except Exception:  # malformed: load_weights names what is wrong
        return {}


def _check_size(weights: Path, numbers: int) -> None:
    """Refuse a weights file that holds fewer than ``numbers`` numbers (header only)."""
    stored = sum(math.prod(shape) for shape in _header_shapes(weights).values())
    if stored < numbers:
        raise LoadError(
            f"{weights} holds {stored:,} numbers but the saved plan keeps {numbers:,} "
            "parameters; nothing was allocated. Save the model again with sg.save"
        )


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
