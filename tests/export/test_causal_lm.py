"""Causal LMs export without the user wrapping them: the key/value cache is switched off
for the export, and the logits match ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as T

import slimgraph as sg
from tests import hf_models


def _gemma2() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    config = T.Gemma2Config(**hf_models.DECODER, head_dim=16)
    return T.Gemma2ForCausalLM(config).eval(), hf_models.example("ids")


BUILDERS = {
    "llama": lambda: hf_models.build("llama"),
    "qwen3": lambda: hf_models.build("qwen3"),
    "gemma2": _gemma2,
}


@pytest.mark.slow
@pytest.mark.parametrize("family", BUILDERS)
def test_slim_causal_lm_exports_its_logits(family: str, tmp_path: Path) -> None:
    model, inputs = BUILDERS[family]()
    assert model.config.use_cache  # the default that used to make the export fail
    slim = sg.slim(model, inputs, ratio=0.5).model
    report = sg.export_onnx(slim, inputs, tmp_path / "lm.onnx")
    assert [o.name for o in report.outputs] == ["output_0"]
    assert report.outputs[0].shape == ("batch", 8, hf_models.VOCAB)
    assert report.max_rel_diff is not None and report.max_rel_diff < 1e-4
    assert slim.config.use_cache  # switched back on afterwards
