"""Hugging Face configs that describe the slim model.

After :func:`slimgraph.apply`, :func:`update_configs` writes the slim widths into
``model.config`` (and every copy of it inside the model, such as T5's decoder config) from
the table in ``rules/configs.toml``, and checks the result: a model built afresh from the
new config must have exactly the slim model's parameter shapes. When it does, plain
``save_pretrained`` / ``from_pretrained`` reload the slim model. When it cannot (layers
slimmed differently under global scope; heads pruned in a family whose config derives the
head size from the hidden size), :func:`slimgraph.save` and :func:`slimgraph.load` reload
it instead (:mod:`slimgraph.io.hf`).
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from slimgraph._core.expr import Absent, evaluate
from slimgraph.graph.ruletable import RuleTables, load_rules

__all__ = ["EXACT", "SOURCE", "ConfigUpdate", "shapes", "update_configs"]

SOURCE = "slimgraph_source_config"  # config attribute: the config the model was slimmed from
EXACT = "slimgraph_config_exact"  # config attribute: a fresh model from it has our shapes


class ConfigUpdate(BaseModel):
    """What :func:`update_configs` wrote: ``fields`` set, ``differing`` per-layer values
    that no single field can hold, and whether the config now builds the slim shapes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_type: str
    fields: dict[str, Any]
    differing: dict[str, list[Any]]
    exact: bool


def _configs(model: nn.Module) -> list[Any]:
    """Every distinct config object held by the model's modules, the root's first."""
    found: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            found.setdefault(id(config), config)
    return list(found.values())


def update_configs(
    model: nn.Module,
    original: nn.Module | None = None,
    rules: RuleTables | None = None,
    verify: bool = True,
) -> ConfigUpdate | None:
    """Write the slim widths into ``model.config``; ``None`` for a model without one.

    ``original`` is the model before slimming: its config is kept in the new one (as
    ``slimgraph_source_config``) so that :func:`load` can rebuild it. ``verify=False`` skips building a fresh model to compare shapes (``exact`` is then
    False): for dry runs, where only the forward pass matters.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    rule = (rules or load_rules()).config_rule(model_type) if model_type else None
    if rule is None:
        return None
    modules = dict(model.named_modules())
    fields: dict[str, Any] = {}
    differing: dict[str, list[Any]] = {}
    for field, spec in rule.fields.items():
        values = []
        for name, module in modules.items():
            if fnmatch.fnmatchcase(name, spec.at):
                try:
                    values.append(evaluate(spec.value, module, module))
                except Absent:
                    continue
        if len(set(values)) == 1:
            fields[field] = values[0]
        elif values:
            differing[field] = values
    source = getattr(getattr(original, "config", None), "to_dict", None)
    valid = True
    for c in _configs(model):
        if getattr(c, "model_type", None) == model_type:
            valid &= _set_fields(c, fields)
    exact = verify and valid and not differing and _fresh_shapes_match(model)
    if verify and source is not None and not hasattr(config, SOURCE):
        setattr(config, SOURCE, {k: v for k, v in source().items() if k != SOURCE})
    setattr(config, EXACT, exact)
    return ConfigUpdate(
        model_type=model_type, fields=fields if valid else {}, differing=differing, exact=exact
    )


def _set_fields(config: Any, fields: dict[str, Any]) -> bool:
    """Set ``fields`` unless the config class rejects the result (then leave it as it was)."""
    before = {f: getattr(config, f) for f in fields if hasattr(config, f)}
    for field, value in fields.items():
        setattr(config, field, value)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            type(config).from_dict(config.to_dict())
    except Exception:  # e.g. "hidden size is not a multiple of the number of heads"
        for field in fields:
            if field in before:
                setattr(config, field, before[field])
            else:
                delattr(config, field)
        return False
    return True


def _fresh_shapes_match(model: nn.Module) -> bool:
    """Whether ``type(model)(model.config)`` rebuilds ``model``: the same parameter and
    buffer shapes, and the same values in the buffers that are not saved but computed from
    the config (rotary ``inv_freq``, Gemma's ``embed_scale``), which a reload recomputes.

    The fresh model is built on the meta device; only the modules that own such buffers
    are materialised and initialised by the model's own ``_init_weights``.
    """
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh = type(model)(copy.deepcopy(model.config))
    except Exception:  # the config no longer builds a model at all: not a description
        return False
    if shapes(fresh) != shapes(model):
        return False
    computed = {n for n, _ in model.named_buffers()} - set(model.state_dict())
    if not computed:
        return True
    init = getattr(fresh, "_init_weights", None)
    owners = {name.rpartition(".")[0] for name in computed}
    modules = dict(fresh.named_modules())
    try:
        with torch.no_grad():
            for owner in owners:
                modules[owner].to_empty(device="cpu", recurse=False)
                if init is not None:
                    init(modules[owner])
    except Exception:  # cannot recompute them: do not promise a reload
        return False
    mine, theirs = dict(model.named_buffers()), dict(fresh.named_buffers())
    return all(  # a model on the meta device (sg.load's size check) has no values to match
        not theirs[n].is_meta
        and (mine[n].is_meta or torch.equal(theirs[n].to(mine[n].device), mine[n]))
        for n in computed
    )


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter and buffer (saved or not)."""
    found = {n: tuple(t.shape) for n, t in model.named_parameters()}
    return found | {n: tuple(t.shape) for n, t in model.named_buffers()}
