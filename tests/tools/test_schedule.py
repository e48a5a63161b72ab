"""prune_iteratively: widths follow the linear schedule at every step and end at the
one-shot widths; each step re-scores the model the fine-tuning left behind."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

import slimgraph as sg

X = torch.randn(1, 6)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 3)
    )


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def widths(model: nn.Sequential) -> tuple[int, int]:
    return model[0].out_features, model[2].out_features


def test_mlp_widths_follow_the_schedule_and_end_at_one_shot() -> None:
    net = mlp()
    seen = []
    result = sg.prune_iteratively(
        net, (X,), ratio=0.5, steps=3, progress=False, finetune=lambda m, k: seen.append(widths(m))
    )
    # keep n - floor(n * 0.5 * k / 3): 30 -> 25, 20, 15 and 20 -> 17, 14, 10
    assert seen == [(25, 17), (20, 14), (15, 10)]
    assert shapes(result.model) == shapes(sg.slim(net, (X,), ratio=0.5).model)
    # widths a, b: 6a + a, ab + b, 3b + 3 parameters
    assert result.params == [7 * a + a * b + 4 * b + 3 for a, b in seen] == [671, 479, 298]
    assert result.params_before == 7 * 30 + 30 * 20 + 4 * 20 + 3 == 893
    assert len(result.plans) == 3 and widths(net) == (30, 20)  # the input is untouched
    assert [c.size for c in result.plans[1].cuts] == [25, 17]  # made on step 1's model


def test_resnet18_widths_equal_one_shot_at_every_step() -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    seen: list[dict[str, tuple[int, ...]]] = []
    result = sg.prune_iteratively(
        net, (x,), ratio=0.5, steps=3, progress=False, finetune=lambda m, k: seen.append(shapes(m))
    )
    for k, step_shapes in enumerate(seen, start=1):
        assert step_shapes == shapes(sg.slim(net, (x,), ratio=0.5 * k / 3).model), k
    assert seen[-1]["layer4.1.conv1.weight"] == (256, 256, 3, 3)
    assert seen[0]["layer1.0.conv1.weight"] == (54, 54, 3, 3)  # 64 - floor(64 / 6)
    assert result.params[-1] == sg.count_params(sg.slim(net, (x,), ratio=0.5).model)


def test_round_to_and_overrides_end_at_one_shot() -> None:
    net = mlp()
    fields = {"round_to": 4, "overrides": {"0": 0.25}}
    seen = []
    result = sg.prune_iteratively(
        net,
        (X,),
        ratio=0.6,
        steps=2,
        progress=False,
        finetune=lambda m, k: seen.append(widths(m)),
        **fields,
    )
    # the first group (named by module 0) goes to 0.25 over two steps: 30 -> 27 -> 23,
    # rounded up to multiples of 4: 28, 24; the second to 0.6: 20 -> 14 -> 8, i.e. 16, 8
    assert seen == [(28, 16), (24, 8)]
    assert shapes(result.model) == shapes(sg.slim(net, (X,), ratio=0.6, **fields).model)


def test_target_macs_ends_at_the_one_shot_widths() -> None:
    net = mlp()
    result = sg.prune_iteratively(net, (X,), target_macs=0.4, steps=2, progress=False)
    one_shot = sg.slim(net, (X,), target_macs=0.4).model
    assert widths(result.model) == widths(one_shot) != (30, 20)
    assert result.plans[-1].config.target_macs is None  # each step plans by ratio


def test_target_macs_on_whole_heads_ends_at_the_one_shot_widths() -> None:
    # the one-shot plan keeps 3 of 4 heads and cuts the MLPs deeper than its ratio says
    from tests.planner.test_planner import tiny_vit

    model, x = tiny_vit(), (torch.randn(1, 3, 32, 32),)
    result = sg.prune_iteratively(model, x, target_macs=0.5, steps=2, progress=False)
    one_shot = sg.slim(model, x, target_macs=0.5).model
    assert shapes(result.model) == shapes(one_shot)
    assert result.model.encoder.layers[1].mlp[0].out_features == 54


def test_global_scope_keeps_the_total_of_the_schedule() -> None:
    net = mlp()
    result = sg.prune_iteratively(net, (X,), ratio=0.5, steps=2, scope="global", progress=False)
    one_shot = sg.slim(net, (X,), ratio=0.5, scope="global").model
    assert sum(widths(result.model)) == sum(widths(one_shot)) == 25


def test_each_step_scores_the_finetuned_weights() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():  # unit i has magnitude i + 1: the small ones go first
        net[0].bias.zero_()
        for i in range(8):
            net[0].weight[i].fill_(i + 1.0)
            net[2].weight[0, i] = i + 1.0
    zeroed = []

    def finetune(model: nn.Sequential, step: int) -> None:
        if step == 1:  # the biggest survivor (unit 7, now index 5 of 6) becomes the weakest
            with torch.no_grad():
                model[0].weight[-1].zero_()
                model[0].bias[-1] = 0.0
                model[2].weight[0, -1] = 0.0
            zeroed.append(model[0].out_features - 1)

    result = sg.prune_iteratively(
        net, (torch.randn(1, 2),), ratio=0.5, steps=2, finetune=finetune, progress=False
    )
    assert result.plans[0].cut("0.weight:0").drop == (0, 1)  # 8 -> 6: the two smallest
    assert zeroed == [5] and result.plans[1].cut("0.weight:0").drop == (0, 5)  # 6 -> 4
    torch.testing.assert_close(result.model[0].weight[:, 0], torch.tensor([4.0, 5.0, 6.0, 7.0]))


def test_finetune_may_return_the_model_to_continue_with() -> None:
    net = mlp()
    returned = []

    def finetune(model: nn.Module, step: int) -> nn.Module:
        other = copy.deepcopy(model)
        returned.append(other)
        return other

    result = sg.prune_iteratively(net, (X,), ratio=0.5, steps=2, finetune=finetune, progress=False)
    assert result.model is returned[-1] and len(returned) == 2
    with pytest.raises(sg.PlanError, match="must return None or an nn.Module"):
        sg.prune_iteratively(net, (X,), ratio=0.5, steps=2, finetune=lambda m, k: 3, progress=False)


def test_taylor_accumulates_gradients_again_at_every_step() -> None:
    net = mlp()
    batches = [torch.randn(4, 6) for _ in range(3)]
    calls = []

    def loss_fn(model: nn.Sequential, batch: torch.Tensor) -> torch.Tensor:
        calls.append(widths(model))
        return model(batch).square().mean()

    result = sg.prune_iteratively(
        net,
        (X,),
        ratio=0.5,
        steps=2,
        importance="taylor",
        calibration=batches,
        loss_fn=loss_fn,
        progress=False,
    )
    assert calls == [(30, 20)] * 3 + [(23, 15)] * 3  # step 2 scores step 1's model
    assert result.model[0].weight.grad is None  # the slim copy carries no stale gradients
    assert [p.criterion for p in result.plans] == ["taylor", "taylor"]
    assert widths(result.model) == (15, 10)


def test_activation_statistics_are_measured_on_every_step_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from slimgraph.tools import schedule

    measured = []

    def spy(graph, *args, **kwargs):
        measured.append(widths(graph.model))
        return calibrate(graph, *args, **kwargs)

    calibrate = schedule.calibrate
    monkeypatch.setattr(schedule, "calibrate", spy)
    batches = [torch.randn(8, 6) for _ in range(3)]
    result = sg.prune_iteratively(
        mlp(),
        (X,),
        ratio=0.5,
        steps=2,
        importance="activation",
        calibration=batches,
        progress=False,
    )
    assert measured == [(30, 20), (23, 15)]  # step 2 measured step 1's model
    assert all("activations" in p.provenance for p in result.plans)
    assert widths(result.model) == (15, 10)


def test_bad_arguments_are_refused() -> None:
    net = mlp()
    with pytest.raises(sg.PlanError, match="one-pass iterator"):
        sg.prune_iteratively(
            net,
            (X,),
            ratio=0.5,
            importance="taylor",
            calibration=iter([X]),
            loss_fn=lambda m, b: m(b).sum(),
        )
    with pytest.raises(sg.PlanError, match="needs gradients"):
        sg.prune_iteratively(net, (X,), ratio=0.5, importance="taylor", calibration=[X])
    with pytest.raises(sg.PlanError, match="steps must be at least 1"):
        sg.prune_iteratively(net, (X,), ratio=0.5, steps=0)


def test_a_calibration_measured_once_is_refused() -> None:
    net = mlp()
    measured = sg.calibrate(sg.trace(net, (X,)), [X])
    with pytest.raises(sg.PlanError, match="measured once, but every step measures the model"):
        sg.prune_iteratively(net, (X,), ratio=0.5, importance="activation", calibration=measured)


def test_no_progress_output_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    sg.prune_iteratively(mlp(), (X,), ratio=0.5, steps=2)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_target_params_fixes_the_ratio_on_the_first_model() -> None:
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 40), torch.nn.ReLU(), torch.nn.Linear(40, 40), torch.nn.ReLU(),
        torch.nn.Linear(40, 2),
    )  # fmt: skip
    x = (torch.randn(1, 4),)
    r = sg.prune_iteratively(net, x, steps=2, target_params=0.5, progress=False)
    one_shot = sg.slim(net, x, target_params=0.5)
    assert r.params[-1] == sg.count_params(one_shot.model)
    assert abs(r.params[-1] / sg.count_params(net) - 0.5) <= 0.01
