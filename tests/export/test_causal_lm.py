"""Causal LMs export without the user wrapping them: the key/value cache is switched off
for the export, and the logits match ONNX Runtime; with ``with_past`` the decoder step
exports with its cache as tensors and a two-step decode matches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T

import slimgraph as sg
from slimgraph.export import decode as sg_decode
from slimgraph.export import past as sg_past
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


# -- with_past: the decoder step with its key/value cache as tensors ---------------------


def _ort_decode(path: Path, prompt: torch.Tensor, layers: int) -> tuple[list, list]:
    """ONNX Runtime's own two-step decode: the prompt on an empty past, then the greedy
    next token fed the presents ONNX Runtime returned."""
    import onnxruntime as ort

    runner = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = {v.name: v.shape for v in runner.get_inputs()}
    batch, length = prompt.shape
    mask = np.ones((batch, length), np.int64)
    first = {"input_ids": prompt.numpy(), "attention_mask": mask}
    first["position_ids"] = np.tile(np.arange(length), (batch, 1))
    for name in sg_past.past_names(layers):
        _, heads, _, dim = shapes[name]
        first[name] = np.zeros((batch, heads, 0, dim), np.float32)
    out1 = runner.run(None, first)
    token = out1[0][:, -1:].argmax(-1)
    second = {
        "input_ids": token,
        "attention_mask": np.ones((batch, length + 1), np.int64),
        "position_ids": np.full((batch, 1), length),
        **dict(zip(sg_past.past_names(layers), out1[1:])),
    }
    return out1, runner.run(None, second)


@pytest.mark.slow
@pytest.mark.parametrize("family", BUILDERS)
def test_slim_causal_lm_exports_a_decoder_step_with_its_cache(family: str, tmp_path: Path) -> None:
    model, inputs = BUILDERS[family]()
    slim = sg.slim(model, inputs, ratio=0.5).model
    layers = slim.config.num_hidden_layers
    attention = slim.model.layers[0].self_attn
    heads = attention.k_proj.out_features // attention.head_dim
    assert heads < model.config.num_key_value_heads or attention.head_dim < 16  # slimmed
    path = tmp_path / "step.onnx"
    report = sg.export_onnx(slim, inputs, path, with_past=True)
    assert report.past_lengths == (0, 8) and report.batch_sizes == (2, 3)
    assert report.max_rel_diff is not None and report.max_rel_diff < 1e-4
    names = ["input_ids", "attention_mask", "position_ids", *sg_past.past_names(layers)]
    assert [i.name for i in report.inputs] == names
    assert report.inputs[0].shape == ("batch", "sequence")
    for i, layer in enumerate(slim.model.layers):  # each layer's own (slim) cache shape
        attn = layer.self_attn
        shape = ("batch", attn.k_proj.out_features // attn.head_dim, "past_sequence", attn.head_dim)
        assert report.inputs[3 + 2 * i].shape == report.inputs[4 + 2 * i].shape == shape
    assert [o.name for o in report.outputs] == ["logits", *sg_past.present_names(layers)]
    assert report.outputs[0].shape == ("batch", "sequence", hf_models.VOCAB)
    # ONNX Runtime's own loop against the model's own cache (use_cache=True)
    prompt = inputs["input_ids"]
    out1, out2 = _ort_decode(path, prompt, layers)
    with torch.no_grad():
        ref1 = slim(input_ids=prompt, use_cache=True)
        token = ref1.logits[:, -1:].argmax(-1)
        ref2 = slim(input_ids=token, cache=ref1.cache, use_cache=True)
        want2 = [ref2.logits, *sg_past.flat_from_cache(ref2.cache)]
    torch.testing.assert_close(torch.from_numpy(out1[0]), ref1.logits, rtol=1e-4, atol=1e-5)
    assert len(out2) == len(want2) == 1 + 2 * layers
    for got, want in zip(out2, want2):
        assert got.shape[-2] == want.shape[-2]  # the new token, or the past and it (9)
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-5)
    assert slim.config.use_cache


def _llama() -> torch.nn.Module:
    return hf_models.build("llama")[0]


def test_flat_tensors_round_trip_through_a_dynamic_cache() -> None:
    flat = [torch.randn(2, 1 + i % 2, 3, 4) for i in range(4)]  # layers of 1 and 2 heads
    cache = sg_past.cache_from_flat(flat)
    assert cache.get_seq_length() == 3 and len(cache.layers) == 2
    for got, want in zip(sg_past.flat_from_cache(cache), flat, strict=True):
        assert got is want or torch.equal(got, want)
    with pytest.raises(sg.ExportArgumentError, match="a key and a value per layer"):
        sg_past.cache_from_flat(flat[:3])


def test_decoder_step_is_the_model_with_its_cache() -> None:
    model = _llama()
    step = sg_past.DecoderStep(model)
    assert step.input_names == ["input_ids", "attention_mask", "position_ids"]
    ids = torch.randint(1, hf_models.VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(input_ids=ids, use_cache=True)
        head = model(input_ids=ids[:, :4], use_cache=True)
        past = sg_past.flat_from_cache(head.cache)
        out = step(ids[:, 4:], torch.ones_like(ids), torch.arange(4, 6).expand(2, 2), *past)
    torch.testing.assert_close(out[0], whole.logits[:, 4:])
    assert len(out) == 1 + 2 * hf_models.LAYERS
    for got, want in zip(out[1:], sg_past.flat_from_cache(whole.cache), strict=True):
        torch.testing.assert_close(got, want)


def test_decode_cases_read_the_cache_shapes_from_the_model_not_its_config() -> None:
    model = _llama()
    model.config.num_key_value_heads = 8  # a config that disagrees with the weights (2)
    decode = sg_decode.decode_cases(
        model, {"input_ids": torch.ones(1, 5, dtype=torch.long)}, True, False
    )
    (feeds1, _, _), (feeds2, out2, _) = decode.cases
    assert feeds1["past_key_values.0.key"].shape == (1, 2, 0, 8)
    assert feeds2["past_key_values.1.value"].shape == (1, 2, 5, 8)
    assert feeds2["input_ids"].shape == (1, 1) and feeds2["attention_mask"].shape == (1, 6)
    assert feeds2["position_ids"].tolist() == [[5]]
    assert out2[1].shape == (1, 2, 6, 8)
    assert decode.past_lengths == (0, 5)
    # traced at three distinct sizes, so batch, sequence and past stay separate dims
    ids, mask, positions, key = decode.call.args[:4]
    assert (ids.shape, mask.shape, positions.shape, key.shape) == (
        (2, 3),
        (2, 7),
        (2, 3),
        (2, 2, 4, 8),
    )


def test_decode_cases_at_a_fixed_batch_keep_the_batch() -> None:
    ids = torch.randint(1, hf_models.VOCAB, (3, 4), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 0] = 0  # left padding: positions count the attended tokens only
    decode = sg_decode.decode_cases(
        _llama(), {"input_ids": ids, "attention_mask": mask}, False, True
    )
    assert [size for _, _, size in decode.cases] == [3, 3]  # no second batch size
    assert decode.cases[0][0]["position_ids"][:2].tolist() == [[0, 0, 1, 2], [0, 1, 2, 3]]
    assert decode.cases[1][0]["position_ids"][:, 0].tolist() == [3, 4, 4]
    assert decode.call.args[0].shape[0] == 3 and not any(decode.call.dynamic)
    more = sg_decode.decode_cases(_llama(), {"input_ids": ids}, True, True)
    assert [size for _, _, size in more.cases] == [3, 3, 2, 2]


@pytest.mark.parametrize(
    ("model", "inputs", "message"),
    [
        (torch.nn.Linear(2, 2), (torch.ones(1, 2),), "needs a Hugging Face causal LM"),
        (
            _llama,
            {"input_ids": torch.ones(1, 4, dtype=torch.long), "labels": torch.ones(1, 4)},
            "pass those two only",
        ),
        (_llama, {"attention_mask": torch.ones(1, 4)}, "pass those two only"),
        (_llama, {"input_ids": torch.ones(1, 4)}, "must be integer token ids"),
    ],
)
def test_with_past_refuses_what_it_cannot_export(model, inputs, message, tmp_path: Path) -> None:
    model = model() if callable(model) and not isinstance(model, torch.nn.Module) else model
    with pytest.raises(sg.ExportArgumentError, match=message):
        sg.export_onnx(model, inputs, tmp_path / "step.onnx", with_past=True)
    assert not (tmp_path / "step.onnx").exists()
