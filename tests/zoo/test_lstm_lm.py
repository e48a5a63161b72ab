"""A small LSTM language model (embedding -> 2-layer LSTM -> linear over the vocabulary)
slims at ratio 0.5 and its slim ONNX export matches PyTorch in ONNX Runtime (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import slimgraph as sg

pytestmark = [pytest.mark.zoo, pytest.mark.filterwarnings("ignore:The tensor attributes")]

VOCAB = 50


class LstmLM(nn.Module):
    def __init__(self, dim: int = 16, hidden: int = 24) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        self.rnn = nn.LSTM(dim, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(self.emb(ids))
        return self.head(y)


def test_lstm_language_model_slims_and_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, ids = LstmLM().eval(), torch.randint(0, VOCAB, (2, 7))
    result = sg.slim(model, (ids,), ratio=0.5)
    slim = result.model
    assert (slim.emb.embedding_dim, slim.rnn.input_size, slim.rnn.hidden_size) == (8, 8, 12)
    assert slim.head.in_features == 12
    assert sg.count_params(slim) == result.plan.params_after < sg.count_params(model)
    assert sg.count_macs(slim, (ids,)) <= 0.45 * sg.count_macs(model, (ids,))
    with torch.no_grad():
        logits = slim(ids)
    assert logits.shape == (2, 7, VOCAB)
    assert (logits[0] - logits[1]).abs().max() > 1e-3  # parity below means something
    report = sg.export_onnx(slim, (ids,), tmp_path / "lm.onnx")
    assert report.exporter == "dynamo", report.fallback_reason
    assert report.batch_sizes == (2, 3)
    assert report.max_rel_diff is not None and report.max_rel_diff <= 1e-4
    assert [o.shape for o in report.outputs] == [("batch", 7, VOCAB)]


class BiGruTagger(nn.Module):
    """embedding -> 2-layer bidirectional, batch-first GRU -> linear over both directions."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.rnn = nn.GRU(16, 24, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(48, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.emb(ids))[0])


def test_bidirectional_gru_slims_and_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, ids = BiGruTagger().eval(), torch.randint(0, VOCAB, (2, 7))
    slim = sg.slim(model, (ids,), ratio=0.5).model
    assert (slim.rnn.hidden_size, slim.head.in_features) == (12, 24)
    report = sg.export_onnx(slim, (ids,), tmp_path / "tagger.onnx")
    assert report.exporter == "dynamo", report.fallback_reason
    assert report.max_rel_diff is not None and report.max_rel_diff <= 1e-4
