"""Mixture-of-experts decoders (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE) at tiny random configs.

Experts are stored as stacked 3-D parameters and run by grouped GEMM kernels; the router is
a top-k over its (experts, hidden) weight. Each family slims and reloads with plain
``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers as T

import slimgraph as sg
from slimgraph.criteria.routing import collect_routing
from tests.hf_models import VOCAB
from tests.oracles import drop_plan

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


def experts(model: torch.nn.Module, layer: int = 0) -> torch.nn.Module:
    return model.model.layers[layer].mlp.experts


def expert_count(config: Any) -> int:
    return getattr(config, "num_local_experts", None) or config.num_experts


@pytest.mark.parametrize("family", FAMILIES)
def test_experts_slim_and_reload(family: str, tmp_path: Path) -> None:
    """Expert widths, whole experts (router rows with them), shared experts, heads and
    hidden all prune; plain ``from_pretrained`` rebuilds the slim model."""
    model, inputs = build(family)
    width_field = FAMILIES[family][3]
    width = getattr(model.config, width_field)
    r = sg.slim(model, inputs, ratio=0.5)
    bank, mlp = experts(r.model), r.model.model.layers[0].mlp
    assert bank.gate_up_proj.shape[:2] == (2, width)  # half the experts; 2 * width halved
    assert bank.down_proj.shape[::2] == (2, width // 2)
    assert mlp.gate.weight.shape == (2, 32)  # the router keeps the kept experts' rows
    assert getattr(r.model.config, width_field) == width // 2
    assert expert_count(r.model.config) == 2
    assert r.model.config.num_experts_per_tok <= 2
    assert r.model.config.hidden_size == 32
    shared = getattr(mlp, "shared_expert", None)
    if shared is not None:  # Qwen2-MoE's shared expert has its own width
        assert shared.up_proj.out_features == 32
        assert r.model.config.shared_expert_intermediate_size == 32
    again = reload(r.model, family, tmp_path)
    torch.testing.assert_close(logits(again, inputs), logits(r.model, inputs), atol=1e-5, rtol=0)


def router_inputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """What layer 0's router reads: (tokens, hidden)."""
    seen: list[torch.Tensor] = []
    gate = model.model.layers[0].mlp.gate
    handle = gate.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    try:
        logits(model, inputs)
    finally:
        handle.remove()
    return seen[0].reshape(-1, seen[0].shape[-1])


@pytest.mark.filterwarnings("ignore:model.config .* cannot describe")  # one layer loses an expert
@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_an_expert_the_router_never_picks_drops_without_changing_logits(family: str) -> None:
    model, inputs = build(family)
    gate, dead, live = model.model.layers[0].mlp.gate, 1, 2
    h = router_inputs(model, inputs)
    with torch.no_grad():  # scores far below every other expert's, for every token
        gate.weight[dead] = -1e3 * h.mean(0) / h.mean(0).norm()
    picked = (h @ gate.weight.T).topk(model.config.num_experts_per_tok, dim=-1).indices
    assert (picked != dead).all() and (picked == live).any()
    graph = sg.trace(model, inputs)
    group = "model.layers.0.mlp.gate.weight:0"
    unit = graph.unit_map(group)[group]
    reference = logits(model, inputs)
    slim = sg.apply(model, drop_plan(graph, {group: [unit[dead]]}), graph=graph)
    assert experts(slim).gate_up_proj.shape[0] == 3 and slim.model.layers[0].mlp.gate.top_k == 2
    torch.testing.assert_close(logits(slim, inputs), reference, atol=1e-5, rtol=0)
    # the check can fail: dropping an expert the router picks changes the logits
    other = sg.apply(model, drop_plan(graph, {group: [unit[live]]}), graph=graph)
    assert (logits(other, inputs) - reference).abs().max() > 1e-3


def test_routing_statistics_choose_the_experts_to_drop() -> None:
    model, inputs = build("mixtral")
    graph = sg.trace(model, inputs)
    calibration = [{"input_ids": torch.randint(1, VOCAB, (2, 8))} for _ in range(2)]
    mass = collect_routing(graph, calibration)["model.layers.0.mlp.gate.weight"]
    plan = sg.plan(graph, ratio=0.5, importance="routing", calibration=calibration)
    dropped = {c.group: c.drop for c in plan.cuts}["model.layers.0.mlp.gate.weight:0"]
    assert set(dropped) == set(np.argsort(mass)[:2].tolist())  # the least routed


def test_batched_expert_kernels_prune_widths_and_keep_every_expert(tmp_path: Path) -> None:
    """transformers' ``batched_mm`` experts gather each pick's weights by id: the widths
    prune, the experts (addressed by gathered ids) stay."""
    model, inputs = build("mixtral")
    model.set_experts_implementation("batched_mm")
    r = sg.slim(model, inputs, ratio=0.5)
    assert experts(r.model).gate_up_proj.shape == (4, 64, 32)  # experts, 2 * 64 // 2, hidden
    again = reload(r.model, "mixtral", tmp_path)
    torch.testing.assert_close(logits(again, inputs), logits(r.model, inputs), atol=1e-5, rtol=0)


def test_fewer_experts_than_the_router_picks_lower_num_experts_per_tok(tmp_path: Path) -> None:
    """Top-2 of 4 experts, 3 of them dropped: the router picks its one expert and the
    config says so (the solver sees the router's top_k), so the reload runs."""
    model, inputs = build("mixtral")
    r = sg.slim(model, inputs, ratio=0.75)
    assert expert_count(r.model.config) == 1
    assert r.model.config.num_experts_per_tok == r.model.model.layers[0].mlp.gate.top_k == 1
    again = reload(r.model, "mixtral", tmp_path)
    torch.testing.assert_close(logits(again, inputs), logits(r.model, inputs), atol=1e-5, rtol=0)
