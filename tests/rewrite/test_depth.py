"""Depth pruning: blocks are found by what they compute (x + f(x)), a block whose residual
branch is dead has influence 0 (angular or loss) and goes first with the outputs unchanged
bit for bit, the loss influence is the mean rise of the loss when a block is skipped,
Hugging Face configs follow (layer count, per-layer lists, cache slots) so that
``from_pretrained`` and cached decoding work, and what cannot be dropped is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
import transformers as T
from torch import nn

import slimgraph as sg
from tests.helpers import tiny_llama


class Residual(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.f = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


def test_blocks_are_members_that_return_their_input_when_their_weights_are_zero() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(4, 8),  # changes the width
        Residual(),  # a block
        nn.Linear(8, 8),  # keeps the width, but computes W x: no block
        nn.BatchNorm1d(8),  # keeps it too, but returns the bias: no block
        nn.ReLU(),  # no weights to drop
        nn.Sequential(Residual(), Residual()),  # a stage of blocks: its members are the units
        nn.Linear(8, 2),
    ).eval()
    x = (torch.randn(4, 4),)
    assert sg.find_blocks(net, x) == ["1", "5.0", "5.1"]
    assert sorted(sg.drop_blocks(net, x, n=3, progress=False).dropped) == ["1", "5.0", "5.1"]


def test_a_tiny_or_zero_input_does_not_make_every_layer_a_block() -> None:
    """Deep in a random-weight network activations can be 1e-9 small: a zeroed norm or
    convolution returns 0 there, which is no block; a real block still is one."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), Residual(), nn.Linear(8, 8)).eval()
    with torch.no_grad():
        net[0].weight.mul_(1e-9)
        net[0].bias.zero_()
    x = (torch.randn(4, 8),)
    assert sg.find_blocks(net, x) == ["2"]
    with torch.no_grad():
        net[0].weight.zero_()  # a zero input: nothing can tell a block from a layer
    assert sg.find_blocks(net, x) == []


def _scaling_blocks() -> nn.Sequential:
    """Three blocks computing x + s x for s = 0 (dead), 1 and 0.5: the model gives 3 x."""
    net = nn.Sequential(Residual(2), Residual(2), Residual(2))
    with torch.no_grad():
        for block, scale in zip(net, (0.0, 1.0, 0.5)):
            block.f.weight.copy_(scale * torch.eye(2))
            block.f.bias.zero_()
    return net


def _mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.mse_loss(model(batch[0]), batch[1])


def test_loss_influence_is_the_mean_rise_of_the_loss_when_a_block_is_skipped() -> None:
    net = _scaling_blocks()
    xs = [torch.ones(1, 2), 2 * torch.ones(1, 2)]
    pairs = [(x, 3 * x) for x in xs]  # the whole model's loss is 0
    result = sg.drop_blocks(net, (xs[0],), n=2, calibration=pairs, loss_fn=_mse, progress=False)
    # skipping block 1 gives 1.5 x (mse 2.25 x^2), block 2 gives 2 x (mse x^2); x = 1, 2
    assert result.influence == {"0": 0.0, "1": (2.25 + 9.0) / 2, "2": (1.0 + 4.0) / 2}
    assert result.dropped == ["0", "2"]
    with torch.no_grad():
        assert torch.equal(result.model(xs[1]), 2 * xs[1])  # x + x, block 1 alone
        assert torch.equal(net(xs[1]), 3 * xs[1])  # the original is restored and untouched
    # the angle cannot see a block that scales its input: all three turn it by ~0
    angular = sg.drop_blocks(net, (xs[0],), n=2, calibration=[(x,) for x in xs], progress=False)
    assert max(angular.influence.values()) < 1e-12


