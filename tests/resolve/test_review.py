"""Seeing a graph and reviewing a plan: explain, draw, DOT, GraphML, HTML, plan.summary."""

from __future__ import annotations

import io
import re

import matplotlib
import networkx as nx
import pytest
import torch
import torchvision

import slimgraph as sg
from tests.hf_models import build

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def resnet50() -> sg.DependencyGraph:
    torch.manual_seed(0)
    return sg.trace(torchvision.models.resnet50().eval(), (torch.randn(1, 3, 64, 64),))


@pytest.fixture(scope="module")
def llama() -> sg.DependencyGraph:
    model, x = build("llama")
    return sg.trace(model, x)


def test_explain_answers_for_every_group(resnet50, llama) -> None:
    for graph in (resnet50, llama):
        for group in graph.groups:
            text = graph.explain(group.id)
            assert text.startswith(f"group {group.id}: {group.size} ")
        for module in {m for g in graph.groups for m in g.modules}:
            # A module's answer is the answer of every group it holds a parameter in, in order.
            holding = [g.id for g in graph.groups if module in g.modules]
            assert graph.explain(module) == "\n".join(graph.explain(gid) for gid in holding)


def test_explain_a_module_lists_every_group_of_its_parameters(resnet50) -> None:
    assert resnet50.explain("layer1.0.conv2") == (
        "group layer1.0.conv1.weight:0: 64 channels, prunable, exact\n"
        "  layers: layer1.0.conv1, layer1.0.bn1, layer1.0.conv2\n"
        "  members: layer1.0.conv1.weight dim 0, layer1.0.bn1.weight dim 0, "
        "layer1.0.bn1.bias dim 0, layer1.0.conv2.weight dim 1\n"
        "group layer1.0.conv2.weight:0: 64 channels, prunable, exact\n"
        "  layers: layer1.0.conv2, layer1.0.bn2, layer1.0.conv3\n"
        "  members: layer1.0.conv2.weight dim 0, layer1.0.bn2.weight dim 0, "
        "layer1.0.bn2.bias dim 0, layer1.0.conv3.weight dim 1\n"
        "group layer1.0.conv2.weight:2: 0 channels, frozen, exact\n"
        "  layers: layer1.0.conv2\n"
        "  members: layer1.0.conv2.weight dim 2\n"
        "  frozen by layer1.0.conv2.weight dim 2: convolution kernel size\n"
        "group layer1.0.conv2.weight:3: 0 channels, frozen, exact\n"
        "  layers: layer1.0.conv2\n"
        "  members: layer1.0.conv2.weight dim 3\n"
        "  frozen by layer1.0.conv2.weight dim 3: convolution kernel size"
    )


def test_explain_a_bottleneck_conv(resnet50) -> None:
    assert resnet50.explain("layer1.0.conv1.weight:0") == (
        "group layer1.0.conv1.weight:0: 64 channels, prunable, exact\n"
        "  layers: layer1.0.conv1, layer1.0.bn1, layer1.0.conv2\n"
        "  members: layer1.0.conv1.weight dim 0, layer1.0.bn1.weight dim 0, "
        "layer1.0.bn1.bias dim 0, layer1.0.conv2.weight dim 1"
    )


def test_explain_the_classifier_frozen_by_the_output(resnet50) -> None:
    assert resnet50.explain("fc.weight:0") == (
        "group fc.weight:0: 0 channels, frozen, exact\n"
        "  layers: fc\n"
        "  members: fc.weight dim 0, fc.bias dim 0\n"
        "  frozen by output linear dim 1 (aten.linear.default in fc): "
        "model output: its shape is part of the model's contract"
    )


def test_explain_a_residual_stream(resnet50) -> None:
    text = resnet50.explain("layer1.0.conv3.weight:0")
    assert text.splitlines()[0] == "group layer1.0.conv3.weight:0: 256 channels, prunable, exact"
    assert text.splitlines()[2] == (
        "  coupled through the residual add in layer1.0, layer1.1, layer1.2"
    )


def test_explain_grouped_query_heads(llama) -> None:
    assert llama.explain("model.layers.0.self_attn.q_proj.weight:0") == (
        "group model.layers.0.self_attn.q_proj.weight:0: 2 heads, prunable, exact\n"
        "  layers: model.layers.0.self_attn.q_proj, model.layers.0.self_attn.k_proj, "
        "model.layers.0.self_attn.v_proj, model.layers.0.self_attn.o_proj\n"
        "  members: model.layers.0.self_attn.q_proj.weight dim 0, "
        "model.layers.0.self_attn.k_proj.weight dim 0, "
        "model.layers.0.self_attn.v_proj.weight dim 0, "
        "model.layers.0.self_attn.o_proj.weight dim 1"
    )


