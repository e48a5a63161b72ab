"""Hugging Face configs that describe the slim model.

After :func:`slimgraph.apply`, :func:`update_configs` writes the slim widths into
``model.config`` (and every copy of it inside the model, such as T5's decoder config), and
checks the result: a model built afresh from the new config must have exactly the slim
model's parameter shapes and attention heads. The fields come from the table in
``rules/configs.toml`` when it has the family and describes the slim model; otherwise
:func:`~slimgraph.rewrite.config_solver.solve_config` derives them from the model itself
(no table needed). When the config describes the model, plain
``save_pretrained`` / ``from_pretrained`` reload the slim model. When it cannot (layers
slimmed differently under global scope; heads pruned in a family whose config derives the
head size from the hidden size), :func:`slimgraph.save` and :func:`slimgraph.load` reload
it instead (:mod:`slimgraph.io.hf`).
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import inspect
import re
import types
import warnings
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from slimgraph._core.expr import Absent, evaluate
from slimgraph.graph.ruletable import RuleTables, load_rules
from slimgraph.rewrite.config_solver import signature, solve_config

__all__ = [
    "EXACT",
    "SOURCE",
    "ConfigUpdate",
    "config_describes",
    "numbers",
    "read_ints",
    "remember_source",
    "shapes",
    "update_configs",
]

SOURCE = "slimgraph_source_config"  # config attribute: the config the model was slimmed from
EXACT = "slimgraph_config_exact"  # config attribute: a fresh model from it has our shapes


def remember_source(model: nn.Module, original: nn.Module | None = None) -> None:
    """Record ``original``'s config (``model``'s own by default) on ``model.config`` as
    the config it is slimmed from, which :func:`slimgraph.load` rebuilds the model from
    before it applies the plan; the first one recorded stays."""
    config = getattr(model, "config", None)
    source = getattr(getattr(original or model, "config", None), "to_dict", None)
    if config is not None and source is not None and not hasattr(config, SOURCE):
        setattr(config, SOURCE, {k: v for k, v in source().items() if k != SOURCE})


class ConfigUpdate(BaseModel):
    """What :func:`update_configs` wrote: ``fields`` set, ``differing`` per-layer values
    that no single field can hold, and whether the config now builds the slim shapes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_type: str
    fields: dict[str, Any]
    differing: dict[str, list[Any]]
    exact: bool
    by: str = "table"  # "table" (rules/configs.toml), "solver" (derived) or "none"


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
    if not model_type:
        return None
    rules = rules or load_rules()
    rule = rules.config_rule(model_type)
    fields: dict[str, Any] = {}
    differing: dict[str, list[Any]] = {}
    if rule is not None:
        fields, differing = _table_fields(model, rule.fields)
    elif not verify or original is None:
        return None  # nothing to derive the fields from
    same = [c for c in _configs(model) if getattr(c, "model_type", None) == model_type]
    valid = all([_set_fields(c, fields) for c in same])
    exact = verify and valid and not differing and config_describes(model, rules)
    by = "table" if rule is not None else "none"
    if verify and original is not None and not (exact and rule is not None):
        # the table is an override; what it cannot describe (or does not list) the solver
        # derives, from the original config (so a second call reports the same fields)
        solved = solve_config(model, original, rules)
        if solved is not None:
            if _apply_solved(same, original.config, fields, solved) and config_describes(
                model, rules
            ):
                fields, differing, exact, valid, by = solved, {}, True, True, "solver"
            else:  # back to what the table said
                _apply_solved(same, original.config, solved, fields)
    if verify and original is not None:
        remember_source(model, original)
    exact = exact and _auto_reloads(model)
    setattr(config, EXACT, exact)
    return ConfigUpdate(
        model_type=model_type,
        fields=fields if valid else {},
        differing=differing,
        exact=exact,
        by=by,
    )


def _auto_reloads(model: nn.Module) -> bool:
    """Whether transformers' auto classes bring ``model`` back from its config: the config's
    ``model_type`` names its class in ``AutoConfig``, and some auto model mapping (causal
    LM, masked LM, ...) maps that class to the model's. Emu3's causal LM holds its text
    sub-config, which ``AutoModelForCausalLM.from_pretrained`` does not map to a model, so
    it reloads through :func:`slimgraph.load` instead."""
    try:  # transformers: only its models have a config with a model_type
        from transformers.models.auto import configuration_auto, modeling_auto
    except ImportError:
        return True
    config: Any = model.config
    try:  # a lazy mapping: get() does not import
        if configuration_auto.CONFIG_MAPPING[config.model_type] is not type(config):
            return False
    except Exception:  # KeyError: a model type AutoConfig does not know
        return False
    mappings = [m for n, m in vars(modeling_auto).items() if re.fullmatch(r"MODEL\w*_MAPPING", n)]
    return any(type(model) in _mapped(m, type(config)) for m in mappings)


def _mapped(mapping: Any, config_class: type) -> list[Any]:
    """The model classes an auto mapping gives ``config_class`` (none when it has none)."""
    try:
        found = mapping[config_class]
    except Exception:  # not in this mapping (KeyError), or its module does not import
        return []
    return list(found) if isinstance(found, (list, tuple)) else [found]


