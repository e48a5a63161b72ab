"""Transformers: heads (grouped-query attention included), MLP widths and the hidden size of
every Hugging Face family, with configs that describe the slim model and reload it."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

import slimgraph as sg
from slimgraph.rewrite.hf_config import update_configs
from tests.hf_models import FAMILIES, build, first_output
from tests.oracles import drop_plan, kill_units

pytestmark = pytest.mark.filterwarnings("ignore:model.config")

# The query projection of the first layer and the dim that holds its heads.
QUERY = re.compile(r"(q_proj|\.query|q_lin|c_attn|\.q|qkv_proj)\.weight$")
HEAD_FIELDS = ("num_attention_heads", "n_head", "n_heads", "num_heads")

# Heads that stay, and why (the test checks that they do stay).
HEADS_STAY: dict[str, str] = {}
# Model outputs that include the hidden state (its width is part of the contract).
HIDDEN_IS_OUTPUT = {"t5", "clip_vision"}
# (family, prune_residual) whose config cannot describe the slim model: the head size is
# hidden / heads in these configs, so heads cannot go while the hidden size stays.
INEXPRESSIBLE = {
    ("bert", False),
    ("roberta", False),
    ("distilbert", False),
    ("gpt2", False),
    ("opt", False),
    ("clip_vision", True),
    ("clip_vision", False),
    # Gemma scales embeddings by sqrt(hidden_size), a buffer computed from the config: the
    # slim model keeps the original scale (its function), which a rebuilt one would not
    ("gemma", True),
}


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def query_width(model: nn.Module) -> int:
    name, w = next((n, p) for n, p in model.named_parameters() if QUERY.search(n))
    return w.shape[1] if name.endswith("c_attn.weight") else w.shape[0]  # Conv1D is (in, out)


def hidden_width(model: nn.Module) -> int:
    emb = next(m for m in model.modules() if isinstance(m, (nn.Embedding, nn.Conv2d)))
    return emb.weight.shape[1] if isinstance(emb, nn.Embedding) else emb.weight.shape[0]


def heads(config) -> int:
    return next(getattr(config, f) for f in HEAD_FIELDS if hasattr(config, f))


@pytest.mark.parametrize("prune_residual", [True, False], ids=["residual", "keep-residual"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_slims_with_consistent_config(family: str, prune_residual: bool, tmp_path) -> None:
    model, x = build(family)
    with torch.no_grad():
        before = first_output(model(**x))
    result = sg.slim(model, x, ratio=0.5, prune_residual=prune_residual)
    slim = result.model
    assert result.plan.skipped == {} or not prune_residual
    with torch.no_grad():
        after = first_output(slim(**x))
    assert after.shape == before.shape and torch.isfinite(after).all()
    macs = sg.count_macs(slim, x) / sg.count_macs(model, x)
    assert macs <= (0.6 if prune_residual else 0.75)
    assert type(slim) is type(model)

    # heads: whole heads (KV groups under GQA) go; the config and attributes say so
    if family in HEADS_STAY:
        assert query_width(slim) == query_width(model)
    else:
        assert query_width(slim) == query_width(model) // 2
        assert heads(slim.config) == heads(model.config) // 2
    # hidden size: halved with the residual pruned, unless the model outputs it
    halved = prune_residual and family not in HIDDEN_IS_OUTPUT
    assert hidden_width(slim) == hidden_width(model) // (2 if halved else 1)

    # the config describes the slim model, or sg.load rebuilds it from the plan
    update = update_configs(slim, model)
    if (family, prune_residual) in INEXPRESSIBLE:
        assert not update.exact
        sg.save(slim, tmp_path, result.plan)
        again = sg.load(tmp_path)
        with torch.no_grad():
            assert torch.equal(first_output(again(**x)), after)
    else:
        assert update.exact and not update.differing
        with torch.device("meta"):
            fresh = type(model)(copy.deepcopy(slim.config))
        assert shapes(fresh) == shapes(slim)


# family -> (attention output projection "param:dim", MLP down projection "param:dim")
DEAD = {
    "bert": (
        "bert.encoder.layer.0.attention.output.dense.weight:1",
        "bert.encoder.layer.0.output.dense.weight:1",
    ),
    "gpt2": ("transformer.h.0.attn.c_proj.weight:0", "transformer.h.0.mlp.c_proj.weight:0"),
    "llama": ("model.layers.0.self_attn.o_proj.weight:1", "model.layers.0.mlp.down_proj.weight:1"),
    "qwen3": ("model.layers.0.self_attn.o_proj.weight:1", "model.layers.0.mlp.down_proj.weight:1"),
}


@pytest.mark.parametrize("family", sorted(DEAD))
def test_dead_heads_and_mlp_channels_drop_exactly(family: str) -> None:
    """Zero what a head (a KV group under GQA) and some MLP channels feed into the output
    projections; dropping exactly those units leaves the output unchanged."""
    model, x = build(family)
    graph = sg.trace(model, x)
    drops = {}
    for key, units in zip(DEAD[family], ([1], [3, 17, 40, 41])):
        group = next(g for g in graph.prunable_groups() if key in graph.unit_map(g.id))
        kill_units(model, graph, group.id, units, [key])
        drops[group.id] = units
    with torch.no_grad():
        expected = first_output(model(**x))
        slim = sg.apply(model, drop_plan(graph, drops), graph=graph)
        got = first_output(slim(**x))
    assert sg.count_params(slim) < sg.count_params(model)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_grouped_query_attention_drops_whole_kv_groups() -> None:
    model, x = build("llama")  # 8 query heads, 2 key/value heads
    graph = sg.trace(model, x)
    group = next(
        g for g in graph.groups if ("model.layers.0.self_attn.q_proj.weight", 0) in g.params
    )
    assert group.size == 2 and group.exact
    units = graph.unit_map(group.id)
    assert units["model.layers.0.self_attn.q_proj.weight:0"] == [0] * 32 + [1] * 32
    assert units["model.layers.0.self_attn.k_proj.weight:0"] == [0] * 8 + [1] * 8
    assert units["model.layers.0.self_attn.v_proj.weight:0"] == [0] * 8 + [1] * 8
    slim = sg.slim(model, x, ratio=0.5).model
    attn = slim.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features) == (32, 8)
    assert (slim.config.num_attention_heads, slim.config.num_key_value_heads) == (4, 1)
    assert attn.num_key_value_groups == 4  # H % H_kv == 0 still holds


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma"])
def test_grouped_query_attention_can_drop_query_heads_inside_groups(family: str, tmp_path) -> None:
    model, x = build(family)  # 8 query heads in 2 groups of 4
    graph = sg.trace(model, x, query_heads=True)
    group = next(
        g for g in graph.groups if ("model.layers.0.self_attn.q_proj.weight", 0) in g.params
    )
    assert group.size == 4 and group.exact  # the offset of a query head inside its group
    assert ("model.layers.0.self_attn.k_proj.weight", 0) not in group.params
    head = model.config.head_dim if family != "llama" else 8
    units = graph.unit_map(group.id)["model.layers.0.self_attn.q_proj.weight:0"]
    assert units == [h % 4 for h in range(8) for _ in range(head)]
    result = sg.slim(model, x, ratio=0.5, query_heads=True, prune_residual=False)
    attn, config = result.model.model.layers[0].self_attn, result.model.config
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert attn.num_key_value_groups == 2  # H % H_kv == 0 still holds
    assert result.plan.query_heads and update_configs(result.model, model).exact
    result.model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(first_output(again(**x)), first_output(result.model(**x)))


def test_head_dims_are_opt_in_and_keep_rotary_pairs_together() -> None:
    model, x = build("llama")  # head dim 8: rotary pairs offset i with i + 4
    graph = sg.trace(model, x, head_dims=True)
    group = next(
        g for g in graph.groups if ("model.layers.0.self_attn.q_proj.weight", 0) in g.params
    )
    units = graph.unit_map(group.id)["model.layers.0.self_attn.q_proj.weight:0"]
    assert group.size == 4
    assert units[:8] == [0, 1, 2, 3, 0, 1, 2, 3] and units == units[:8] * 8
    assert not group.exact  # the attention scale depends on the head dim
    # cos/sin keep the frequencies of the kept offsets: inv_freq is in the group
    assert graph.unit_map(group.id)["model.rotary_emb.inv_freq:0"] == [0, 1, 2, 3]


def test_head_dims_slim_and_reload(tmp_path) -> None:
    model, x = build("llama")
    result = sg.slim(model, x, ratio=0.5, head_dims=True)
    attn = result.model.model.layers[0].self_attn
    assert (attn.head_dim, attn.q_proj.out_features, attn.v_proj.out_features) == (4, 32, 8)
    assert result.model.model.rotary_emb.inv_freq.shape == (2,)
    assert result.plan.head_dims
    # the rotary frequencies are no longer what the config computes: sg.load rebuilds
    assert not update_configs(result.model, model).exact
    sg.save(result.model, tmp_path, result.plan)
    again = sg.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(first_output(again(**x)), first_output(result.model(**x)))


def test_uniform_slim_reloads_with_from_pretrained(tmp_path) -> None:
    for family in ("llama", "bert"):
        model, x = build(family)
        slim = sg.slim(model, x, ratio=0.5).model
        slim.save_pretrained(tmp_path / family)
        again = type(model).from_pretrained(tmp_path / family).eval()
        with torch.no_grad():
            assert torch.equal(first_output(again(**x)), first_output(slim(**x)))


def test_global_slim_reloads_with_sg_load(tmp_path) -> None:
    for family in ("llama", "bert"):
        model, x = build(family)
        result = sg.slim(model, x, ratio=0.5, scope="global")
        update = update_configs(result.model, model)
        assert update.differing  # layers differ: the config alone cannot rebuild it
        sg.save(result.model, tmp_path / family, result.plan)
        again = sg.load(tmp_path / family)
        assert shapes(again) == shapes(result.model)
        with torch.no_grad():
            assert torch.equal(first_output(again(**x)), first_output(result.model(**x)))


def test_attention_mask_in_the_example_inputs() -> None:
    model, x = build("bert")
    mask = torch.ones_like(x["input_ids"])
    mask[1, 5:] = 0
    result = sg.slim(model, {**x, "attention_mask": mask}, ratio=0.5)
    assert result.plan.skipped == {}
    with torch.no_grad():
        assert result.model(**x, attention_mask=mask).logits.shape == (2, 2)
    # the mask's values steer the code, so MACs are counted on the real model
    masked = {**x, "attention_mask": mask}
    assert sg.count_macs(result.model, masked) / sg.count_macs(model, masked) < 0.3
