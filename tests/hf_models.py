"""Tiny random Hugging Face models, one per family, with example inputs (no downloads).

Hidden 64, 2 layers, MLP 128, 8 query heads and 2 key/value heads where the family has
grouped-query attention (4 heads otherwise), head dim 8 (16 where the config sets it apart
from hidden / heads: Qwen3, Gemma, T5). Task heads (sequence classification, LM, image
classification) where the family has one, so the hidden size is not a model output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import transformers as T

VOCAB, HIDDEN, LAYERS, MLP = 96, 64, 2, 128
GQA = {"num_attention_heads": 8, "num_key_value_heads": 2}
DECODER = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "intermediate_size": MLP,
    "num_hidden_layers": LAYERS,
    **GQA,
}
ENCODER = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "intermediate_size": MLP,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 4,
}

# family -> (config class, config kwargs, model class, input kind)
FAMILIES: dict[str, tuple[Any, dict[str, Any], Any, str]] = {
    "llama": (T.LlamaConfig, DECODER, T.LlamaForCausalLM, "ids"),
    "mistral": (T.MistralConfig, DECODER, T.MistralForCausalLM, "ids"),
    "qwen2": (T.Qwen2Config, DECODER, T.Qwen2ForCausalLM, "ids"),
    "qwen3": (T.Qwen3Config, {**DECODER, "head_dim": 16}, T.Qwen3ForCausalLM, "ids"),
    "phi3": (T.Phi3Config, {**DECODER, "pad_token_id": 0}, T.Phi3ForCausalLM, "ids"),
    "gemma": (T.GemmaConfig, {**DECODER, "head_dim": 16}, T.GemmaForCausalLM, "ids"),
    "bert": (T.BertConfig, ENCODER, T.BertForSequenceClassification, "ids"),
    "roberta": (T.RobertaConfig, ENCODER, T.RobertaForSequenceClassification, "ids"),
    "distilbert": (
        T.DistilBertConfig,
        {"vocab_size": VOCAB, "dim": HIDDEN, "hidden_dim": MLP, "n_layers": LAYERS, "n_heads": 4},
        T.DistilBertForSequenceClassification,
        "ids",
    ),
    "gpt2": (
        T.GPT2Config,
        {"vocab_size": VOCAB, "n_embd": HIDDEN, "n_layer": LAYERS, "n_head": 4},
        T.GPT2LMHeadModel,
        "ids",
    ),
    "opt": (
        T.OPTConfig,
        {
            "vocab_size": VOCAB,
            "hidden_size": HIDDEN,
            "ffn_dim": MLP,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 4,
            "word_embed_proj_dim": HIDDEN,
        },
        T.OPTForCausalLM,
        "ids",
    ),
    "t5": (
        T.T5Config,
        {
            "vocab_size": VOCAB,
            "d_model": HIDDEN,
            "d_kv": 16,
            "d_ff": MLP,
            "num_layers": LAYERS,
            "num_heads": 4,
        },
        T.T5ForConditionalGeneration,
        "seq2seq",
    ),
    "vit": (
        T.ViTConfig,
        {**ENCODER, "image_size": 32, "patch_size": 8},
        T.ViTForImageClassification,
        "pixels",
    ),
    "clip_vision": (
        T.CLIPVisionConfig,
        {**ENCODER, "image_size": 32, "patch_size": 8},
        T.CLIPVisionModel,
        "pixels",
    ),
}


def build(family: str, seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The family's tiny model in eval mode and its keyword example inputs (batch 2)."""
    config_cls, kwargs, model_cls, inputs = FAMILIES[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).eval()
    return model, example(inputs, seed)


def example(kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(1, VOCAB, (2, 8), generator=g)
    if kind == "ids":
        return {"input_ids": ids}
    if kind == "seq2seq":
        return {"input_ids": ids, "decoder_input_ids": torch.randint(1, VOCAB, (2, 5), generator=g)}
    return {"pixel_values": torch.randn(2, 3, 32, 32, generator=g)}


def first_output(out: Any) -> torch.Tensor:
    """The main tensor of a model output: logits or last hidden state."""
    for key in ("logits", "last_hidden_state"):
        value = getattr(out, key, None)
        if value is not None:
            return value
    return out[0]


Builder = Callable[[str], tuple[torch.nn.Module, dict[str, torch.Tensor]]]
