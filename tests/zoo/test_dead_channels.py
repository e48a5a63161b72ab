"""Dead-channel equivalence (DESIGN.md oracle 2) on one model of every torchvision family.

Units of exact groups are killed (every parameter slice zeroed), then exactly those units
are dropped: the slim model must compute what the killed model computes. Groups tied to
others by links (attention widths, relaxed splits) are left out: a plan must cut them
together with groups that are not exact.
"""

from __future__ import annotations

import pytest
import torch

import slimgraph as sg
from tests.helpers import build_torchvision, first_output
from tests.oracles import kill_dropped

pytestmark = pytest.mark.zoo

FAMILIES = {
    "ResNet": "resnet18",
    "ResNeXt": "resnext50_32x4d",
    "Wide-ResNet": "wide_resnet50_2",
    "VGG": "vgg11_bn",
    "AlexNet": "alexnet",
    "SqueezeNet": "squeezenet1_1",
    "DenseNet": "densenet121",
    "GoogLeNet": "googlenet",
    "Inception": "inception_v3",
    "MobileNetV2": "mobilenet_v2",
    "MobileNetV3": "mobilenet_v3_small",
    "MNASNet": "mnasnet0_5",
    "ShuffleNet": "shufflenet_v2_x0_5",
    "EfficientNet": "efficientnet_b0",
    "EfficientNetV2": "efficientnet_v2_s",
    "RegNetX": "regnet_x_400mf",
    "RegNetY": "regnet_y_400mf",
    "ConvNeXt": "convnext_tiny",
    "Swin": "swin_t",
    "MaxViT": "maxvit_t",
    "ViT": "vit_b_16",
}


@pytest.mark.parametrize("name", FAMILIES.values(), ids=FAMILIES.keys())
def test_dead_channels_drop_without_changing_outputs(name: str) -> None:
    model, x = build_torchvision(name)
    graph = sg.trace(model, (x,))
    plan = sg.plan(graph, ratio=0.5, importance="random")
    linked = set().union(*graph.linked_groups())
    exact = {g.id for g in graph.prunable_groups() if g.exact and g.id not in linked}
    cuts = tuple(c for c in plan.cuts if c.group in exact and c.drop)
    assert cuts, "no exact group to test"
    dead = plan.model_copy(update={"cuts": cuts})
    kill_dropped(graph, dead)
    model.eval()
    with torch.no_grad():
        expected = first_output(model(x))
        slim = sg.apply(model, dead, graph=graph).eval()
        got = first_output(slim(x))
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * max(scale, 1.0))
    assert sg.count_params(slim) < sg.count_params(model)
