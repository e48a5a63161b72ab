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

import contextlib
import difflib
import importlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimgraph.errors import ModelSpecError
from slimgraph.io.hf import PLAN_FILE, load

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

ExampleInputs = tuple[torch.Tensor, ...] | dict[str, torch.Tensor]


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
    if source == "hf":
        return _hf(name)
    if source == "pt2":
        return _module(_load_exported(name))
    return _factory(source, name, spec)


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
        program = _load_exported(name)
        module = _module(program)
        stored = _stored_inputs(program, name) if shape is None else None
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
        return _placeholder_inputs(model, spec, shape)
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
        return {"pixel_values": torch.randn(shape or (1, channels, height, width))}
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


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ModelSpecError(
            "transformers is not installed, so hf:DIRECTORY specs cannot be built; "
            "install it with `pip install transformers`"
        ) from None
    return transformers


@contextlib.contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    """No progress bars or info lines while a model loads; stderr is for our errors."""
    log = transformers.utils.logging
    bars, level = log.is_progress_bar_enabled(), log.get_verbosity()
    log.disable_progress_bar()
    log.set_verbosity_error()
    try:
        yield
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


def _hf(directory: str) -> nn.Module:
    """``config.architectures[0]`` of a local Hugging Face folder, by ``from_pretrained``
    (or :func:`slimgraph.load` for a slim model saved with ``sg.save``)."""
    where = f"model spec 'hf:{directory}'"
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise ModelSpecError(
            f"{where}: no such directory; point it at a local Hugging Face model folder "
            "(one written by save_pretrained)"
        )
    if not (path / "config.json").is_file():
        raise ModelSpecError(
            f"{where}: {directory} has no config.json; point it at a folder written by "
            "save_pretrained"
        )
    transformers = _import_transformers()
    with _quiet_transformers(transformers):
        try:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        except Exception as err:
            raise ModelSpecError(
                f"{where}: config.json does not load ({_first_line(err)}); fix it or write "
                "it again with save_pretrained"
            ) from err
        names = getattr(config, "architectures", None) or []
        if not names:
            raise ModelSpecError(
                f"{where}: config.json names no architecture; add one, e.g. "
                '"architectures": ["LlamaForCausalLM"]'
            )
        cls = getattr(transformers, names[0], None)
        if not (isinstance(cls, type) and hasattr(cls, "from_pretrained")):
            known = [n for n in dir(transformers) if n[:1].isupper() and "For" in n]
            raise ModelSpecError(
                f"{where}: unknown architecture {names[0]!r} (transformers "
                f"{transformers.__version__} has no such model class); {_close(names[0], known)}"
            )
        try:
            if (path / PLAN_FILE).is_file():  # written by sg.save: may need the plan
                return load(path)
            return cls.from_pretrained(path, config=config, local_files_only=True)
        except Exception as err:
            raise ModelSpecError(
                f"{where}: {names[0]}.from_pretrained failed ({_first_line(err)}); check that "
                "the folder holds the weights save_pretrained wrote"
            ) from err


def _load_exported(name: str) -> torch.export.ExportedProgram:
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelSpecError(
            f"model spec {name!r}: no such file; pass an exported program written by "
            "torch.export.save"
        )
    export_log = logging.getLogger("torch.export")  # logs a traceback before raising
    disabled, export_log.disabled = export_log.disabled, True
    try:
        return torch.export.load(path)
    except Exception as err:
        raise ModelSpecError(
            f"model spec {name!r}: not an exported program (torch.export.load cannot read "
            "it); write one with torch.export.save(torch.export.export(model, args), path)"
        ) from err
    finally:
        export_log.disabled = disabled


def _module(program: torch.export.ExportedProgram) -> nn.Module:
    """The program as a module that ``train()`` and ``eval()`` accept.

    torch makes them raise, as the graph keeps the mode it was exported in (dropout and
    BatchNorm statistics are baked in); slimgraph switches modes around its dry runs and
    counts, which is harmless here, so the module gets back nn.Module's methods.
    """
    module = program.module()
    for name in ("train", "eval"):
        module.__dict__.pop(name, None)
    return module


def _stored_inputs(program: torch.export.ExportedProgram, name: str) -> ExampleInputs | None:
    """The example inputs ``torch.export.save`` kept, as a tuple or a dict; else None."""
    stored = getattr(program, "example_inputs", None)
    if not stored:
        return None
    args, kwargs = stored
    if args and kwargs:
        raise ModelSpecError(
            f"model spec {name!r}: the program takes positional and keyword inputs; "
            "slimgraph takes one kind, so export it with only args or only kwargs"
        )
    return dict(kwargs) if kwargs else tuple(args)


def _placeholder_inputs(
    module: torch.fx.GraphModule, spec: str, shape: tuple[int, ...] | None
) -> tuple[torch.Tensor, ...]:
    """One tensor per placeholder of an exported module, of its recorded shape and dtype
    (random floats, zeros otherwise); ``shape`` replaces the shape of a single one."""
    values = [n.meta.get("val") for n in module.graph.nodes if n.op == "placeholder"]
    if not all(isinstance(v, torch.Tensor) for v in values):
        raise ModelSpecError(f"model spec {spec!r}: an input of the program is not a tensor")
    if shape is not None and len(values) != 1:
        raise ModelSpecError(
            f"model spec {spec!r} takes {len(values)} inputs; an input shape sets one, so "
            "leave it out to use the shapes the program was exported with"
        )
    inputs = []
    for value in values:
        static = all(isinstance(d, int) for d in value.shape)
        if shape is not None and static and tuple(value.shape) != shape:
            raise ModelSpecError(
                f"model spec {spec!r} was exported for input {'x'.join(map(str, value.shape))}; "
                "leave the input shape out, or export with dynamic_shapes"
            )
        if shape is None and not static:
            raise ModelSpecError(
                f"model spec {spec!r}: an input has a dynamic size and the program stores no "
                "example inputs; pass an input shape"
            )
        size = shape or tuple(value.shape)
        if value.dtype.is_floating_point:
            inputs.append(torch.randn(size, dtype=value.dtype))
        else:
            inputs.append(torch.zeros(size, dtype=value.dtype))
    return tuple(inputs)


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
