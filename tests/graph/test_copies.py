"""A class whose code copies a class named in rules/modules.toml shares its rule."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers as T
from torch import nn
from transformers.models.bert.modeling_bert import BertSelfAttention
from transformers.models.camembert.modeling_camembert import CamembertSelfAttention

import slimgraph as sg
from slimgraph.graph.copies import code_key, code_key_of_path
from slimgraph.graph.ruletable import load_rules
from slimgraph.rewrite.hf_config import update_configs

BERT = "transformers.models.bert.modeling_bert.BertSelfAttention"


def test_a_copied_class_has_the_same_code_key() -> None:
    assert code_key(CamembertSelfAttention) == code_key(BertSelfAttention)
    assert code_key_of_path(BERT) == code_key(BertSelfAttention)
    rules = load_rules()
    rule = rules.module_rule(CamembertSelfAttention.__new__(CamembertSelfAttention))
    assert rule == rules.module_rule_of(BERT)


class Narrow(nn.Linear):
    def __init__(self, n: int) -> None:
        super().__init__(n, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2  # not Linear's code


def test_other_code_gets_no_rule() -> None:
    assert code_key(Narrow) is not None and code_key(Narrow) != code_key(nn.Linear)
    assert load_rules().module_rule(Narrow(2)) == load_rules().module_rule(nn.Linear(2, 2))
    assert code_key(nn.ReLU) is not None
    assert load_rules().module_rule(nn.ReLU()) is None
    assert code_key(int) is None  # no Python source


def _bert_generation() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    config = T.BertGenerationConfig(
        vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, is_decoder=True,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = T.BertGenerationDecoder(config).eval()
    return model, {"input_ids": torch.randint(1, 96, (2, 8))}


@pytest.mark.zoo
def test_copied_attention_is_updated_and_reloads(tmp_path) -> None:
    model, x = _bert_generation()  # its attention copies BERT's; no table row names it
    slim = sg.slim(model, x, ratio=0.5).model
    attention = slim.bert.encoder.layer[0].attention.self
    assert attention.all_head_size == attention.query.out_features == 32
    assert attention.num_attention_heads == 2  # whole heads of 16 went
    update = update_configs(slim, model)
    assert update is not None and update.exact and update.by == "solver"
    assert update.fields == {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
    slim.save_pretrained(tmp_path)
    again = T.BertGenerationDecoder.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**x).logits, slim(**x).logits, atol=1e-5, rtol=0)