def test_a_dead_decoder_layer_costs_no_loss_and_goes_first() -> None:
    model, inputs = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
        ids = [torch.randint(0, 64, (2, 8)) for _ in range(2)]
        pairs = [({"input_ids": i}, model(input_ids=i).logits) for i in ids]

    def distance(m: nn.Module, pair: tuple[dict, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(m(**pair[0]).logits, pair[1])  # 0 for the whole model

    result = sg.drop_blocks(model, inputs, n=1, calibration=pairs, loss_fn=distance, progress=False)
    assert result.dropped == ["model.layers.1"]
    assert result.influence["model.layers.1"] == 0.0
    assert min(v for k, v in result.influence.items() if k != "model.layers.1") > 1e-4
    with torch.no_grad():
        assert torch.equal(result.model(**inputs).logits, model(**inputs).logits)


def _resnet50() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return torchvision.models.resnet50().eval(), (torch.randn(2, 3, 224, 224),)


def test_resnet50_blocks_are_every_bottleneck_after_a_stages_first() -> None:
    model, x = _resnet50()
    stages = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}
    expected = [f"{s}.{i}" for s, n in stages.items() for i in range(1, n)]
    assert sg.find_blocks(model, x) == expected  # 12: each first one has a strided shortcut


def test_a_dead_bottleneck_goes_first_and_the_outputs_stay_bit_for_bit() -> None:
    model, x = _resnet50()
    with torch.no_grad():  # layer3.2 computes relu(0 + x) = x: its input is post-ReLU
        model.layer3[2].bn3.weight.zero_()
        model.layer3[2].bn3.bias.zero_()
    result = sg.drop_blocks(model, x, n=1, progress=False)
    assert result.dropped == ["layer3.2"]
    assert result.influence["layer3.2"] == pytest.approx(0.0, abs=1e-12)
    assert min(v for k, v in result.influence.items() if k != "layer3.2") > 0.2
    assert len(result.model.layer3) == 5 and len(model.layer3) == 6  # a copy; same class
    assert type(result.model) is type(model)
    with torch.no_grad():
        assert torch.equal(result.model(*x), model(*x))


@pytest.mark.slow
def test_resnet50_without_four_bottlenecks_exports_with_parity(tmp_path: Path) -> None:
    model, x = _resnet50()
    result = sg.drop_blocks(model, x, n=4, progress=False)
    assert len(result.dropped) == 4
    blocks = sum(len(getattr(result.model, f"layer{i}")) for i in range(1, 5))
    assert blocks == 12
    macs = sg.count_macs(model, x), sg.count_macs(result.model, x)
    assert macs[1] < 0.85 * macs[0]
    report = sg.export_onnx(result.model, x, tmp_path / "resnet50-depth.onnx")
    assert report.max_rel_diff is not None and report.max_rel_diff < 1e-4


def test_a_dead_decoder_layer_goes_and_the_llama_reloads_and_decodes(tmp_path: Path) -> None:
    model, inputs = tiny_llama()
    with torch.no_grad():  # layer 2 adds nothing to the residual stream
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    result = sg.drop_blocks(model, inputs, n=1, progress=False)
    slim = result.model
    assert result.dropped == ["model.layers.2"]
    assert result.influence["model.layers.2"] == pytest.approx(0.0, abs=1e-12)
    assert slim.config.num_hidden_layers == 3 and model.config.num_hidden_layers == 4
    assert [layer.self_attn.layer_idx for layer in slim.model.layers] == [0, 1, 2]
    with torch.no_grad():
        logits = slim(**inputs).logits
        assert torch.equal(logits, model(**inputs).logits)
        slim.save_pretrained(tmp_path)
        reloaded = T.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        assert torch.equal(reloaded(**inputs).logits, logits)
        ids = inputs["input_ids"]  # the cache has one slot per kept layer
        first = slim(input_ids=ids[:, :5], use_cache=True)
        rest = slim(input_ids=ids[:, 5:], past_key_values=first.past_key_values, use_cache=True)
        assert torch.allclose(rest.logits, logits[:, 5:], atol=1e-5)


def test_per_layer_config_lists_lose_the_dropped_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = T.Gemma2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=4,
    )
    model = T.Gemma2ForCausalLM(config).eval()
    inputs = {"input_ids": torch.randint(0, 64, (2, 8))}
    types = list(model.config.layer_types)
    assert len(set(types)) == 2  # sliding and full attention alternate
    result = sg.drop_blocks(model, inputs, blocks=["model.layers.1"], progress=False)
    assert result.model.config.layer_types == [types[0], types[2], types[3]]
    assert result.model.config.slimgraph_config_exact
    result.model.save_pretrained(tmp_path)
    reloaded = T.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, result.model(**inputs).logits)


@pytest.mark.slow
def test_llama_without_a_layer_exports_with_parity(tmp_path: Path) -> None:
    model, inputs = tiny_llama()
    slim = sg.drop_blocks(model, inputs, n=1, progress=False).model
    report = sg.export_onnx(slim, inputs, tmp_path / "llama-depth.onnx")
    assert report.max_rel_diff is not None and report.max_rel_diff < 1e-4


def test_what_cannot_be_dropped_is_refused_with_the_reason() -> None:
    model, inputs = tiny_llama()
    with pytest.raises(sg.RewriteError, match=r"\['lm_head'\] are not droppable blocks"):
        sg.drop_blocks(model, inputs, blocks=["lm_head"], progress=False)
    with pytest.raises(sg.RewriteError, match="n must be between 1 and 4"):
        sg.drop_blocks(model, inputs, n=5, progress=False)
    with pytest.raises(sg.RewriteError, match="pass n .* or blocks"):
        sg.drop_blocks(model, inputs, n=1, blocks=["model.layers.0"], progress=False)
    with pytest.raises(sg.RewriteError, match="pass calibration=batches too"):
        sg.drop_blocks(model, inputs, n=1, loss_fn=lambda m, b: m(**b).logits.sum())
    with pytest.raises(sg.RewriteError, match="must return a scalar tensor"):
        sg.drop_blocks(model, inputs, n=1, calibration=[inputs], loss_fn=lambda m, b: m(**b).logits)
    nested = nn.Sequential(nn.Sequential(Residual(), Residual()))  # the stage is no block
    with pytest.raises(sg.RewriteError, match=r"\['0'\] are not droppable blocks"):
        sg.drop_blocks(nested, (torch.randn(2, 8),), blocks=["0", "0.1"], progress=False)
