"""A slim Hugging Face model whose config cannot describe it reloads through its plan
(``sg.load``), whatever ``save_pretrained`` would do to its weights: ``sg.save`` writes them
under the model's own ``state_dict`` names, so ``sg.load`` converts nothing (issue 12).
transformers 5's ``save_pretrained`` renames ViT's keys and splits Mixtral's stacked
experts per expert; folders it wrote still load."""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch
import transformers as T
from safetensors import safe_open

import slimgraph as sg
from tests.hf_models import build

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:model.config")]  # re-traces

EXACT, SOURCE = "slimgraph_config_exact", "slimgraph_source_config"
NAMES = "slimgraph.names"  # safetensors metadata: the keys are the model's own names


@pytest.fixture(scope="module")
def vit():
    """ViT slimmed under global scope (its layers differ: sg.load only), its plan and input;
    transformers 5's save_pretrained renames its keys (vit.layers... -> vit.encoder.layer...)."""
    model, x = build("vit")
    result = sg.slim(model, x, ratio=0.5, scope="global")
    assert not getattr(result.model.config, EXACT)
    return result.model, result.plan, x


def _logits(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(**x).logits


def _keys(path) -> tuple[set[str], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys()), f.metadata() or {}


def test_a_plan_folder_holds_the_models_own_names(vit, tmp_path) -> None:
    slim, plan, x = vit
    sg.save(slim, tmp_path, plan)
    keys, meta = _keys(tmp_path / "model.safetensors")
    assert meta[NAMES] == "state_dict"
    assert keys == set(slim.state_dict())  # not save_pretrained's checkpoint names
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [
        "ViTForImageClassification"
    ]
    torch.testing.assert_close(_logits(sg.load(tmp_path), x), _logits(slim, x), atol=1e-5, rtol=0)


def test_a_folder_save_pretrained_wrote_still_loads(vit, tmp_path) -> None:
    """Folders of older sg.save (save_pretrained's checkpoint names) load as before."""
    slim, plan, x = vit
    slim.save_pretrained(tmp_path)
    (tmp_path / "slimgraph_plan.json").write_text(plan.model_dump_json())
    assert NAMES not in _keys(tmp_path / "model.safetensors")[1]
    torch.testing.assert_close(_logits(sg.load(tmp_path), x), _logits(slim, x), atol=1e-5, rtol=0)


def test_a_source_config_holding_inf_reloads(vit, tmp_path) -> None:
    """transformers writes inf as {"__float__": "Infinity"} (Falcon-H1's time_step_limit
    is (0.0, inf)); its strict config classes refuse that unless it is decoded back."""
    slim, plan, x = vit
    slim = copy.deepcopy(slim)
    getattr(slim.config, SOURCE)["time_step_limit"] = (0.0, math.inf)
    sg.save(slim, tmp_path, plan)
    assert "Infinity" in (tmp_path / "config.json").read_text()
    assert sg.load(tmp_path).config.time_step_limit == [0.0, math.inf]


@pytest.mark.zoo
def test_stacked_experts_reload_through_the_plan(tmp_path) -> None:
    """Mixtral's experts are one stacked tensor; save_pretrained writes one per expert."""
    torch.manual_seed(0)
    config = T.MixtralConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = T.MixtralForCausalLM(config).eval()
    x = {"input_ids": torch.randint(1, 96, (2, 8), generator=torch.Generator().manual_seed(1))}
    result = sg.slim(model, x, ratio=0.5)
    slim = result.model
    setattr(slim.config, EXACT, False)  # as a family whose config cannot describe it
    sg.save(slim, tmp_path, result.plan)
    assert any(k.endswith("experts.gate_up_proj") for k in _keys(tmp_path / "model.safetensors")[0])
    torch.testing.assert_close(_logits(sg.load(tmp_path), x), _logits(slim, x), atol=1e-5, rtol=0)
