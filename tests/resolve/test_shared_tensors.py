"""Tensors shared under several names are counted once and sliced by every cut that touches
them, and every reporting path works on models with tied or value-reading code (issue 13,
items 2 and 5)."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from torch import nn

import slimgraph as sg
from tests.hf_models import DECODER, ENCODER, VOCAB


class SharedUnderTwoNames(nn.Module):
    """One Linear registered as ``a`` and ``c``, called once under each name."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 8)
        self.c = self.a
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.b(torch.relu(self.a(x))) + self.b(torch.relu(self.c(x))))


class CalledTwice(nn.Module):
    """One block (``b``, ``c``) applied twice on a residual stream."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 16)
        self.c = nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.a(x)
        x = self.c(torch.relu(self.b(x))) + x
        x = self.c(torch.relu(self.b(x))) + x
        return self.head(x)


def tied_llama() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(T.LlamaConfig(**DECODER, tie_word_embeddings=True)).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model, {"input_ids": torch.randint(1, VOCAB, (2, 8))}


def small(cls) -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return cls().eval(), (torch.randn(2, 8),)


BUILDERS = {
    "tied-llama": tied_llama,
    "shared-under-two-names": lambda: small(SharedUnderTwoNames),
    "called-twice": lambda: small(CalledTwice),
}


@pytest.mark.filterwarnings("ignore:model.config")
@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("config", [{"ratio": 0.5}, {"target_params": 0.5}])
def test_plan_counts_what_apply_makes(name, config) -> None:
    model, x = BUILDERS[name]()
    graph = sg.trace(model, x)
    plan = sg.plan(graph, sg.PruneConfig(**config))
    slim = sg.apply(model, plan, graph=graph, example_inputs=x)
    assert plan.params_before == sg.count_params(model)
    assert plan.params_after == sg.count_params(slim) < plan.params_before
    summary = plan.summary()
    assert (summary.params_before, summary.params_after) == (
        plan.params_before,
        plan.params_after,
    )
    if "target_params" in config:  # the planner reaches its target on the true count
        assert sg.count_params(slim) / sg.count_params(model) == pytest.approx(0.5, abs=0.05)


@pytest.mark.filterwarnings("ignore:model.config")
def test_tied_embedding_stays_one_tensor_with_one_shape() -> None:
    model, x = tied_llama()
    graph = sg.trace(model, x)
    slim = sg.apply(model, sg.plan(graph, ratio=0.5), graph=graph, example_inputs=x)
    assert slim.lm_head.weight is slim.model.embed_tokens.weight
    assert slim.lm_head.in_features == slim.model.embed_tokens.embedding_dim == 32
    rows = {r.layer: r for r in sg.plan(graph, ratio=0.5).summary().layers}
    assert rows["lm_head"].shapes["weight"] == ((VOCAB, 64), (VOCAB, 32))


def test_summary_of_a_tied_gemma_names_lm_head() -> None:
    torch.manual_seed(0)
    model = T.GemmaForCausalLM(T.GemmaConfig(**DECODER, head_dim=16)).eval()
    graph = sg.trace(model, {"input_ids": torch.randint(1, VOCAB, (2, 8))})
    summary = sg.plan(graph, ratio=0.5).summary()
    assert "lm_head" in {r.layer for r in summary.layers}
    assert "total params" in str(summary)


def test_summary_of_deberta_counts_macs_on_real_weights() -> None:
    # DeBERTa reads its input ids (a padding check), which meta tensors cannot give
    torch.manual_seed(0)
    model = T.DebertaV2ForSequenceClassification(T.DebertaV2Config(**ENCODER)).eval()
    graph = sg.trace(model, {"input_ids": torch.randint(1, VOCAB, (2, 8))})
    plan = sg.plan(graph, ratio=0.5)
    summary = plan.summary()
    assert 0 < summary.macs_after < summary.macs_before
    assert summary.params_after == plan.params_after
    assert sg.plan(graph, target_macs=0.5).params_after < plan.params_before
