"""Save a slim model so that it reloads, and reload it.

A Hugging Face model whose updated config describes it exactly reloads with plain
``from_pretrained``. When it cannot (layers slimmed differently under global scope; heads
pruned in a family whose config derives the head size from the hidden size), :func:`load`
rebuilds the original model from the config it was slimmed from (kept in
``config.json``), applies the saved plan, and loads the safetensors weights. No pickle
anywhere.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from slimgraph._core.inputs import synthesize
from slimgraph.errors import SlimGraphError
from slimgraph.graph.trace import trace
from slimgraph.io.weights import save_weights
from slimgraph.resolve.plan import PruningPlan
from slimgraph.rewrite.apply import apply
from slimgraph.rewrite.hf_config import EXACT, SOURCE

__all__ = ["PLAN_FILE", "load", "save"]

PLAN_FILE = "slimgraph_plan.json"


def save(model: nn.Module, directory: str | os.PathLike, plan: Any = None) -> Path:
    """Save a slim model so that :func:`load` rebuilds it: weights, config and plan.

    Hugging Face models go through their own ``save_pretrained`` (``config.json`` and
    ``model.safetensors``); any other module's weights are written with
    :func:`slimgraph.save_weights`. ``plan`` (the :class:`~slimgraph.PruningPlan` that made
    the model) is written as ``slimgraph_plan.json``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory)
    else:
        save_weights(model, directory / "model.safetensors")
    if plan is not None:
        (directory / PLAN_FILE).write_text(plan.model_dump_json(indent=2))
    return directory


def load(directory: str | os.PathLike) -> nn.Module:
    """Reload a slim Hugging Face model saved with :func:`save` (or ``save_pretrained``).

    When its config describes it exactly, this is ``from_pretrained``. Otherwise the
    original architecture is built from the source config recorded at slimming time, the
    saved plan is applied to it, and the weights are loaded from ``model.safetensors``.
    The model comes back in eval mode.
    """
    import transformers  # optional: only Hugging Face models come back through here

    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise SlimGraphError(f"{directory} has no config.json; save the model with sg.save")
    data = json.loads(config_path.read_text())
    arch = getattr(transformers, (data.get("architectures") or [""])[0], None)
    if arch is None:
        raise SlimGraphError(f"{config_path}: unknown architectures {data.get('architectures')}")
    if data.get(EXACT, True) or SOURCE not in data:
        return arch.from_pretrained(directory).eval()
    plan_path = directory / PLAN_FILE
    if not plan_path.is_file():
        raise SlimGraphError(
            f"{directory}: the config cannot describe this slim model and {PLAN_FILE} is "
            "missing; save it with sg.save(model, directory, plan)"
        )
    source = transformers.AutoConfig.for_model(**data[SOURCE])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = arch(source).eval()
    plan = PruningPlan.model_validate_json(plan_path.read_text())
    # traced with real weights: some models (Falcon) trace differently on the meta device
    graph = trace(
        model, synthesize(plan.inputs), head_dims=plan.head_dims, query_heads=plan.query_heads
    )
    slim = apply(model, plan, graph=graph, inplace=True)
    state = _model_names(slim, load_file(directory / "model.safetensors"))
    missing, unexpected = slim.load_state_dict(state, strict=False)
    tensors = slim.state_dict(keep_vars=True)
    loaded = {id(tensors[k]) for k in state if k in tensors}
    untied = [k for k in missing if id(tensors[k]) not in loaded]  # tied names are not saved
    if unexpected or untied:
        raise SlimGraphError(
            f"{directory}: the weights do not fit the rebuilt model (missing {untied[:3]}, "
            f"unexpected {list(unexpected)[:3]})"
        )
    return slim.eval()


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