def _table_fields(
    model: nn.Module, specs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The fields of a configs.toml entry: one value, or the differing per-layer values."""
    modules = dict(model.named_modules())
    fields: dict[str, Any] = {}
    differing: dict[str, list[Any]] = {}
    for field, spec in specs.items():
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
    return fields, differing


def _apply_solved(
    configs: list[Any], source: Any, old: dict[str, Any], new: dict[str, Any]
) -> bool:
    """Replace ``old`` fields by ``new`` ones: those of ``old`` that ``new`` does not set
    go back to the source config's values (or away when the source lacks them)."""
    ok = True
    for config in configs:
        for field in old.keys() - new.keys():
            if hasattr(source, field):
                setattr(config, field, getattr(source, field))
            elif field in vars(config):
                delattr(config, field)
        ok &= _set_fields(config, new)
    return ok


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


def config_describes(model: nn.Module, rules: RuleTables | None = None) -> bool:
    """Whether ``type(model)(model.config)`` rebuilds ``model``: the same parameter and
    buffer shapes, the same head counts and sizes in attention modules, the same floats
    held by the modules (scales, epsilons), the same ints their forwards read, and the same
    values in the buffers that are not saved but computed from the config (rotary
    ``inv_freq``, Gemma's ``embed_scale``), which a reload recomputes. When it does, the
    root's own forward-read ints are set to the rebuilt model's (see :func:`_stale_root_ints`).

    The fresh model is built on the meta device; only the modules that own such buffers
    are materialised and initialised by the model's own ``_init_weights``.
    """
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh = type(model)(copy.deepcopy(model.config))
    except Exception:  # the config no longer builds a model at all: not a description
        return False
    if shapes(fresh) != shapes(model) or signature(fresh, rules) != signature(model, rules):
        return False  # signature: also the heads that the attention modules split into
    root = _stale_root_ints(model, fresh)
    if numbers(fresh) != numbers(model) or root is None:
        return False  # e.g. BioGPT's embed_scale = sqrt(hidden_size): the slim model keeps
        # the original scale, a model rebuilt from the new hidden size would not; or a
        # head size its forward divides by (RemBERT's sqrt(attention_head_size))
    if not _computed_buffers_match(model, fresh):
        return False
    for name, value in root.items():
        setattr(model, name, value)
    return True


def _computed_buffers_match(model: nn.Module, fresh: nn.Module) -> bool:
    """Whether the buffers computed from the config (not saved) have ``model``'s values."""
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


def numbers(model: nn.Module) -> dict[str, float | tuple[float, ...]]:
    """Module path and attribute -> value of every public float (or tuple of floats) that
    the modules hold outside their tensors: scales a reload recomputes from the config.

    Integers are left out: a stale width (Llama's ``mlp.intermediate_size``) is never read
    once the weights are sliced, and one that shapes a tensor fails the shape check.
    """
    found: dict[str, Any] = {}
    for path, module in model.named_modules():
        for name, value in vars(module).items():
            if name.startswith("_") or name == "training" or isinstance(value, bool):
                continue
            if isinstance(value, float) or (
                isinstance(value, tuple) and value and all(isinstance(v, float) for v in value)
            ):
                found[f"{path}.{name}"] = value
    return found


def _stale_root_ints(model: nn.Module, fresh: nn.Module) -> dict[str, int] | None:
    """The root's forward-read ints that differ from ``fresh``'s (Mixtral's expert count
    for its auxiliary loss), to be set to ``fresh``'s: the root holds no layer of its own,
    and the config describes every layer. ``None`` when an int of any other module
    differs: the config computes that layer otherwise."""
    ints, fresh_ints = read_ints(model), read_ints(fresh)
    stale = {k for k in ints.keys() | fresh_ints.keys() if ints.get(k) != fresh_ints.get(k)}
    if any(not k.startswith(".") or k not in fresh_ints or k not in ints for k in stale):
        return None
    return {key[1:]: fresh_ints[key] for key in stale}


def read_ints(model: nn.Module) -> dict[str, int]:
    """Module path and attribute -> value of every int attribute that the module's own
    ``forward`` names: widths its code computes with (a head size it views by or scales
    by), which a reload recomputes from the config. Ints that no ``forward`` reads (a
    stale ``intermediate_size``) are left out, as in :func:`numbers`.

    >>> from torch import nn
    >>> class Heads(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.head_size, self.unused = 16, 3
    ...     def forward(self, x):
    ...         return x.view(-1, self.head_size) / self.head_size**0.5
    >>> read_ints(nn.Sequential(Heads()))
    {'0.head_size': 16}
    """
    found: dict[str, int] = {}
    for path, module in model.named_modules():
        names = _names_read_by(getattr(type(module), "forward", None))
        for name, value in vars(module).items():
            if name in names and type(value) is int:
                found[f"{path}.{name}"] = value
    return found


@functools.cache
def _names_read_by(forward: Any) -> frozenset[str]:
    """The attribute and global names that ``forward`` (and the functions defined in it)
    name; empty when it has no Python code (a builtin, a C++ extension)."""
    code = getattr(inspect.unwrap(forward), "__code__", None) if callable(forward) else None
    names: set[str] = set()
    stack = [code] if isinstance(code, types.CodeType) else []
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return frozenset(names)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter and buffer (saved or not)."""
    found = {n: tuple(t.shape) for n, t in model.named_parameters()}
    return found | {n: tuple(t.shape) for n, t in model.named_buffers()}
