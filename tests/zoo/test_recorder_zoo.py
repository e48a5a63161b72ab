"""Differential test of the fast tracer: on every model family of the zoo, the recorded
graph gives the export's fingerprint, groups and output shapes, or the recorder steps
aside for the reason listed here (and export traces the model)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from slimgraph.graph.record import NotRecorded, record_graph
from tests import hf_models
from tests.graph.test_record import assert_same, both
from tests.zoo import test_moe, test_timm_transformers

pytestmark = [pytest.mark.zoo, pytest.mark.filterwarnings("ignore")]

TORCHVISION = [
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "densenet121",
    "convnext_tiny",
    "shufflenet_v2_x1_0",
    "inception_v3",
    "googlenet",
    "regnet_y_400mf",
    "vit_b_16",
    "maxvit_t",
    "swin_t",
]
# torchvision's shifted windows write a Python number into a mask (``mask[s] = 3``); export
# lifts the scalar tensor that makes as a constant, so the recorder steps aside
STEPS_ASIDE = {"tv:swin_t": "scalar_tensor", "timm:tv_swin_t": "scalar_tensor"}


def build(name: str):
    source, _, family = name.partition(":")
    torch.manual_seed(0)
    if source == "hf":
        return hf_models.build(family)
    if source == "moe":
        return test_moe.build(family)
    if source == "timm":
        spec = test_timm_transformers.FAMILIES[family]
        size = spec.size if isinstance(spec.size, tuple) else (spec.size, spec.size)
        return spec.build().eval(), (torch.randn(1, 3, *size),)
    size = 299 if family == "inception_v3" else 224
    return torchvision.models.get_model(family).eval(), (torch.randn(1, 3, size, size),)


NAMES = (
    [f"hf:{f}" for f in hf_models.FAMILIES]
    + [f"moe:{f}" for f in test_moe.FAMILIES]
    + [f"timm:{f}" for f in test_timm_transformers.FAMILIES]
    + [f"tv:{f}" for f in TORCHVISION]
)


@pytest.mark.parametrize("name", NAMES)
def test_recording_is_the_export_or_steps_aside(name: str) -> None:
    model, inputs = build(name)
    if name in STEPS_ASIDE:
        args, kwargs = (inputs, {}) if isinstance(inputs, tuple) else ((), inputs)
        with pytest.raises(NotRecorded, match=STEPS_ASIDE[name]):
            record_graph(model, args, kwargs)
        return
    assert_same(*both(model, inputs))
