"""Differential test against Torch-Pruning (DESIGN.md oracle 6).

Both tools cut the same randomly initialised torchvision classifier at local L2 ratio 0.5:
slimgraph with ``sg.slim``, Torch-Pruning with ``MetaPruner`` +
``GroupMagnitudeImportance(p=2)`` and the classifier in ``ignored_layers``.

Besides the parameter counts, Torch-Pruning's choice is *replayed* in slimgraph: the
channels it dropped (its pruning history) become a slimgraph plan. Where the replayed
model has Torch-Pruning's parameter count and bit-identical outputs, both tools couple
and slice the same layers, and any difference left is in *which* channels are chosen.

Parameter counts do not depend on the spatial size, so the inputs are 64x64 (the
smallest size here that every model traces through; VGG's adaptive pool copes).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import slimgraph as sg
from slimgraph.criteria.registry import CRITERIA
from tests.peer import meta_pruner

pytest.importorskip(
    "torch_pruning", reason="torch-pruning (a test extra) is the peer compared against"
)

pytestmark = pytest.mark.zoo

RATIO = 0.5
LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


@dataclass
class Both:
    """One model cut by both tools."""

    model: nn.Module  # the original, untouched
    x: torch.Tensor
    ours: sg.SlimResult
    theirs: nn.Module  # a copy of the original, cut in place by Torch-Pruning
    history: list  # Torch-Pruning's [root module, out-channel cut?, dropped indices]
    coupled: set[frozenset[str]]  # Torch-Pruning's groups as sets of layer names


def run_both(name: str) -> Both:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    theirs = copy.deepcopy(model)
    x = torch.randn(1, 3, 64, 64)
    ours = sg.slim(model, (x,), ratio=RATIO, importance="l2", scope="local")
    pruner = meta_pruner(theirs, x, RATIO)
    names = {m: n for n, m in theirs.named_modules()}
    groups = pruner.DG.get_all_groups(
        ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
    )
    coupled = {
        frozenset(names[d.target.module] for d, _ in g if isinstance(d.target.module, LAYERS))
        for g in groups
    }
    pruner.step()
    return Both(model, x, ours, theirs, pruner.DG.pruning_history(), coupled)


def our_coupled(both: Both) -> set[frozenset[str]]:
    """slimgraph's prunable groups as sets of conv/linear/bn layer names."""
    return {
        frozenset(m for m in g.modules if isinstance(both.model.get_submodule(m), LAYERS))
        for g in both.ours.graph.prunable_groups()
    }


def replay(both: Both) -> tuple[dict[str, tuple[int, ...]], nn.Module]:
    """Torch-Pruning's dropped channels as slimgraph drops, and the model they make."""
    graph = both.ours.graph
    owner = {param: g for g in graph.prunable_groups() for param in g.params}
    drops: dict[str, set[int]] = {}
    for root, out_channels, indices in both.history:
        assert out_channels  # every group is rooted at a layer's output channels
        group = owner[(f"{root}.weight", 0)]
        units = graph.unit_map(group.id)[f"{root}.weight:0"]
        drops.setdefault(group.id, set()).update(units[i] for i in indices)
    cuts = tuple(
        sg.GroupCut(
            group=g.id,
            size=g.size,
            drop=tuple(sorted(drops.get(g.id, ()))),
            modules=tuple(g.modules),
        )
        for g in graph.prunable_groups()
    )
    plan = both.ours.plan.model_copy(update={"cuts": cuts})
    return {c.group: c.drop for c in cuts}, sg.apply(both.model, plan, graph=graph)