def test_layer_graph_around_a_residual_add(resnet50) -> None:
    lg = sg.viz.layer_graph(resnet50, focus="layer1.0.conv3.weight:0")
    assert {"layer1.0.conv3", "layer1.0.bn3", "layer1.0.downsample.0", "layer1.0"} <= set(lg)
    assert lg.edges["layer1.0.bn3", "layer1.0"]["group"] == "layer1.0.conv3.weight:0"
    assert nx.is_connected(lg)


def test_dot_and_graphml_describe_the_same_layers(resnet50) -> None:
    focus = "layer2.0.conv1"
    dot = resnet50.to_dot(focus)
    graphml = nx.read_graphml(io.StringIO(resnet50.to_graphml(focus=focus)))
    lg = sg.viz.layer_graph(resnet50, focus)
    assert set(graphml) == set(lg)
    assert dot.count(" -- ") == lg.number_of_edges() == graphml.number_of_edges()
    assert all(f'"{node}" [' in dot for node in lg)


def test_draw_puts_every_layer_on_the_axes(resnet50) -> None:
    ax = resnet50.draw(focus="layer1.0.conv2.weight:0")
    lg = sg.viz.layer_graph(resnet50, "layer1.0.conv2.weight:0")
    assert len(ax.collections) == len(lg)  # one marker per layer
    assert len(ax.patches) == lg.number_of_edges()  # one arc per coupling
    matplotlib.pyplot.close("all")


def test_html_table_has_a_row_per_group(llama) -> None:
    html = llama._repr_html_()
    assert html.count("<tr><td><code>") == len(llama.groups)
    assert "<td>head</td>" in html and "<td>channel</td>" in html


def _resnet18_half() -> tuple[torch.nn.Module, torch.Tensor, sg.DependencyGraph, sg.PruningPlan]:
    """ResNet-18 at 64x64, its graph and its plan at ratio 0.5."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    graph = sg.trace(model, (x,))
    return model, x, graph, sg.plan(graph, ratio=0.5)


def test_plan_summary_adds_up() -> None:
    model, x, graph, plan = _resnet18_half()
    summary = plan.summary()
    slim = sg.apply(model, plan, graph=graph)
    assert summary.params_after == plan.params_after == sg.count_params(slim)
    assert summary.macs_before == sg.count_macs(model, (x,))
    assert summary.macs_after == sg.count_macs(slim, (x,))
    conv1 = next(r for r in summary.layers if r.layer == "conv1")
    assert conv1.shapes == {"weight": ((64, 3, 7, 7), (32, 3, 7, 7))}
    assert summary.untouched["fc.weight:0"] == (
        "model output: its shape is part of the model's contract"
    )
    text = str(summary)
    assert re.search(r"^conv1 +Conv2d +64×3×7×7 -> 32×3×7×7 +9,408 -> 4,704 ", text, re.M)
    assert "model output: its shape is part of the model's contract: fc.weight:0" in text
    assert plan._repr_html_().count("<tr><td><code>") == len(summary.changed())


def test_a_summary_after_an_in_place_cut_reads_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    macs = sg.count_macs(model, (x,))
    result = sg.slim(model, (x,), ratio=0.5, inplace=True)
    assert result.model is model and model.conv1.out_channels == 32
    summary = result.plan.summary()
    assert (summary.params_before, summary.params_after) == (11_689_512, sg.count_params(model))
    assert (summary.macs_before, summary.macs_after) == (macs, sg.count_macs(model, (x,)))
    conv1 = next(r for r in summary.layers if r.layer == "conv1")
    assert conv1.shapes == {"weight": ((64, 3, 7, 7), (32, 3, 7, 7))}
    # the result's graph is bound to a weightless copy of the model as it was traced
    assert all(p.is_meta for p in result.graph.model.parameters())
    assert result.graph.model.conv1.out_channels == 64
    weightless = "the graph sg.slim returns after a cut in place is bound to a weightless copy"
    with pytest.raises(sg.PlanError, match=weightless):
        sg.plan(result.graph, ratio=0.3)  # its scores need the weights, which are cut


def test_a_graph_whose_model_was_cut_in_place_is_refused() -> None:
    model, x, graph, plan = _resnet18_half()
    sg.apply(model, plan, graph=graph, inplace=True)
    changed = r"changed after it was traced \(conv1\.weight dim 0 has 32, 64 when traced\)"
    with pytest.raises(sg.PlanError, match=changed):
        plan.summary()  # it would read the cut model as the one before the cut
    with pytest.raises(sg.PlanError, match=changed):
        sg.plan(graph, ratio=0.3)  # its scores would read the traced indices of cut weights
    with pytest.raises(sg.PlanError, match=changed):
        sg.apply(model, plan, graph=graph, inplace=True)  # the same cut, again
    assert model.conv1.out_channels == 32
    fresh = torchvision.models.resnet18().eval()  # another model of the traced shapes
    assert sg.apply(fresh, plan, graph=graph).conv1.out_channels == 32
    with pytest.raises(sg.PlanError, match=changed):
        sg.apply(model, plan, graph=sg.trace(fresh, (x,)))  # a graph of another model's shapes
