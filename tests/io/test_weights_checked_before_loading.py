"""``load_weights`` checks the whole file against the model before it changes anything,
and names the keys at fault; malformed alias metadata is refused, not half-applied."""

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import slimgraph as sg
from slimgraph.errors import WeightsError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0)


def _file(tmp_path, tensors, aliases=None):
    path = tmp_path / "w.safetensors"
    meta = {"format": "pt"}
    if aliases is not None:
        meta["slimgraph.aliases"] = aliases
    save_file(tensors, str(path), metadata=meta)
    return path


def _full(**changes) -> dict[str, torch.Tensor]:
    state = {k: torch.full_like(v, 7) for k, v in _net().state_dict().items()}
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


REFUSED = {
    "a missing key": (
        lambda: _full(**{"2.bias": None}),
        None,
        r'missing keys "2\.bias"',
    ),
    "an extra key": (
        lambda: _full(extra=torch.zeros(1)),
        None,
        r'unexpected keys "extra"',
    ),
    "a wrong shape": (
        lambda: _full(**{"2.weight": torch.zeros(2, 5)}),
        None,
        r"size mismatch for 2\.weight: the file holds \[2, 5\], the model \[2, 4\]",
    ),
    "an integer converted": (
        lambda: _full(**{"1.num_batches_tracked": torch.tensor(1.5)}),
        None,
        r"dtype mismatch for 1\.num_batches_tracked: the file holds float32, the model int64",
    ),
    "aliases that are not JSON": (_full, "{not json", r"metadata is not JSON"),
    "aliases that are a list": (_full, json.dumps(["0.weight"]), r"must map names"),
    "an alias to a missing key": (
        lambda: _full(**{"2.bias": None}),
        json.dumps({"2.bias": "nowhere"}),
        r"does not hold: 2\.bias -> nowhere",
    ),
    "an alias replacing a stored tensor": (
        _full,
        json.dumps({"0.weight": "2.weight"}),
        r'would replace the stored tensors "0\.weight"',
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_load_weights_refuses_a_file_that_does_not_fit_and_changes_nothing(tmp_path, case):
    tensors, aliases, message = REFUSED[case]
    path = _file(tmp_path, tensors(), aliases)
    model = _net()
    before = _snapshot(model)
    with pytest.raises(WeightsError, match=message):
        sg.load_weights(model, path)
    _unchanged(model, before)


def test_load_weights_names_every_problem_at_once(tmp_path):
    state = _full(**{"2.bias": None, "2.weight": torch.zeros(2, 5)}, extra=torch.zeros(1))
    with pytest.raises(WeightsError) as err:
        sg.load_weights(_net(), _file(tmp_path, state))
    assert all(k in str(err.value) for k in ('"2.bias"', '"extra"', "2.weight"))


def test_load_weights_refuses_a_file_that_is_not_safetensors(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{trunc")
    with pytest.raises(WeightsError, match="cannot be read as safetensors"):
        sg.load_weights(_net(), path)
    with pytest.raises(WeightsError, match="cannot be read as safetensors"):
        sg.load_weights(_net(), tmp_path / "missing.safetensors")


def test_load_weights_still_converts_float_widths(tmp_path):
    state = {k: v.half() if v.is_floating_point() else v for k, v in _full().items()}
    model = _net()
    sg.load_weights(model, _file(tmp_path, state))
    assert model[0].weight.dtype == torch.float32 and model[0].weight[0, 0].item() == 7.0
