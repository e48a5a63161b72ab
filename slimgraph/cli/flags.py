"""The planning flags, generated from the fields of :class:`~slimgraph.PruneConfig`.

A field ``round_to`` becomes ``--round-to``: its type (or ``Literal`` choices) is the
flag's type, its default the flag's default, its description the flag's help. A new
PruneConfig field therefore gets its flag, its parsing and its place in validation errors
without an edit here; only a field the command line must not offer goes in ``EXCLUDED``,
and the presentation of a flag (metavar, wording of a hint) in ``PRESENTATION``.

>>> parser = argparse.ArgumentParser()
>>> add_config_flags(parser)
>>> config_from_args(parser.parse_args(["--round-to", "8", "--ignore", "fc"])).round_to
8
>>> flag_name("max_ratio"), flag_name("overrides")
('--max-ratio', '--override')
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from slimgraph.criteria.config import PruneConfig
from slimgraph.errors import UsageError

__all__ = [
    "EXCLUDED",
    "PRESENTATION",
    "Presentation",
    "add_config_flags",
    "config_fields",
    "config_from_args",
    "config_message",
    "flag_name",
]

# Fields without a flag, each with the reason.
EXCLUDED = frozenset(
    {
        # Folds calibration means into biases: it needs calibration inputs, which the command
        # line does not take (its criteria are refused for the same reason).
        "bias_compensation",
        # A measured model, not a value: read from --latency-model FILE.json or measured
        # (slimgraph.cli.commands.latency).
        "latency_model",
    }
)


@dataclass(frozen=True)
class Presentation:
    """How the command line shows one field, where the generated default does not fit.

    ``flag``: another flag name; for a field that defaults to True, the flag that sets it to
    False. ``help``: instead of the description. ``metavar``: the value's placeholder.
    ``example``: a valid value, for the error of a malformed ``KEY=VALUE``. ``hint``: what
    a valid value looks like, appended to the validation error of the field.
    """

    flag: str | None = None
    help: str | None = None
    metavar: str | None = None
    example: str | None = None
    hint: str = ""


PRESENTATION = {
    "ratio": Presentation(hint="use a fraction in [0, 1), e.g. 0.5"),
    "scope": Presentation(hint="use local, global or isomorphic"),
    "round_to": Presentation(metavar="N", hint="use a positive integer, e.g. 8"),
    "min_keep": Presentation(metavar="N", hint="use a positive integer"),
    "ignore": Presentation(  # nargs="+" would take SPEC as one more glob
        metavar="GLOB",
        help="leave modules matching these globs alone, e.g. 'layer4.*' (put SPEC first)",
    ),
    "overrides": Presentation(
        flag="--override",
        metavar="GLOB=RATIO",
        help="another ratio for matching modules",
        example="layer4.*=0.25",
        hint="use GLOB=RATIO with RATIO in [0, 1)",
    ),
    "target_macs": Presentation(metavar="FRACTION", hint="use a fraction in (0, 1], e.g. 0.5"),
    "target_params": Presentation(metavar="FRACTION", hint="use a fraction in (0, 1], e.g. 0.5"),
    "target_latency": Presentation(
        metavar="FRACTION",
        help="fraction of the model's latency KEPT, as --latency-model predicts it (default: "
        "the model profiled in ONNX Runtime)",
        hint="use a fraction in (0, 1], e.g. 0.5",
    ),
    "max_ratio": Presentation(
        metavar="FRACTION", hint="use a fraction in (0, 1), at least --ratio"
    ),
    "prune_residual": Presentation(  # the flag switches the field off: worded for the flag
        flag="--keep-residual", help="leave residual-stream widths alone (prune_residual=False)"
    ),
    "seed": Presentation(help="seed of the input and of 'random'", hint="use an integer"),
}


def config_fields(config: type[BaseModel] = PruneConfig) -> dict[str, FieldInfo]:
    """The fields of ``config`` that get a flag, in declaration order."""
    return {name: f for name, f in config.model_fields.items() if name not in EXCLUDED}


def flag_name(field: str) -> str:
    """The flag of ``field``: ``--kebab-name`` unless :data:`PRESENTATION` names another."""
    shown = PRESENTATION.get(field)
    return (shown and shown.flag) or "--" + field.replace("_", "-")


def add_config_flags(
    parser: argparse.ArgumentParser, config: type[BaseModel] = PruneConfig
) -> None:
    """Add one flag per field of ``config`` (but :data:`EXCLUDED`) to ``parser``; a field
    of a type with no flag form is refused, so a new one is noticed."""
    for name, field in config_fields(config).items():
        shown = PRESENTATION.get(name, Presentation())
        kind, default = _kind(field.annotation), field.get_default(call_default_factory=True)
        help_text = shown.help or field.description or name.replace("_", " ")
        if kind is not bool and default not in (None, [], {}, ()):
            help_text += f" (default: {default})"
        # argparse formats help with %: a description's own % must stay literal
        common: dict[str, Any] = {"dest": name, "help": help_text.replace("%", "%%")}
        if shown.metavar:
            common["metavar"] = shown.metavar
        if kind is bool:  # the flag sets the opposite of the default
            flag = flag_name(name)
            if default and not shown.flag:
                flag = "--no-" + flag.removeprefix("--")
            action = "store_false" if default else "store_true"
            parser.add_argument(flag, action=action, default=default, **common)
        elif isinstance(kind, tuple):  # Literal choices
            choices = list(kind)
            parser.add_argument(
                flag_name(name), type=type(choices[0]), choices=choices, default=default, **common
            )
        elif kind in (int, float, str):
            parser.add_argument(flag_name(name), type=kind, default=default, **common)
        elif kind == "list":  # every value of every use, appended
            parser.add_argument(
                flag_name(name), nargs="+", action="extend", default=list(default), **common
            )
        elif kind == "dict":  # KEY=VALUE, once per use
            value = typing.get_args(field.annotation)[1]
            parser.add_argument(
                flag_name(name),
                type=_pair_parser(value, shown.metavar or "KEY=VALUE", shown.example),
                action="append",
                default=list(default.items()),
                **common,
            )
        else:
            raise TypeError(
                f"{config.__name__}.{name}: {field.annotation} has no command-line form; teach "
                "slimgraph.cli.flags this type, or add the field to EXCLUDED with the reason"
            )


def config_from_args(
    args: argparse.Namespace,
    config: type[BaseModel] = PruneConfig,
    extra: Mapping[str, Any] | None = None,
) -> BaseModel:
    """Validate the flags :func:`add_config_flags` added as a ``config`` (with the fields
    ``extra`` gives), before any model is built; a bad value is a :class:`UsageError`
    naming its flag."""
    values = dict(extra or {})
    for name, field in config_fields(config).items():
        kind, value = _kind(field.annotation), getattr(args, name)
        values[name] = tuple(value) if kind == "list" else dict(value) if kind == "dict" else value
    try:
        return config(**values)
    except ValidationError as err:
        raise UsageError(config_message(err)) from None


def config_message(err: ValidationError) -> str:
    """One line per field error: which flag, what value, what to use instead."""
    parts = []
    for e in err.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        flag = flag_name(field) if field else ""
        hint = PRESENTATION.get(field, Presentation()).hint
        value = e.get("input")
        shown = f" {value}" if isinstance(value, (int, float, str)) else ""
        msg = e["msg"].removeprefix("Value error, ")
        if not field:  # a rule across fields: its message names them
            parts.append(msg)
            continue
        parts.append(f"{flag}{shown}: {msg[:1].lower()}{msg[1:]}" + (f"; {hint}" if hint else ""))
    return "; ".join(parts)


def _kind(annotation: Any) -> Any:
    """``bool``, ``int``, ``float``, ``str``, a tuple of Literal choices, ``"list"`` or
    ``"dict"``; ``X | None`` is ``X`` (its default, None, means "not given")."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _kind(rest[0]) if len(rest) == 1 else None
    if origin is Literal:
        return args
    if origin in (tuple, list) and all(a in (str, Ellipsis) for a in args):
        return "list"
    if origin is dict and args and args[0] is str and args[1] in (int, float, str):
        return "dict"
    return annotation if annotation in (bool, int, float, str) else None


def _pair_parser(value: type, metavar: str, example: str | None) -> Callable[[str], tuple]:
    """A parser of ``KEY=VALUE`` (``GLOB=RATIO``) into ``(key, value)``."""
    like = f"; write it like {example!r}" if example else ""

    def parse(text: str) -> tuple[str, Any]:
        key, sep, raw = text.rpartition("=")
        try:
            if not sep or not key:
                raise ValueError
            return key, value(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {metavar}{like}") from None

    return parse
