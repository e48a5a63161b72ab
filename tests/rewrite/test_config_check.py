"""The exactness check of a solved config: a model rebuilt from it must compute like the
slim model, not only have its shapes (hf_config's ``config_describes``)."""

from __future__ import annotations

import torch
import transformers as T
from torch import nn

from slimgraph.rewrite.hf_config import read_ints, update_configs


class HeadsConfig(T.PretrainedConfig):
    model_type = "slimgraph_toy_heads"

    def __init__(self, hidden_size: int = 32, num_heads: int = 4, **kwargs) -> None:
        self.hidden_size, self.num_heads = hidden_size, num_heads
        super().__init__(**kwargs)


class Attention(nn.Module):
    """Old-style BERT attention: the head size is derived from the config, the head count
    is left to ``view(..., -1, head_size)``, and the scores are scaled by the head size."""

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.config = config
        self.head_size = config.hidden_size // config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.unflatten(-1, (-1, self.head_size)) for t in self.qkv(x).chunk(3, -1))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.head_size**0.5
        return self.out(torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).flatten(-2))


class Heads(nn.Module):
    """The model: its attention is a layer (the root's own ints follow the config)."""

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.config = config
        self.attention = Attention(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x)


# from_pretrained must bring the toy back for its config to be called exact
T.AutoConfig.register(HeadsConfig.model_type, HeadsConfig, exist_ok=True)
T.AutoModel.register(HeadsConfig, Heads, exist_ok=True)


def test_read_ints_are_what_forward_reads() -> None:
    model = Heads(HeadsConfig())
    assert read_ints(model) == {"attention.head_size": 8}  # not training, not the config


def test_a_config_with_other_head_sizes_is_not_exact() -> None:
    original = Heads(HeadsConfig(hidden_size=32, num_heads=4))
    slim = Heads(HeadsConfig(hidden_size=16, num_heads=4))
    slim.attention.head_size = 8  # two of the four heads dropped: the head size stays
    slim.config.hidden_size = 32  # as the original's, for the solver to derive
    # hidden_size=16 rebuilds every shape, but with heads of 4: other logits
    update = update_configs(slim, original)
    assert update is not None and not update.exact


def test_a_config_with_the_same_head_sizes_is_exact() -> None:
    original = Heads(HeadsConfig(hidden_size=32, num_heads=4))
    slim = Heads(HeadsConfig(hidden_size=16, num_heads=4))  # half of every head's dims
    slim.config.hidden_size = 32
    update = update_configs(slim, original)
    assert update is not None and update.exact and update.fields == {"hidden_size": 16}
