"""Sliced tensors keep their memory format (issue 13, item 13)."""

from __future__ import annotations

import torch
from torch import nn

import slimgraph as sg
from slimgraph.resolve.slicing import slice_tensor

X = torch.randn(1, 3, 8, 8)


def channels_last_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    return net.eval().to(memory_format=torch.channels_last)


def test_sliced_conv_weights_stay_channels_last() -> None:
    model = channels_last_net()
    graph = sg.trace(model, (X,))
    plan = sg.plan(graph, ratio=0.5)
    copied = sg.apply(model, plan, graph=graph)
    in_place = sg.apply(model, plan, graph=graph, inplace=True)
    for slim in (copied, in_place):
        assert slim[0].weight.shape == (4, 3, 3, 3)
        assert slim[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert not slim[0].weight.is_contiguous()  # really NHWC strides


def test_meta_copies_keep_the_layout_too() -> None:
    model = channels_last_net()
    sliced = slice_tensor(model[0].weight, [(0, [0, 2, 4])], meta=True)
    assert sliced.shape == (3, 3, 3, 3)
    assert sliced.is_contiguous(memory_format=torch.channels_last)
    assert not sliced.is_contiguous()
