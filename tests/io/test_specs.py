"""Model specs: torchvision:NAME, timm:NAME, package.module:factory, and input shapes."""

import sys

import pytest
import torch
from torch import nn

from slimgraph import ModelSpecError, SlimGraphError
from slimgraph.io.specs import default_input, input_shape, load_model, parse_shape


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())


def needs_args(width: int) -> nn.Module:
    return nn.Linear(width, width)


class Factories:
    @staticmethod
    def build() -> nn.Module:
        return nn.Linear(2, 3)


def test_torchvision_spec_builds_the_named_model():
    model = load_model("torchvision:squeezenet1_1")
    assert type(model).__name__ == "SqueezeNet"
    assert model.classifier[1].out_channels == 1000


def test_timm_spec_builds_the_named_model():
    model = load_model("timm:test_byobnet")
    assert type(model).__module__ == "timm.models.byobnet"
    assert model.pretrained_cfg["architecture"] == "test_byobnet"


def test_factory_spec_calls_the_factory():
    model = load_model(f"{__name__}:tiny_net")
    assert isinstance(model, nn.Sequential)
    assert model[0].out_channels == 4


def test_factory_spec_may_name_a_class_or_a_nested_attribute():
    assert isinstance(load_model("torch.nn:Identity"), nn.Identity)
    assert load_model(f"{__name__}:Factories.build").out_features == 3


def test_specs_are_stripped_of_surrounding_spaces():
    assert isinstance(load_model("  torch.nn:Identity "), nn.Identity)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "resnet18",
            "model spec 'resnet18' is not SOURCE:NAME (did you mean 'torchvision:resnet18'?)",
        ),
        ("test_byobnet", "(did you mean 'timm:test_byobnet'?)"),
        ("", "model spec '' is not SOURCE:NAME; e.g. torchvision:resnet18"),
        ("torchvision:", "model spec 'torchvision:' is not SOURCE:NAME"),
        (":resnet18", "model spec ':resnet18' is not SOURCE:NAME"),
        ("torchvision:resnet19", "torchvision has no model 'resnet19'; close matches: resnet18,"),
        ("torchvision:zzzz", "torchvision has no model 'zzzz'; no close match"),
        ("timm:resnt18", "timm has no model 'resnt18'; close matches: resnet18,"),
        ("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
        (
            "torch.nn:Identiti",
            "module 'torch.nn' has no attribute 'Identiti'; close matches: Identity",
        ),
        ("math:pi", "model spec 'math:pi': 'pi' is not callable"),
        (
            "builtins:dict",
            "model spec 'builtins:dict': dict() returned dict, not a torch.nn.Module",
        ),
        (f"{__name__}:needs_args", "calling needs_args() with no arguments failed (TypeError:"),
    ],
)
def test_bad_specs_say_what_to_change(spec, message):
    with pytest.raises(ModelSpecError) as info:
        load_model(spec)
    assert message in str(info.value)
    assert isinstance(info.value, SlimGraphError)


def test_missing_timm_is_a_spec_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ModelSpecError, match=r"timm is not installed.*pip install timm"):
        load_model("timm:resnet18")
    with pytest.raises(ModelSpecError) as info:  # the bare-name hint must not need timm
        load_model("test_byobnet")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ("torchvision:resnet18", (1, 3, 224, 224)),
        ("torchvision:inception_v3", (1, 3, 299, 299)),
        ("torchvision:r3d_18", (1, 3, 16, 112, 112)),
        ("torch.nn:Identity", (1, 3, 224, 224)),
    ],
)
def test_input_shape_by_name(spec, shape):
    assert input_shape(spec) == shape


def test_input_shape_of_a_timm_model_comes_from_its_pretrained_cfg():
    model = load_model("timm:test_byobnet")
    assert input_shape("timm:test_byobnet", model) == (1, *model.pretrained_cfg["input_size"])
    assert input_shape("timm:test_byobnet", model) == (1, 3, 160, 160)


def test_input_shape_reads_image_size_and_pretrained_cfg_from_any_model():
    vit_like = nn.Identity()
    vit_like.image_size = 96
    assert input_shape("torch.nn:Identity", vit_like) == (1, 3, 96, 96)
    configured = nn.Identity()
    configured.pretrained_cfg = {"input_size": (3, 64, 48)}
    assert input_shape("torch.nn:Identity", configured) == (1, 3, 64, 48)
    configured.pretrained_cfg = {"input_size": "bad"}  # not a shape: ignored
    assert input_shape("torch.nn:Identity", configured) == (1, 3, 224, 224)


def test_default_input_is_random_of_the_right_shape():
    x = default_input("torchvision:inception_v3")
    assert x.shape == (1, 3, 299, 299)
    assert x.dtype == torch.float32
    assert default_input("torchvision:resnet18", shape=(2, 3, 8, 8)).shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    ("text", "shape"),
    [("1,3,224,224", (1, 3, 224, 224)), (" 1, 3, 64 ", (1, 3, 64)), ("8", (8,))],
)
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize(
    "text", ["", "1,3,a", "1x3x224x224", "1,,3", "0,3,8,8", "-1,3,8,8", "1.5,3"]
)
def test_parse_shape_refuses_what_is_not_positive_integers(text):
    with pytest.raises(ModelSpecError) as info:
        parse_shape(text)
    assert str(info.value) == (
        f"input shape {text!r} is not a list of positive integers; write it like 1,3,224,224"
    )


def _saved_bert(tmp_path, pickled: bool):
    from tests import hf_models

    model, _ = hf_models.build("bert")
    model.save_pretrained(tmp_path)
    if pickled:  # the same weights as the legacy pickle checkpoint
        (tmp_path / "model.safetensors").unlink()
        torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    return tmp_path


def test_hf_spec_never_reads_a_pickled_checkpoint(tmp_path):
    # pytorch_model.bin is a pickle: from_pretrained would read it; slimgraph refuses
    folder = _saved_bert(tmp_path, pickled=True)
    assert (folder / "pytorch_model.bin").is_file()
    with pytest.raises(ModelSpecError, match="from_pretrained failed"):
        load_model(f"hf:{folder}")


def test_hf_spec_builds_only_model_classes(tmp_path):
    import json

    folder = _saved_bert(tmp_path, pickled=False)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["AutoTokenizer"]  # has from_pretrained, is no model
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSpecError, match="unknown architecture 'AutoTokenizer'"):
        load_model(f"hf:{folder}")
