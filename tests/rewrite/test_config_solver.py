"""Configs without per-family tables: the solver derives the slim config of Hugging Face
families that rules/configs.toml does not list, and every family that slims reloads."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import transformers as T
from torch import nn

import slimgraph as sg
from slimgraph.graph.ruletable import load_rules
from slimgraph.rewrite.config_solver import solve_config
from slimgraph.rewrite.hf_config import update_configs
from tests.hf_models import DECODER, VOCAB, build

pytestmark = pytest.mark.filterwarnings("ignore:model.config")

TINY = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2}
# family -> (config class, config kwargs, model class); none of them is in configs.toml
UNLISTED: dict[str, tuple[Any, dict[str, Any], Any]] = {
    "falcon": (T.FalconConfig, {**TINY, "num_attention_heads": 8}, T.FalconForCausalLM),
    "gpt_neox": (
        T.GPTNeoXConfig,
        {**TINY, "intermediate_size": 128, "num_attention_heads": 4},
        T.GPTNeoXForCausalLM,
    ),
    "stablelm": (T.StableLmConfig, DECODER, T.StableLmForCausalLM),
    "granite": (T.GraniteConfig, DECODER, T.GraniteForCausalLM),
    "phi": (
        T.PhiConfig,
        {**TINY, "intermediate_size": 128, "num_attention_heads": 4},
        T.PhiForCausalLM,
    ),
    "bloom": (
        T.BloomConfig,
        {"vocab_size": VOCAB, "hidden_size": 64, "n_layer": 2, "n_head": 4},
        T.BloomForCausalLM,
    ),
    "gemma2": (T.Gemma2Config, {**DECODER, "head_dim": 16}, T.Gemma2ForCausalLM),
    # embed_scale = sqrt(hidden_size): a config with the slim hidden size rebuilds the
    # shapes but not the scale (and the head size is hidden / heads): sg.load only
    "biogpt": (
        T.BioGptConfig,
        {**TINY, "intermediate_size": 128, "num_attention_heads": 4},
        T.BioGptForCausalLM,
    ),
    "gemma3": (T.Gemma3TextConfig, {**DECODER, "head_dim": 16}, T.Gemma3ForCausalLM),
}
# (family, prune_residual) whose slim config the solver derives (the rest reload with sg.load)
SOLVED = {
    ("granite", True),
    ("granite", False),
    ("phi", True),
    ("phi", False),
    ("gemma2", False),
    ("gemma3", False),
    ("stablelm", True),  # its attention rule (modules.toml) keeps head counts in step
    ("falcon", False),
}


def build_unlisted(family: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    config_cls, kwargs, model_cls = UNLISTED[family]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_cls(config_cls(**kwargs)).eval()
    return model, {
        "input_ids": torch.randint(1, VOCAB, (2, 8), generator=torch.Generator().manual_seed(1))
    }


def logits(model: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**x).logits


@pytest.mark.zoo
@pytest.mark.parametrize("prune_residual", [True, False], ids=["residual", "keep-residual"])
@pytest.mark.parametrize("family", sorted(UNLISTED))
def test_unlisted_family_reloads(family: str, prune_residual: bool, tmp_path) -> None:
    model, x = build_unlisted(family)
    assert load_rules().config_rule(model.config.model_type) is None
    result = sg.slim(model, x, ratio=0.5, prune_residual=prune_residual)
    slim, after = result.model, logits(result.model, x)
    assert sg.count_macs(slim, x) < sg.count_macs(model, x)
    update = update_configs(slim, model)
    assert update is not None and update.exact == ((family, prune_residual) in SOLVED)
    if update.exact:  # plain transformers reloads it
        assert update.by == "solver" and update.fields
        slim.save_pretrained(tmp_path / "hf")
        again = T.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
        torch.testing.assert_close(logits(again, x), after, atol=1e-5, rtol=0)
    sg.save(slim, tmp_path / "sg", result.plan)
    torch.testing.assert_close(logits(sg.load(tmp_path / "sg"), x), after, atol=1e-5, rtol=0)


def test_layers_slimmed_differently_reload_with_sg_load(tmp_path) -> None:
    model, x = build_unlisted("granite")
    result = sg.slim(model, x, ratio=0.5, scope="global")
    update = update_configs(result.model, model)
    assert update is not None and not update.exact
    sg.save(result.model, tmp_path, result.plan)
    again = sg.load(tmp_path)
    torch.testing.assert_close(logits(again, x), logits(result.model, x), atol=1e-5, rtol=0)


# the families of configs.toml: the solver alone finds what the table says (where the config
# can describe the slim model at all)
TABLE = ["llama", "mistral", "qwen2", "qwen3", "phi3", "bert", "distilbert", "gpt2", "opt", "vit"]


@pytest.mark.zoo
@pytest.mark.parametrize("family", TABLE)
def test_solver_reproduces_the_table(family: str) -> None:
    model, x = build(family)
    slim = sg.slim(model, x, ratio=0.5).model
    table = update_configs(slim, model)
    assert table is not None and table.exact and table.by == "table"
    solved = solve_config(slim, model)
    assert solved is not None
    changed = {k: v for k, v in table.fields.items() if getattr(model.config, k, None) != v}
    # the same values; the table may also pin a field that the config derives anyway
    # (ViT's head_dim = hidden / heads)
    assert solved and solved.items() <= changed.items()


class ToyConfig:
    """A config with one width per model and one that the model derives when unset."""

    def __init__(self, hidden: int = 4, width: int = 8, layers: int = 2) -> None:
        self.hidden, self.width, self.layers = hidden, width, layers

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class Toy(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        inner = getattr(config, "inner", 2 * config.width)  # read but not set by default
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(config.hidden, config.width), nn.Linear(config.width, inner))
            for _ in range(config.layers)
        )


def test_solver_on_a_toy_config() -> None:
    original = Toy(ToyConfig())
    assert solve_config(Toy(ToyConfig(width=3)), original) == {"width": 3}
    assert solve_config(original, original) == {}
    slim = Toy(ToyConfig(width=3))
    slim.blocks[0][1] = nn.Linear(3, 5)  # a width that only the unset field can give
    slim.blocks[1][1] = nn.Linear(3, 5)
    assert solve_config(slim, original) == {"width": 3, "inner": 5}
    slim.blocks[1][0], slim.blocks[1][1] = nn.Linear(4, 4), nn.Linear(4, 5)  # layers differ
    assert solve_config(slim, original) is None


def test_a_config_the_auto_classes_do_not_map_is_not_exact() -> None:
    """Emu3's causal LM holds its text sub-config, which AutoConfig does not know and
    AutoModelForCausalLM does not map to a model: from_pretrained cannot bring it back,
    so it reloads with sg.load (issue 12)."""
    kwargs = {**DECODER, "vocab_size": VOCAB, "pad_token_id": 0}
    for config, arch, exact in [
        (T.Emu3TextConfig(**kwargs), T.Emu3ForCausalLM, False),
        (T.LlamaConfig(**kwargs), T.LlamaForCausalLM, True),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = arch(config)
        update = update_configs(model, model)
        assert update is not None and update.exact == exact, type(model).__name__


class PerLayerConfig(ToyConfig):
    """A heterogeneous config: ``width`` is per layer, so a global read raises (as
    transformers' ``AmbiguousGlobalPerLayerAttributeError`` does) until it is set."""

    def __getattribute__(self, name: str) -> Any:
        if name == "width" and not object.__getattribute__(self, "set_globally"):
            raise RuntimeError("'width' is a per-layer attribute")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, "set_globally", name == "width" or vars(self).get("set_globally"))
        object.__setattr__(self, name, value)


class PerLayerToy(Toy):
    def __init__(self, config: ToyConfig) -> None:
        nn.Module.__init__(self)
        self.config = config
        width = vars(config)["width"]  # what its per-layer config says
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(config.hidden, width), nn.Linear(width, 2 * width))
            for _ in range(config.layers)
        )


def test_solver_skips_a_field_whose_read_raises() -> None:
    config = PerLayerConfig()
    object.__setattr__(config, "set_globally", False)
    with pytest.raises(RuntimeError):
        _ = config.width
    original, slim = PerLayerToy(config), PerLayerToy(ToyConfig(width=3))
    # only the per-layer field could describe it: no config, and no error
    assert solve_config(slim, original) is None
