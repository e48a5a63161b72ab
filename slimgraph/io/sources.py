"""Where a model spec's model comes from: torchvision, timm, a local Hugging Face folder or
an importable factory. Each builds the model with random weights (nothing is downloaded),
or raises a :class:`~slimgraph.ModelSpecError` that says what to change.

>>> type(factory_model("torch.nn", "Identity", "torch.nn:Identity")).__name__
'Identity'
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from slimgraph.errors import ModelSpecError
from slimgraph.io.hf import PLAN_FILE, load

__all__ = ["factory_model", "hf_model", "import_timm", "timm_model", "torchvision_model"]


def _close(name: str, known: list[str]) -> str:
    matches = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f"close matches: {', '.join(matches)}" if matches else "no close match"


def torchvision_model(name: str) -> nn.Module:
    """``torchvision.models.get_model(name)`` with random weights.

    >>> type(torchvision_model("squeezenet1_1")).__name__
    'SqueezeNet'
    """
    from torchvision import models  # slow to import: only torchvision specs need it

    known = models.list_models()
    if name not in known:
        raise ModelSpecError(
            f"torchvision has no model {name!r}; {_close(name, known)} "
            "(list them with torchvision.models.list_models())"
        )
    return models.get_model(name, weights=None)


def import_timm(required: bool = True) -> Any:
    """The timm module; ``None`` when it is not installed and not ``required``."""
    try:
        import timm  # optional dependency
    except ImportError:
        if not required:
            return None
        raise ModelSpecError(
            "timm is not installed, so timm:NAME specs cannot be built; "
            "install it with `pip install timm`"
        ) from None
    return timm


def timm_model(name: str) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``.

    >>> timm_model("resnet19")
    Traceback (most recent call last):
    ...
    slimgraph.errors.ModelSpecError: timm has no model 'resnet19'; close matches: resnet18, ... (list them with timm.list_models('*pattern*'))
    """
    timm = import_timm()
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
        import transformers  # optional dependency, slow to import
    except ImportError:
        raise ModelSpecError(
            "transformers is not installed, so hf:DIRECTORY specs cannot be built; "
            'install it with `pip install "slimgraph[hf]"`'
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


def hf_model(directory: str) -> nn.Module:
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
        cls: Any = getattr(transformers, names[0], None)
        if not _is_model_class(transformers, cls):
            known = [n for n in dir(transformers) if n[:1].isupper() and "For" in n]
            raise ModelSpecError(
                f"{where}: unknown architecture {names[0]!r} (transformers "
                f"{transformers.__version__} has no such model class); {_close(names[0], known)}"
            )
        try:
            if (path / PLAN_FILE).is_file():  # written by sg.save: may need the plan
                return load(path)
            # safetensors only: a pytorch_model.bin is a pickle, which is never read
            return cls.from_pretrained(
                path, config=config, local_files_only=True, use_safetensors=True
            )
        except Exception as err:
            raise ModelSpecError(
                f"{where}: {names[0]}.from_pretrained failed ({_first_line(err)}); check that "
                "the folder holds the weights save_pretrained wrote"
            ) from err


def _is_model_class(transformers: Any, cls: Any) -> bool:
    """A transformers model class, not a tokenizer or a config (which load too)."""
    return isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)


def factory_model(module_name: str, attr: str, spec: str) -> nn.Module:
    """``module_name.attr()``: an importable factory called with no arguments."""
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
