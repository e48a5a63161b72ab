"""Saving and loading weights as safetensors: tied tensors, buffers, slim models."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import slimgraph as sg
from slimgraph.errors import WeightsError


class TiedNet(nn.Module):
    """An embedding tied to the output head, a BatchNorm's buffers and a buffer of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.rand(4))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(ids)) * self.scale)


class SmallCNN(nn.Module):
    """Conv, BatchNorm, a residual block and a classifier: enough groups to slim."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 16, 3, padding=1),
            nn.BatchNorm2d(16),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(torch.relu(x + self.block(x)))


def _built(cls: type[nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return cls()


def _trained_stats(net: TiedNet) -> TiedNet:
    """Move the BatchNorm statistics off their defaults, so loading them is visible."""
    net.train()
    with torch.no_grad():
        net(torch.randint(0, 10, (8,)))
    return net.eval()


def test_round_trip_restores_tied_weights_and_buffers_exactly(tmp_path):
    net = _trained_stats(_built(TiedNet, seed=0))
    fresh = _built(TiedNet, seed=1)
    assert not torch.equal(fresh.embed.weight, net.embed.weight)
    assert not torch.equal(fresh.norm.running_mean, net.norm.running_mean)
    path = tmp_path / "tied.safetensors"
    assert sg.save_weights(net, path) == {"head.weight": "embed.weight"}
    assert sorted(load_file(path)) == [
        "embed.weight",
        "norm.bias",
        "norm.num_batches_tracked",
        "norm.running_mean",
        "norm.running_var",
        "norm.weight",
        "scale",
    ]
    result = sg.load_weights(fresh, path)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert fresh.head.weight is fresh.embed.weight  # still tied, not two copies
    expected = net.state_dict()
    loaded = fresh.state_dict()
    assert sorted(loaded) == sorted(expected)
    for name, tensor in loaded.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
    ids = torch.tensor([1, 4, 9])
    assert torch.equal(fresh.eval()(ids), net(ids))


def test_slim_model_reloads_into_the_plan_applied_to_a_fresh_model(tmp_path):
    model = _built(SmallCNN, seed=0).eval()
    x = torch.randn(2, 3, 16, 16)
    r = sg.slim(model, (x,), ratio=0.5)
    assert r.model.stem[0].out_channels == 8
    path = tmp_path / "slim.safetensors"
    sg.save_weights(r.model, path)
    rebuilt = sg.apply(_built(SmallCNN, seed=1).eval(), r.plan)
    assert not torch.equal(rebuilt(x), r.model(x))
    sg.load_weights(rebuilt, path)
    assert torch.equal(rebuilt(x), r.model(x))
    for name, tensor in rebuilt.state_dict().items():
        torch.testing.assert_close(tensor, r.model.state_dict()[name], rtol=0, atol=0)


def test_load_weights_reads_a_plain_safetensors_file(tmp_path):
    net = _built(SmallCNN, seed=0)
    path = tmp_path / "plain.safetensors"
    save_file(net.state_dict(), str(path))
    fresh = _built(SmallCNN, seed=1)
    sg.load_weights(fresh, path)
    torch.testing.assert_close(fresh.stem[0].weight, net.stem[0].weight, rtol=0, atol=0)


def test_load_weights_refuses_a_model_of_other_widths(tmp_path):
    path = tmp_path / "w.safetensors"
    sg.save_weights(nn.Linear(2, 3), path)
    with pytest.raises(WeightsError, match=r"size mismatch for weight: .*\[3, 2\].*\[4, 2\]"):
        sg.load_weights(nn.Linear(2, 4), path)


class _WithExtraState(torch.nn.Linear):
    def get_extra_state(self):
        return {"note": "not a tensor"}

    def set_extra_state(self, state):
        pass


def test_save_weights_dedups_tied_copies_shared_memory_and_skips_non_tensors(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), _WithExtraState(3, 2))
    net.tied = torch.nn.Linear(3, 3)
    net.tied.weight = net[0].weight
    net.register_buffer("first_row", net[0].weight.detach()[:1])  # shares memory, other view
    assert "1._extra_state" in net.state_dict()
    path = tmp_path / "w.safetensors"
    assert sg.save_weights(net, path) == {"tied.weight": "0.weight"}
    saved = load_file(path)
    assert sorted(saved) == ["0.bias", "0.weight", "1.bias", "1.weight", "first_row", "tied.bias"]
    torch.testing.assert_close(saved["first_row"], net[0].weight.detach()[:1])
    torch.testing.assert_close(saved["0.weight"], net[0].weight.detach())
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["slimgraph.aliases"]) == {"tied.weight": "0.weight"}


def test_save_weights_adds_the_given_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    sg.save_weights(nn.Linear(2, 2), path, {"slimgraph.fingerprint": "abc"})
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"format": "pt", "slimgraph.fingerprint": "abc"}


def test_extra_state_is_not_saved_so_only_a_lax_load_accepts_it(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), _WithExtraState(3, 2))
    path = tmp_path / "w.safetensors"
    sg.save_weights(net, path)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 3), _WithExtraState(3, 2))
    with pytest.raises(WeightsError, match=r'missing keys "1._extra_state"'):
        sg.load_weights(fresh, path)
    result = sg.load_weights(fresh, path, strict=False)
    assert (result.missing_keys, result.unexpected_keys) == (["1._extra_state"], [])
    torch.testing.assert_close(fresh[1].weight, net[1].weight, rtol=0, atol=0)
