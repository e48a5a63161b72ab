"""``sg.load`` refuses a folder it cannot rebuild with a ``LoadError`` that says what is
wrong: broken or truncated files, a config that does not fit the weights (checked on the
meta device, before any memory is allocated), no transformers."""

import json
import shutil
import sys

import pytest
import torch

import slimgraph as sg
from slimgraph.errors import LoadError
from tests.hf_models import build

SOURCE = "slimgraph_source_config"
SLIM: dict = {}  # the slim models the fixture saved, to compare what loads back


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A bert slimmed under global scope (reloads through the plan) and a uniformly
    slimmed llama (reloads through from_pretrained)."""
    root = tmp_path_factory.mktemp("saved")
    model, x = build("bert")
    result = sg.slim(model, x, ratio=0.5, scope="global")
    sg.save(result.model, root / "plan", result.plan)
    model, x = build("llama")
    sg.save(sg.slim(model, x, ratio=0.5).model, root / "exact")
    SLIM["plan"] = result.model
    return root


def _copy(saved, tmp_path, which="plan"):
    folder = tmp_path / which
    shutil.copytree(saved / which, folder)
    return folder


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_saved_folders_still_load(saved):
    again = sg.load(saved / "plan")
    assert not again.training and not sg.load(saved / "exact").training
    expected = SLIM["plan"].state_dict()
    assert again.config.intermediate_size == SLIM["plan"].config.intermediate_size
    for name, tensor in again.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


@pytest.mark.parametrize("which", ["plan", "exact"])
def test_a_config_too_big_for_the_weights_is_refused_before_allocating(saved, tmp_path, which):
    """Issue 13 item 8: a vocabulary of 10¹² tokens would ask for 256 TB."""
    folder = _copy(saved, tmp_path, which)

    def huge(data):
        (data[SOURCE] if which == "plan" else data)["vocab_size"] = 10**12

    _edit_json(folder / "config.json", huge)
    with pytest.raises(LoadError, match="nothing was allocated"):
        sg.load(folder)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


BROKEN = {
    "config.json not JSON": (
        lambda f: _truncate(f / "config.json"),
        "config.json is not valid JSON",
    ),
    "config.json a list": (
        lambda f: (f / "config.json").write_text("[1, 2]"),
        "holds a list, not a config",
    ),
    "architectures naming a non-model": (
        lambda f: _edit_json(
            f / "config.json", lambda d: d.update(architectures=["is_torch_available"])
        ),
        r"architectures \['is_torch_available'\] names no model class",
    ),
    "architectures not a list": (
        lambda f: _edit_json(f / "config.json", lambda d: d.update(architectures=7)),
        "architectures 7 names no model class",
    ),
    "a source config of an unknown family": (
        lambda f: _edit_json(f / "config.json", lambda d: d[SOURCE].update(model_type="nope")),
        "the config does not load",
    ),
    "plan truncated": (
        lambda f: _truncate(f / "slimgraph_plan.json"),
        "slimgraph_plan.json is not a valid plan",
    ),
    "plan input of dtype foo": (
        lambda f: _edit_json(
            f / "slimgraph_plan.json", lambda d: d["inputs"][0].update(dtype="foo")
        ),
        "slimgraph_plan.json is not a valid plan",
    ),
    "weights missing": (
        lambda f: (f / "model.safetensors").unlink(),
        "has no model.safetensors",
    ),
    "weights truncated": (
        lambda f: _truncate(f / "model.safetensors"),
        "model.safetensors cannot be read as safetensors",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_folder_raises_a_load_error(saved, tmp_path, case):
    """Issue 13 item 11: no raw JSONDecodeError, AttributeError, ValidationError,
    SafetensorError or FileNotFoundError from sg.load."""
    breaks, message = BROKEN[case]
    folder = _copy(saved, tmp_path)
    breaks(folder)
    with pytest.raises(LoadError, match=message):
        sg.load(folder)


def test_no_config_json_says_what_is_missing(saved, tmp_path):
    """Issue 13 item 15b: the folder was saved by sg.save; say config.json is missing."""
    folder = tmp_path / "net"
    sg.save(torch.nn.Linear(2, 2), folder)
    with pytest.raises(
        LoadError, match=r"has no config\.json \(it holds model\.safetensors\)"
    ) as err:
        sg.load(folder)
    assert "sg.load_weights" in str(err.value)


def test_without_transformers_the_error_names_the_extra(saved, monkeypatch):
    """Issue 13 item 15b: ``pip install slimgraph`` has no transformers."""
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    with pytest.raises(LoadError, match=r'pip install "slimgraph\[hf\]"'):
        sg.load(saved / "plan")
