"""Derive the config fields that describe a slim Hugging Face model, without a table.

A model's *signature* is every parameter and buffer dim plus every module attribute that
``rules/modules.toml`` keeps in step with the tensors (heads, head sizes). The solver builds
the original architecture on the meta device with one config field perturbed at a time
(doubled, or halved when doubling does not build) and sees which signature entries move:
a field matters only if it moves an entry that slimming changed. Each moved entry gives a
linear estimate of the field's new value (``size = a * field + b``); the estimates are
ranked by how many entries agree, and combinations of them, best first, are built until one
reproduces the slim signature exactly. Fields that interact (a head size derived from the
hidden size and the number of heads) are settled by that search, not by formulas.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections import Counter
from typing import Any, cast

import torch
from torch import nn

from slimgraph.graph.ruletable import RuleTables, load_rules

__all__ = ["signature", "solve_config"]

Signature = dict[str, float]

_SKIP = ("_", "transformers_version")  # bookkeeping, never a width
_NONE_PROBES = (16, 32)  # a field left unset (None) is tried at these two widths


def signature(model: nn.Module, rules: RuleTables | None = None) -> Signature:
    """Every tensor dim (``"name:dim"``) and every numeric module attribute that the module
    rules keep in step with the tensors (``"module@attr"``) on modules that own no tensor
    of their own (attention blocks: their heads are not visible in any shape).

    >>> from torch import nn
    >>> signature(nn.Linear(3, 2))
    {'weight:0': 2, 'weight:1': 3, 'bias:0': 2}
    """
    rules = rules or load_rules()
    found: Signature = {}
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, tensor in tensors.items():
        for dim, size in enumerate(tensor.shape):
            found[f"{name}:{dim}"] = size
    for name, module in model.named_modules():
        rule = rules.module_rule(module)
        attrs: list[str] = list(rule.attrs) if rule is not None else []
        if next(module.parameters(recurse=False), None) is not None:
            # its tensors' shapes say it (a tied embedding keeps a stale dim), except
            # what no shape shows
            attrs = rule.shapeless if rule is not None else []
        for attr in attrs:
            value = getattr(module, attr, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found[f"{name}@{attr}"] = value
    return found


def _build(cls: type, config: Any, fields: dict[str, Any]) -> nn.Module | None:
    """``cls(config)`` with ``fields`` set, on the meta device; None when that config is
    rejected or does not build."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            changed = copy.deepcopy(config)
            for field, value in fields.items():
                setattr(changed, field, value)
            return cls(changed)
    except Exception:  # the perturbed config is not valid for this architecture
        return None


def _read_but_unset(cls: type, config: Any) -> list[str]:
    """Config attributes that building the model asks for but the config does not set
    (``getattr(config, "head_dim", hidden // heads)``): fields a slim model may need."""
    missed: list[str] = []
    parent = getattr(type(config), "__getattr__", None)

    def record(self: Any, name: str) -> Any:
        missed.append(name)
        if parent is not None:
            return parent(self, name)
        raise AttributeError(name)

    recorder = copy.deepcopy(config)
    try:
        recorder.__class__ = type(type(config).__name__, (type(config),), {"__getattr__": record})
    except TypeError:  # a config class that cannot be subclassed: probe its own fields only
        return []
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cls(recorder)
        except Exception:  # the recorder changed nothing the build depends on
            return []
    return [n for n in dict.fromkeys(missed) if not n.startswith("_")]


def _readable(config: Any, field: str) -> bool:
    """Whether ``config.field`` reads without an error other than its absence: a field that
    a heterogeneous config holds per layer refuses a global read (transformers'
    ``AmbiguousGlobalPerLayerAttributeError``), so one value cannot describe it."""
    try:
        getattr(config, field, None)
    except Exception:  # the config refuses the read: not a field the solver can set
        return False
    return True


