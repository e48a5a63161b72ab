"""The sweeps: every model type in transformers' causal-LM (and masked-LM and
image-classification) auto mapping, built tiny from its config class by one generic
shrinker, slimmed, saved and reloaded; causal LMs also generate.

No per-family code: the shrinker rewrites config fields by what their names say (layer
counts, widths, head counts, expert counts, vocabulary, positions) and truncates per-layer
lists; a family whose tiny config does not build is reported with the reason.
"""

from __future__ import annotations

import re
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers as T
from transformers.models.auto import modeling_auto

import slimgraph as sg
from slimgraph.rewrite.hf_config import update_configs

VOCAB, LAYERS, HIDDEN, MLP, HEADS, KV, HEAD_DIM, EXPERTS = 128, 2, 64, 128, 4, 2, 16, 4
MAX_PARAMS = 3_000_000  # a tiny model has about 0.1M; more means a field was not shrunk

# field-name pattern -> tiny value; the first pattern that matches a field's name wins
TINY: list[tuple[str, int]] = [
    (r"^(num_hidden_layers|n_layers?|num_layers|num_decoder_layers|(en|de)coder_layers)$", LAYERS),
    (r"vocab_size$", VOCAB),
    (r"^(hidden_size|n_embd|d_model|dim|embed_dim|model_dim|word_embed_proj_dim)$", HIDDEN),
    (r"^(num_key_value_heads|num_kv_heads|multi_query_group_num|n_kv_heads)$", KV),
    (
        r"^(num_attention_heads|n_heads?|num_heads|attention_heads|(en|de)coder_attention_heads)$",
        HEADS,
    ),
    (r"^(head_dim|d_kv|kv_channels|attention_head_size)$", HEAD_DIM),
    (r"^(intermediate_size|ffn_dim|n_inner|d_ff|ffn_hidden_size|(en|de)coder_ffn_dim)$", MLP),
    (r"(moe|expert|shared_expert)_intermediate_size$", MLP // 4),
    (r"^(num_experts|num_local_experts|n_routed_experts|moe_num_experts)$", EXPERTS),
    (r"^(num_experts_per_tok|moe_topk|top_k|num_selected_experts)$", 2),
    (r"^(n_shared_experts|num_shared_experts)$", 1),
    (r"^(max_position_embeddings|n_positions|n_ctx|max_seq_len|seq_length)$", 64),
    (r"_lora_rank$", 16),
    (r"^(qk_rope_head_dim|qk_nope_head_dim|v_head_dim)$", HEAD_DIM),
    (r"^image_size$", 64),
]
# per-stage lists of vision backbones: a stage of one block, eight times narrower
STAGES: list[tuple[str, Any]] = [
    (r"^depths$", lambda v: 1),
    (r"^(hidden_sizes|embed_dims?|hidden_dims|neck_hidden_sizes)$", lambda v: max(8, v // 8)),
]


def tiny_config(model_type: str) -> Any:
    """The config of ``model_type`` built with every size field made tiny (passed to the
    constructor, so that fields it derives, such as stage names, follow), sub-configs
    (a multimodal model's text and vision configs) included."""
    return T.AutoConfig.for_model(
        model_type, **_tiny_fields(T.AutoConfig.for_model(model_type).to_dict())
    )


def _tiny_fields(default: dict[str, Any]) -> dict[str, Any]:
    layers = next(
        (v for k, v in default.items() if re.match(TINY[0][0], k) and isinstance(v, int)), None
    )
    tiny = {k: t for k, v in default.items() if (t := _tiny_value(k, v, layers)) is not None}
    for name, value in default.items():
        if isinstance(value, dict) and "model_type" in value:  # a sub-config
            tiny[name] = value | _tiny_fields(value)
        if name.endswith("token_id") and isinstance(value, int) and value >= VOCAB:
            tiny[name] = VOCAB - 1  # ids must address the tiny vocabulary
    return tiny


def _tiny_value(name: str, value: Any, layers: int | None) -> Any:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        tiny = next((v for pattern, v in TINY if re.search(pattern, name)), None)
        return min(tiny, value) if tiny is not None and value > 0 else None
    if isinstance(value, list) and layers and len(value) == layers:  # one entry per layer
        return value[:LAYERS]
    stage = next((f for pattern, f in STAGES if re.search(pattern, name)), None)
    if stage is not None and isinstance(value, list) and all(isinstance(v, int) for v in value):
        return [stage(v) for v in value]
    return None


@dataclass
class Outcome:
    """What happened to one family."""

    family: str
    stage: str = "build"  # the last stage reached: build, slim, reload, generate, done
    macs_kept: float | None = None
    reload: str = "-"  # from_pretrained or sg.load (with the reason)
    max_diff: float | None = None
    error: str = ""
    warnings: list[str] = field(default_factory=list)


# task -> (the auto mapping's model types, the auto class, what the model reads)
TASKS: dict[str, tuple[list[str], Any, str]] = {
    "causal-lm": (
        sorted(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
        T.AutoModelForCausalLM,
        "input_ids",
    ),
    "masked-lm": (
        sorted(modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES),
        T.AutoModelForMaskedLM,
        "input_ids",
    ),
    "image-classification": (
        sorted(modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES),
        T.AutoModelForImageClassification,
        "pixel_values",
    ),
}


def build(
    model_type: str, task: str = "causal-lm", seed: int = 0
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The family's tiny model for ``task`` (random weights, eval mode) and its inputs."""
    _, auto, reads = TASKS[task]
    torch.manual_seed(seed)
    config = tiny_config(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):  # what the shrinker missed shows before allocating it
            size = sum(p.numel() for p in auto.from_config(config).parameters())
        if size > MAX_PARAMS:
            raise ValueError(f"the shrunk config still has {size / 1e6:.0f}M parameters")
        model = auto.from_config(config)
    g = torch.Generator().manual_seed(seed + 1)
    if reads == "pixel_values":
        size = getattr(config, "image_size", 64)
        size = size[0] if isinstance(size, list | tuple) else size
        channels = getattr(config, "num_channels", 3)
        return model.float().eval(), {
            "pixel_values": torch.randn(2, channels, size, size, generator=g)
        }
    return model.float().eval(), {"input_ids": torch.randint(3, VOCAB - 1, (2, 8), generator=g)}


def logits(model: torch.nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**x).logits


def run(model_type: str, task: str = "causal-lm", ratio: float = 0.5) -> Outcome:
    """Slim one family at ``ratio``, save it, reload it (and let a causal LM generate)."""
    out = Outcome(model_type)
    auto = TASKS[task][1]
    try:
        model, x = build(model_type, task)
        before = logits(model, x)  # a family whose tiny model does not run has not built
        out.stage = "slim"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = sg.slim(model, x, ratio=ratio)
        out.warnings = [str(w.message) for w in caught]
        slim = result.model
        out.macs_kept = sg.count_macs(slim, x) / sg.count_macs(model, x)
        after = logits(slim, x)
        assert after.shape == before.shape, f"logits {after.shape} != {before.shape}"
        out.stage = "reload"
        update = update_configs(slim, model)
        with tempfile.TemporaryDirectory() as tmp:
            if update is not None and update.exact:
                slim.save_pretrained(Path(tmp) / "hf")
                again = auto.from_pretrained(Path(tmp) / "hf").eval()
                out.reload = "from_pretrained"
            else:
                sg.save(slim, Path(tmp) / "sg", result.plan)
                again = sg.load(Path(tmp) / "sg")
                out.reload = "sg.load"
            out.max_diff = float((logits(again, x) - after).abs().max())
        out.stage = "generate"
        if task == "causal-lm":
            with torch.no_grad():
                again.generate(**x, max_new_tokens=2, do_sample=False)
        out.stage = "done"
    except Exception as e:  # noqa: BLE001 - the sweep reports every failure
        out.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
        out.error += " @ " + traceback.extract_tb(e.__traceback__)[-1].filename.split("/")[-1]
    return out