def our_drops(both: Both) -> dict[str, tuple[int, ...]]:
    return {c.group: c.drop for c in both.ours.plan.cuts}


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def assert_same_model(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    """Same shapes everywhere and bit-identical outputs: the same weights were kept."""
    assert shapes(a) == shapes(b)
    torch.testing.assert_close(logits(a, x), logits(b, x), rtol=0, atol=0)


def assert_rounding_agrees(plan: sg.PruningPlan) -> None:
    """Torch-Pruning keeps ``int(n * (1 - ratio))`` of a group's n channels, slimgraph
    ``n - floor(n * ratio)``: equal exactly when ``n * ratio`` is a whole number."""
    for cut in plan.cuts:
        n = cut.size  # every unit of these models is one channel
        assert cut.size - len(cut.drop) == n - math.floor(n * RATIO) == int(n * (1 - RATIO)), (
            cut.group
        )


@pytest.fixture(scope="module")
def resnet50() -> Both:
    return run_both("resnet50")


def test_resnet50_same_count_same_channels(resnet50: Both) -> None:
    both = resnet50
    assert sg.count_params(both.model) == 25_557_032
    assert sg.count_params(both.ours.model) == both.ours.plan.params_after == 6_917_640
    assert sg.count_params(both.theirs) == 6_917_640
    assert_rounding_agrees(both.ours.plan)  # every group has an even number of channels
    # Same importance ranking too (BatchNorm biases are 0 at init, so Torch-Pruning's
    # weight-only BN term ranks like ours): our own plan *is* Torch-Pruning's choice.
    replayed_drops, replayed = replay(both)
    assert replayed_drops == our_drops(both)
    assert_same_model(both.ours.model, both.theirs, both.x)


def test_resnet50_same_coupled_layers(resnet50: Both) -> None:
    ours = our_coupled(resnet50)
    assert len(ours) == len(resnet50.coupled) == 37  # 4 residual streams + 33 inner widths
    assert ours == resnet50.coupled
    stem = next(s for s in ours if "bn1" in s)  # the stem feeds both convs of layer1.0
    assert stem == {"conv1", "bn1", "layer1.0.conv1", "layer1.0.downsample.0"}
    stream = next(s for s in ours if "layer1.0.downsample.1" in s)
    # conv3 + bn3 of 3 blocks, the downsample pair, and the 4 convs that read the stream
    assert len(stream) == 2 * 3 + 2 + 4
    assert {"layer2.0.conv1", "layer2.0.downsample.0"} <= stream


def test_vgg16_bn_same_count_same_channels() -> None:
    both = run_both("vgg16_bn")
    assert sg.count_params(both.model) == 138_365_992
    assert sg.count_params(both.ours.model) == sg.count_params(both.theirs) == 35_621_896
    assert_rounding_agrees(both.ours.plan)
    assert our_coupled(both) == both.coupled  # 13 conv+bn pairs and the two hidden linears
    replayed_drops, _ = replay(both)
    assert replayed_drops == our_drops(both)
    assert_same_model(both.ours.model, both.theirs, both.x)


def _tp_magnitude(
    graph: sg.DependencyGraph, groups: list[sg.Group], config: sg.PruneConfig
) -> dict[str, np.ndarray]:
    """Torch-Pruning's GroupMagnitudeImportance(p=2), rank for rank: squared weights only
    (its ``bias=False``), and nothing from depthwise convolutions, whose pruning function
    (``prune_depthwise_conv_out_channels``) is not among those it scores."""
    params = dict(graph.model.named_parameters())
    scores = {}
    for g in groups:
        total = np.zeros(g.size)
        for key, units in graph.unit_map(g.id).items():
            name, _, dim = key.rpartition(":")
            module = graph.model.get_submodule(name.rpartition(".")[0])
            depthwise = isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1
            if not name.endswith(".weight") or name not in params or depthwise:
                continue
            p = params[name].detach().double() ** 2
            per_index = (
                p.sum(dim=[d for d in range(p.ndim) if d != int(dim)]).numpy()
                if p.ndim > 1
                else p.numpy()
            )
            hit = np.asarray(units) >= 0
            np.add.at(total, np.asarray(units)[hit], per_index[hit])
        scores[g.id] = total
    return scores


def test_mobilenet_v2_same_count_choice_differs_by_depthwise_weights(monkeypatch) -> None:
    both = run_both("mobilenet_v2")
    assert sg.count_params(both.model) == 3_504_872
    assert sg.count_params(both.ours.model) == sg.count_params(both.theirs) == 1_221_768
    assert_rounding_agrees(both.ours.plan)
    assert our_coupled(both) == both.coupled  # depthwise convs couple their input and output alike
    replayed_drops, replayed = replay(both)
    assert_same_model(replayed, both.theirs, both.x)
    # The chosen channels differ in 7 of 25 groups, all holding a depthwise conv: our L2
    # counts the depthwise filters; Torch-Pruning's importance skips them (see above).
    mine = our_drops(both)
    differ = sorted(g for g in mine if mine[g] != replayed_drops[g])
    assert len(mine) == 25 and len(differ) == 7
    for gid in differ:
        assert any(
            getattr(both.model.get_submodule(m), "groups", 1) > 1
            for m in both.ours.graph.group(gid).modules
        )
    monkeypatch.setitem(CRITERIA, "tp_magnitude", None)  # removed again after the test
    sg.register_importance("tp_magnitude")(_tp_magnitude)
    as_tp = sg.plan(both.ours.graph, ratio=RATIO, importance="tp_magnitude")
    assert {c.group: c.drop for c in as_tp.cuts} == replayed_drops


def test_densenet121_same_count_one_group_per_block() -> None:
    both = run_both("densenet121")
    assert sg.count_params(both.model) == 7_978_856
    assert sg.count_params(both.ours.model) == both.ours.plan.params_after == 2_274_728
    assert sg.count_params(both.theirs) == 2_274_728
    # Each layer of a dense block reads the concatenation of every earlier output, so its
    # norm1 spans channels of many producers and slimgraph finds one group per block
    # (conv0 or the transition conv, plus every conv2). Torch-Pruning makes one group per
    # producing conv. Within a block slimgraph gives every producer's segment the ratio,
    # so both drop half of each producer's channels and the counts agree.
    assert len(both.ours.graph.prunable_groups()) == 62  # 4 blocks + 58 conv1 widths
    assert len(both.coupled) == 120
    for model in (both.ours.model, both.theirs):
        growth = {
            model.features.denseblock1.get_submodule(f"denselayer{i}.conv2").out_channels
            for i in range(1, 7)
        }
        assert growth == {16}
    for layer in (
        "features.transition1.conv",
        "features.transition2.conv",
        "features.transition3.conv",
    ):
        assert (
            both.ours.model.get_submodule(layer).in_channels
            == both.theirs.get_submodule(layer).in_channels
        )
    assert both.ours.model.classifier.in_features == both.theirs.classifier.in_features == 512
    # Replaying Torch-Pruning's choice in slimgraph reproduces its model bit for bit: the
    # coupling and the slicing are the same.
    _, replayed = replay(both)
    assert sg.count_params(replayed) == 2_274_728
    assert_same_model(replayed, both.theirs, both.x)
    assert logits(both.ours.model, both.x).shape == (1, 1000)


def test_regnet_y_400mf_same_count_groups_get_narrower() -> None:
    both = run_both("regnet_y_400mf")
    assert sg.count_params(both.model) == 4_344_144
    assert sg.count_params(both.ours.model) == both.ours.plan.params_after == 1_205_092
    assert sg.count_params(both.theirs) == 1_205_092
    assert logits(both.ours.model, both.x).shape == logits(both.theirs, both.x).shape == (1, 1000)
    # The 3x3 convs are grouped, 8 channels a group in and out. Both tools keep every group
    # and drop 4 of each, so the filters see 4 channels: 13 groups of 8 become 13 of 4.
    # slimgraph drops the same offsets in every group (a unit is one offset of every group,
    # which keeps the weight's per-group input dim one shared index); Torch-Pruning may
    # pick other offsets in each group, so its choice cannot be replayed as our units, but
    # every parameter has the same shape.
    ours_b, theirs_b = (
        m.trunk_output.block2.get_submodule("block2-0.f.b.0")
        for m in (both.ours.model, both.theirs)
    )
    assert (ours_b.groups, tuple(ours_b.weight.shape)) == (13, (52, 4, 3, 3))
    assert (theirs_b.groups, tuple(theirs_b.weight.shape)) == (13, (52, 4, 3, 3))
    assert shapes(both.ours.model) == shapes(both.theirs)
