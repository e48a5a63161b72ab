"""Model specs: build a model, and example inputs for it, from a short string.

Five forms are understood:

* ``torchvision:NAME`` builds ``torchvision.models.get_model(NAME)`` with random weights;
* ``timm:NAME`` builds ``timm.create_model(NAME, pretrained=False)`` (timm is optional);
* ``hf:DIRECTORY`` loads a local Hugging Face model folder (``config.json`` and weights, as
  ``save_pretrained`` writes them): the class named by ``config.architectures[0]``, through
  its ``from_pretrained``;
* ``PATH.pt2`` loads an exported program (``torch.export.save``) as a module;
* ``package.module:factory`` imports the module and calls ``factory()`` with no arguments.

Nothing is downloaded. Every failure is a :class:`~slimgraph.ModelSpecError` that says what
to change. :func:`build` returns the model with example inputs: one random image, keyword
inputs for a Hugging Face model (token ids or pixels), an exported program's own example
inputs.

>>> load_model("torch.nn:Identity")
Identity()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimgraph._core.inputs import random_tensor
from slimgraph.errors import ModelSpecError
from slimgraph.io.programs import (
    ExampleInputs,
    load_program,
    placeholder_inputs,
    program_module,
    stored_inputs,
)
from slimgraph.io.sources import (
    factory_model,
    hf_model,
    import_timm,
    timm_model,
    torchvision_model,
)

__all__ = [
    "build",
    "load_model",
    "example_inputs",
    "hf_inputs",
    "input_shape",
    "parse_shape",
    "default_input",
]

EXAMPLES = (
    "torchvision:resnet18, timm:resnet18, hf:./my-model, model.pt2 or my_package.models:build"
)
SOURCES = ("torchvision", "timm", "hf")
TEXT_LENGTH = 16  # tokens in the example input of a text model


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
        return torchvision_model(name)
    if source == "timm":
        return timm_model(name)
    if source == "hf":
        return hf_model(name)
    if source == "pt2":
        return program_module(load_program(name))
    return factory_model(source, name, spec)


def build(spec: str, shape: tuple[int, ...] | None = None) -> tuple[nn.Module, ExampleInputs]:
    """The model named by ``spec`` and example inputs for it (see :func:`example_inputs`).

    An exported program (``PATH.pt2``) brings the example inputs it was saved with, unless
    ``shape`` asks for another.

    >>> model, inputs = build("torchvision:squeezenet1_1", (1, 3, 64, 64))
    >>> type(model).__name__, inputs[0].shape
    ('SqueezeNet', torch.Size([1, 3, 64, 64]))
    """
    source, name = _split(spec)
    if source == "pt2":
        program = load_program(name)
        module = program_module(program)
        stored = stored_inputs(program, name) if shape is None else None
        return module, stored if stored is not None else example_inputs(spec, module, shape)
    model = load_model(spec)
    return model, example_inputs(spec, model, shape)


def example_inputs(
    spec: str, model: nn.Module | None = None, shape: tuple[int, ...] | None = None
) -> ExampleInputs:
    """Random example inputs to trace ``model`` with: a tuple of positional tensors, or a
    dict of keyword tensors.

    A Hugging Face model (one with a ``config`` that has a ``model_type``) gets keyword
    inputs from its config (:func:`hf_inputs`); an exported program's module gets one
    tensor per placeholder; any other model one image of :func:`input_shape`. ``shape``
    replaces the shape of the main input (token ids, pixels, the only placeholder).

    >>> example_inputs("torch.nn:Identity", shape=(1, 3, 8, 8))[0].shape
    torch.Size([1, 3, 8, 8])
    """
    config = getattr(model, "config", None)
    if hasattr(config, "model_type"):
        return hf_inputs(config, shape)
    if isinstance(model, torch.fx.GraphModule):
        return placeholder_inputs(model, spec, shape)
    return (default_input(spec, model, shape),)


def hf_inputs(config: Any, shape: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
    """Keyword example inputs for a Hugging Face model: ``pixel_values`` for a vision
    config (one with ``image_size``), ``input_ids`` (1×16 tokens) for a text one, and
    ``decoder_input_ids`` too for an encoder-decoder.

    >>> from types import SimpleNamespace as Config
    >>> hf_inputs(Config(model_type="bert", vocab_size=96))["input_ids"].shape
    torch.Size([1, 16])
    >>> hf_inputs(Config(model_type="vit", image_size=32, num_channels=3))["pixel_values"].shape
    torch.Size([1, 3, 32, 32])
    >>> sorted(hf_inputs(Config(model_type="t5", vocab_size=96, is_encoder_decoder=True)))
    ['decoder_input_ids', 'input_ids']
    """
    size = getattr(config, "image_size", None)
    if size:
        height, width = (size, size) if isinstance(size, int) else tuple(size)[-2:]
        channels = getattr(config, "num_channels", 3)
        pixel_shape = shape or (1, channels, height, width)
        return {"pixel_values": random_tensor(pixel_shape, torch.get_default_dtype())}
    vocab = getattr(config, "vocab_size", None)
    if not vocab:
        raise ModelSpecError(
            f"cannot make an example input for a {config.model_type!r} model: its config has "
            "neither image_size nor vocab_size; slim it from Python with your own inputs, "
            "sg.slim(model, inputs)"
        )
    shape = shape or (1, TEXT_LENGTH)
    if len(shape) != 2:
        raise ModelSpecError(
            f"input shape {','.join(map(str, shape))} does not fit token ids; a text model "
            f"takes BATCH,LENGTH, e.g. 1,{TEXT_LENGTH}"
        )
    inputs = {"input_ids": torch.randint(0, vocab, shape)}
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = torch.randint(0, vocab, shape)
    return inputs


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
        from torchvision import models  # slow to import: only torchvision names need it

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
    return random_tensor(shape or input_shape(spec, model), torch.get_default_dtype())


def _split(spec: str) -> tuple[str, str]:
    """``(source, name)``; an exported program is ``("pt2", path)``."""
    source, sep, name = spec.strip().partition(":")
    if spec.strip().endswith(".pt2") and source not in SOURCES:
        return "pt2", spec.strip()
    if not sep or not source or not name:
        hint = _bare_name_hint(spec.strip()) if not sep else ""
        raise ModelSpecError(f"model spec {spec!r} is not SOURCE:NAME{hint}; e.g. {EXAMPLES}")
    return source, name


def _bare_name_hint(name: str) -> str:
    """Suggest the spec a bare model name probably meant."""
    if not name:
        return ""
    if name.endswith((".pt", ".pth")):
        return (
            " (pickled models are not read: save an exported program with "
            "torch.export.save as PATH.pt2)"
        )
    if Path(name).is_dir():
        return f" (did you mean 'hf:{name}'?)"
    from torchvision import models  # slow to import: only torchvision names need it

    if name in models.list_models():
        return f" (did you mean 'torchvision:{name}'?)"
    timm = import_timm(required=False)
    if timm is not None and timm.is_model(name):
        return f" (did you mean 'timm:{name}'?)"
    return ""


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(isinstance(v, int) and v > 0 for v in value)