def _probe(
    cls: type, config: Any, fields: list[str], value: Any, origin: Signature, rules: RuleTables
) -> list[tuple[float, Signature]]:
    """Two (value, signature) points with ``fields`` set to the value, or [] when they
    cannot be probed or change the structure (the number of layers, experts)."""
    if value is None:
        trials: tuple[int, ...] = _NONE_PROBES
    else:
        trials = (2 * value, value // 2) if value > 1 else (2 * value,)
    points = [] if value is None else [(float(value), origin)]
    for trial in trials:
        built = _build(cls, config, dict.fromkeys(fields, trial))
        if built is None:
            continue
        found = signature(built, rules)
        if found.keys() != origin.keys():
            return []  # names appear or vanish: a count of layers, not a width
        points.append((float(trial), found))
        if len(points) == 2:
            return points
    return []


def _votes(
    points: list[tuple[float, Signature]], target: Signature, changed: set[str]
) -> Counter[int] | None:
    """Integer field values that the moved entries point to, or None when no changed entry
    moves with this field."""
    (x1, s1), (x2, s2) = points
    moved = [k for k in s1 if s1[k] != s2[k]]
    if not changed.intersection(moved):
        return None
    votes: Counter[int] = Counter()
    for key in moved:
        slope = (s2[key] - s1[key]) / (x2 - x1)
        estimate = x1 + (target[key] - s1[key]) / slope
        if estimate > 0 and abs(estimate - round(estimate)) < 1e-9:
            votes[round(estimate)] += 1
    return votes


def _ratios(origin: Signature, target: Signature, changed: set[str]) -> Counter[float]:
    """How much the changed entries shrank (new / old), with how many shrank so: fields
    that interact (a head size of hidden / heads) keep the ratio their widths were cut by,
    which a linear estimate made one field at a time misses."""
    return Counter(target[k] / origin[k] for k in changed if origin[k])


def _candidates(value: Any, votes: Counter[int], ratios: Counter[float], width: int) -> list[Any]:
    """The field's likely new values, best first; the current value comes last."""
    score: Counter[int] = Counter(votes)
    for ratio, count in ratios.items():
        scaled = value * ratio if isinstance(value, int) else None
        if scaled is not None and scaled >= 1 and abs(scaled - round(scaled)) < 1e-9:
            score[round(scaled)] += count
    ranked = [v for v, _ in score.most_common() if v != value][: width - 1]
    return [*ranked, value]


def solve_config(
    slim: nn.Module,
    original: nn.Module,
    rules: RuleTables | None = None,
    budget: int = 64,
    width: int = 4,
) -> dict[str, Any] | None:
    """Config fields that make ``type(slim)(config)`` rebuild ``slim``'s signature, starting
    from ``original.config``; ``{}`` when nothing changed, None when no combination of at
    most ``width`` candidates per field, ``budget`` builds in all, reproduces it (widths that
    differ per layer in a config with one field for all layers, head sizes that the config
    derives from other fields).
    """
    rules = rules or load_rules()
    cls, base = type(slim), cast(Any, original).config
    start = _build(cls, base, {})
    if start is None:
        return None
    origin, target = signature(start, rules), signature(slim, rules)
    if origin.keys() != target.keys():
        return None  # layers or modules differ: no width field explains that
    changed = {k for k in target if target[k] != origin[k]}
    if not changed:
        return {}
    ratios = _ratios(origin, target, changed)
    candidates: dict[str, list[Any]] = {}
    structural: dict[Any, list[str]] = {}
    tied: dict[str, str] = {}  # field -> the field whose value it takes
    fields = base.to_dict() | dict.fromkeys(_read_but_unset(cls, base))
    for field, value in fields.items():
        if field.startswith(_SKIP) or isinstance(value, bool) or not _readable(base, field):
            continue
        if not (value is None or (isinstance(value, int) and value > 0)):
            continue
        points = _probe(cls, base, [field], value, origin, rules)
        if not points and value is not None:
            structural.setdefault(value, []).append(field)
        votes = _votes(points, target, changed) if points else None
        if votes is not None:
            candidates[field] = _candidates(value, votes, ratios, width)
    # fields that only move together (OPT's word_embed_proj_dim and hidden_size: a
    # projection appears when they differ) are probed and set as one
    for value, group in structural.items():
        points = _probe(cls, base, group, value, origin, rules) if len(group) > 1 else []
        votes = _votes(points, target, changed) if points else None
        if votes is not None:
            candidates[group[0]] = _candidates(value, votes, ratios, width)
            tied |= dict.fromkeys(group[1:], group[0])
    if not candidates:
        return None
    names = list(candidates)
    combos = sorted(
        itertools.product(*(range(len(candidates[n])) for n in names)), key=lambda c: sum(c)
    )
    for combo in combos[:budget]:
        fields = {n: candidates[n][i] for n, i in zip(names, combo)}
        fields |= {s: fields[f] for s, f in tied.items()}
        fields = {n: v for n, v in fields.items() if v != getattr(base, n, None)}
        built = _build(cls, base, fields)
        if built is not None and signature(built, rules) == target:
            return _fewest(cls, base, fields, target, rules)
    return None


def _fewest(
    cls: type, config: Any, fields: dict[str, Any], target: Signature, rules: RuleTables
) -> dict[str, Any]:
    """Drop the fields that the config derives anyway (an unset inner width of
    ``2 * width``), so that it stays as close to the original as it can."""
    for field in list(fields):
        fewer = {n: v for n, v in fields.items() if n != field}
        built = _build(cls, config, fewer)
        if built is not None and signature(built, rules) == target:
            fields = fewer
    return fields
