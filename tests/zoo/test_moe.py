"""Mixture-of-experts decoders (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE) at tiny random configs.

Experts are stored as stacked 3-D parameters and run by grouped GEMM kernels; the router is
a top-k over its (experts, hidden) weight. Each family slims and reloads with plain
``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as T

import slimgraph as sg
from tests.hf_models import VOCAB

pytestmark = pytest.mark.zoo

BASE = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "num_experts_per_tok": 2,
}
# family -> (config class, config kwargs, model class, config field of the expert width)
FAMILIES: dict[str, tuple[Any, dict[str, Any], Any, str]] = {
    "mixtral": (
        T.MixtralConfig,
        {**BASE, "intermediate_size": 64, "num_local_experts": 4},
        T.MixtralForCausalLM,
        "intermediate_size",
    ),
    "qwen2_moe": (
        T.Qwen2MoeConfig,
        {
            **BASE,
            "intermediate_size": 64,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 64,
            "num_experts": 4,
        },
        T.Qwen2MoeForCausalLM,
        "moe_intermediate_size",
    ),
    "qwen3_moe": (
        T.Qwen3MoeConfig,
        {**BASE, "intermediate_size": 64, "moe_intermediate_size": 32, "num_experts": 4},
        T.Qwen3MoeForCausalLM,
        "moe_intermediate_size",
    ),
    "olmoe": (
        T.OlmoeConfig,
        {**BASE, "intermediate_size": 32, "num_experts": 4, "eos_token_id": 1},
        T.OlmoeForCausalLM,
        "intermediate_size",
    ),
}


def build(family: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    config_cls, kwargs, model_cls, _ = FAMILIES[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**kwargs)).eval()
    ids = torch.randint(1, VOCAB, (2, 8), generator=torch.Generator().manual_seed(1))
    return model, {"input_ids": ids}


def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def reload(slim: torch.nn.Module, family: str, folder: Path) -> torch.nn.Module:
    sg.save(slim, folder)
    return FAMILIES[family][2].from_pretrained(folder).eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_widths_prune_and_reload(family: str, tmp_path: Path) -> None:
    model, inputs = build(family)
    width_field = FAMILIES[family][3]
    width = getattr(model.config, width_field)
    r = sg.slim(model, inputs, ratio=0.5)
    experts = r.model.model.layers[0].mlp.experts
    assert experts.gate_up_proj.shape[1] == width  # 2 * width halved: gate and up together
    assert experts.down_proj.shape[2] == width // 2
    assert getattr(r.model.config, width_field) == width // 2
    assert r.model.config.hidden_size == 32
    shared = getattr(r.model.model.layers[0].mlp, "shared_expert", None)
    if shared is not None:  # Qwen2-MoE's shared expert has its own width
        assert shared.up_proj.out_features == 32
        assert r.model.config.shared_expert_intermediate_size == 32
    again = reload(r.model, family, tmp_path)
    torch.testing.assert_close(logits(again, inputs), logits(r.model, inputs), atol=1e-5, rtol=0)
