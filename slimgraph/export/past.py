"""A causal LM's key/value cache as flat tensors, for an ONNX decoder step.

ONNX has no cache object, so the step takes ``past_key_values.{i}.key`` /
``past_key_values.{i}.value`` and returns ``present.{i}.key`` / ``present.{i}.value``,
each ``(batch, kv_heads, length, head_dim)``: the names and layout of Optimum's decoder
exports and ONNX Runtime GenAI. :class:`DecoderStep` turns the flat tensors into
transformers' ``DynamicCache`` and back around the model's own forward.

>>> past_names(2)
['past_key_values.0.key', 'past_key_values.0.value', 'past_key_values.1.key', 'past_key_values.1.value']
>>> present_names(1)
['present.0.key', 'present.0.value']
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimgraph.errors import ExportArgumentError

__all__ = [
    "DecoderStep",
    "cache_from_flat",
    "cache_keyword",
    "flat_from_cache",
    "past_names",
    "present_names",
]


def past_names(layers: int) -> list[str]:
    """The ONNX input names of ``layers`` layers' cache, key before value per layer."""
    return [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def present_names(layers: int) -> list[str]:
    """The ONNX output names of the updated cache, in the order of :func:`past_names`."""
    return [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def cache_keyword(model: nn.Module) -> str:
    """The keyword ``model.forward`` takes its cache by: ``cache`` (transformers 5) or
    ``past_key_values`` (earlier); refused when it takes neither or has no config.

    >>> cache_keyword(torch.nn.Linear(2, 2))
    Traceback (most recent call last):
    ...
    slimgraph.errors.ExportArgumentError: with_past=True needs a Hugging Face causal LM whose forward takes a key/value cache (cache= or past_key_values=); Linear takes neither, so export it without with_past
    """
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    found = [k for k in ("cache", "past_key_values") if k in params]
    if not found or getattr(getattr(model, "config", None), "use_cache", None) is None:
        raise ExportArgumentError(
            "with_past=True needs a Hugging Face causal LM whose forward takes a key/value "
            f"cache (cache= or past_key_values=); {type(model).__name__} takes neither, so "
            "export it without with_past"
        )
    return found[0]


def cache_from_flat(flat: Sequence[torch.Tensor], config: Any = None) -> Any:
    """A ``DynamicCache`` holding ``flat`` (key, value, key, value, ... per layer).

    With the model's ``config`` the cache gets the layer kinds it would build itself
    (Gemma 2's sliding-window layers); the shapes come from the tensors, so pruned
    key/value heads need no config field.

    >>> k, v = torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4)
    >>> cache = cache_from_flat([k, v])
    >>> cache.get_seq_length(), [t.shape[1] for t in flat_from_cache(cache)]
    (3, [2, 2])
    """
    from transformers import DynamicCache  # optional dependency: only a causal LM needs it

    if len(flat) % 2:
        raise ExportArgumentError(
            f"the cache needs a key and a value per layer, got {len(flat)} tensors"
        )
    pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    return DynamicCache(pairs, config=config)


def flat_from_cache(cache: Any) -> list[torch.Tensor]:
    """The tensors of a ``DynamicCache``: key then value for every layer, in order."""
    return [t for layer in cache.layers for t in (layer.keys, layer.values)]


class DecoderStep(nn.Module):
    """One decoding step of ``model`` with its cache as flat tensors.

    ``forward(input_ids, attention_mask, [position_ids,] *past)`` returns
    ``(logits, *presents)``; ``position_ids`` is taken only when ``model.forward`` has it.
    ``attention_mask`` covers the past and the new tokens (``past + sequence`` columns).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.keyword = cache_keyword(model)
        self.takes_positions = "position_ids" in inspect.signature(model.forward).parameters

    @property
    def input_names(self) -> list[str]:
        """The names of the tensors before ``*past``."""
        names = ["input_ids", "attention_mask"]
        return [*names, "position_ids"] if self.takes_positions else names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = len(self.input_names)
        named = dict(zip(self.input_names, inputs[:n]))
        cache = cache_from_flat(inputs[n:], getattr(self.model, "config", None))
        out = self.model(**named, **{self.keyword: cache}, use_cache=True)
        return (out["logits"], *flat_from_cache(out[self.keyword]))
