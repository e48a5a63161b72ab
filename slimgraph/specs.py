"""Model specs: build a model, and an example input for it, from a short string.

Three forms are understood:

* ``torchvision:NAME`` builds ``torchvision.models.get_model(NAME)`` with random weights;
* ``timm:NAME`` builds ``timm.create_model(NAME, pretrained=False)`` (timm is optional);
* ``package.module:factory`` imports the module and calls ``factory()`` with no arguments.

Nothing is downloaded. Every failure is a :class:`~slimgraph.ModelSpecError` that says what
to change.

>>> load_model("torch.nn:Identity")
Identity()
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import torch
from torch import nn

from slimgraph.errors import ModelSpecError

__all__ = ["load_model", "input_shape", "parse_shape", "default_input"]

EXAMPLES = "torchvision:resnet18, timm:resnet18 or my_package.models:build"


def load_model(spec: str) -> nn.Module:
    """Build the model named by ``spec``, with random weights.

    >>> model = load_model("torchvision:squeezenet1_1")
    >>> type(model).__name__
    'SqueezeNet'
    >>> load_model("torchvision:resnet19")
    Traceback (most recent call last):
    ...
    slimgraph.errors.ModelSpecError: torchvision has no model 'resnet19'; close matches: resnet18, resnet152, resnet101 (list them with torchvision.models.list_models())
    """
    source, name = _split(spec)
    if source == "torchvision":
        return _torchvision(name)
    if source == "timm":
        return _timm(name)
    return _factory(source, name, spec)


def input_shape(spec: str, model: nn.Module | None = None) -> tuple[int, ...]:
    """The shape of a sensible example input for ``spec``: batch 1, an image or a clip.

    Images are 3×224×224 unless the model says otherwise: 299 for ``inception_v3``, a
    timm model's ``pretrained_cfg["input_size"]``, a ViT's ``image_size``. Torchvision's
    video models take 16 frames of 112×112.

    >>> input_shape("torchvision:inception_v3")
    (1, 3, 299, 299)
    >>> input_shape("torchvision:r3d_18")
    (1, 3, 16, 112, 112)
    >>> input_shape("torch.nn:Identity")
    (1, 3, 224, 224)
    """
    source, name = _split(spec)
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and _is_shape(cfg.get("input_size")):
        return (1, *cfg["input_size"])
    if source == "torchvision":
        from torchvision import models

        if name in models.list_models(module=models.video):
            return (1, 3, 16, 112, 112)
        if name == "inception_v3":
            return (1, 3, 299, 299)
    size = getattr(model, "image_size", None)
    if isinstance(size, int) and size > 0:
        return (1, 3, size, size)
    return (1, 3, 224, 224)


def parse_shape(text: str) -> tuple[int, ...]:
    """Read a shape written as comma-separated positive integers.

    >>> parse_shape("1,3,224,224")
    (1, 3, 224, 224)
    >>> parse_shape("1, 3, 64")
    (1, 3, 64)
    >>> parse_shape("1,3,a")
    Traceback (most recent call last):
    ...
    slimgraph.errors.ModelSpecError: input shape '1,3,a' is not a list of positive integers; write it like 1,3,224,224
    """
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ModelSpecError(
            f"input shape {text!r} is not a list of positive integers; write it like 1,3,224,224"
        )
    return tuple(int(p) for p in parts)


def default_input(
    spec: str, model: nn.Module | None = None, shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """A random example input of ``shape``, or of :func:`input_shape` when none is given.

    >>> default_input("torch.nn:Identity", shape=(1, 3, 8, 8)).shape
    torch.Size([1, 3, 8, 8])
    """
    return torch.randn(shape or input_shape(spec, model))


def _split(spec: str) -> tuple[str, str]:
    source, sep, name = spec.strip().partition(":")
    if not sep or not source or not name:
        hint = _bare_name_hint(spec.strip()) if not sep else ""
        raise ModelSpecError(f"model spec {spec!r} is not SOURCE:NAME{hint}; e.g. {EXAMPLES}")
    return source, name


def _bare_name_hint(name: str) -> str:
    """Suggest the spec a bare model name probably meant."""
    if not name:
        return ""
    from torchvision import models

    if name in models.list_models():
        return f" (did you mean 'torchvision:{name}'?)"
    timm = _import_timm(required=False)
    if timm is not None and timm.is_model(name):
        return f" (did you mean 'timm:{name}'?)"
    return ""


def _close(name: str, known: list[str]) -> str:
    matches = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f"close matches: {', '.join(matches)}" if matches else "no close match"


def _torchvision(name: str) -> nn.Module:
    from torchvision import models

    known = models.list_models()
    if name not in known:
        raise ModelSpecError(
            f"torchvision has no model {name!r}; {_close(name, known)} "
            "(list them with torchvision.models.list_models())"
        )
    return models.get_model(name, weights=None)


def _import_timm(required: bool = True) -> Any:
    try:
        import timm
    except ImportError:
        if not required:
            return None
        raise ModelSpecError(
            "timm is not installed, so timm:NAME specs cannot be built; "
            "install it with `pip install timm`"
        ) from None
    return timm


def _timm(name: str) -> nn.Module:
    timm = _import_timm()
    if not timm.is_model(name):
        raise ModelSpecError(
            f"timm has no model {name!r}; {_close(name, timm.list_models())} "
            "(list them with timm.list_models('*pattern*'))"
        )
    return timm.create_model(name, pretrained=False)


def _factory(module_name: str, attr: str, spec: str) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelSpecError(
            f"model spec {spec!r}: cannot import module {module_name!r} ({err}); "
            f"use torchvision:NAME, timm:NAME or an importable package.module:factory"
        ) from err
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            public = [n for n in dir(module) if not n.startswith("_")]
            raise ModelSpecError(
                f"model spec {spec!r}: module {module_name!r} has no attribute {attr!r}; "
                f"{_close(attr, public)}"
            )
    if not callable(factory):
        raise ModelSpecError(f"model spec {spec!r}: {attr!r} is not callable")
    try:
        model = factory()
    except Exception as err:
        raise ModelSpecError(
            f"model spec {spec!r}: calling {attr}() with no arguments failed "
            f"({type(err).__name__}: {err}); point the spec at a factory that needs none"
        ) from err
    if not isinstance(model, nn.Module):
        raise ModelSpecError(
            f"model spec {spec!r}: {attr}() returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(isinstance(v, int) and v > 0 for v in value)
