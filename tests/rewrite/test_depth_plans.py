"""Depth inside plans: ``sg.slim(..., drop_blocks=n)`` drops whole blocks, then cuts the
width of what remains; ``plan.blocks`` records them, so that ``sg.apply`` replays both on
the original model bit for bit, ``sg.save`` / ``sg.load`` rebuild a Hugging Face model
whose config cannot describe it, and ``slimgraph slim/plan/apply --drop-blocks`` do the
same. Bad block lists are refused, and a failed in-place apply leaves the model whole."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest
import torch
import torchvision
from safetensors.torch import load_file

import slimgraph as sg
from slimgraph.cli.main import main
from slimgraph.criteria.latency import LayerTable
from tests.helpers import tiny_llama

SMALL = (torch.randn(2, 3, 64, 64),)


def _resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def test_slim_drops_blocks_then_cuts_and_apply_replays_both() -> None:
    model = _resnet18()
    result = sg.slim(model, SMALL, ratio=0.5, drop_blocks=2)
    plan = result.plan
    # resnet18's blocks are the 4 second blocks and layer1.0 (64 -> 64, no downsample)
    assert len(plan.blocks) == 2
    assert set(plan.blocks) <= {"layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"}
    assert plan.params_before == sg.count_params(model) == 11_689_512
    assert plan.params_after == sg.count_params(result.model)
    assert sum(len(getattr(model, f"layer{i}")) for i in range(1, 5)) == 8  # untouched
    assert sum(len(getattr(result.model, f"layer{i}")) for i in range(1, 5)) == 6
    assert result.model.conv1.out_channels == 32
    assert "  blocks dropped: " + ", ".join(plan.blocks) in plan.describe()
    summary = plan.summary()  # of the model without the blocks, which was cut in place
    assert f"after dropping blocks {', '.join(plan.blocks)}" in str(summary)
    in_blocks = sum(p.numel() for b in plan.blocks for p in model.get_submodule(b).parameters())
    assert summary.params_before == 11_689_512 - in_blocks
    assert summary.params_after == sg.count_params(result.model)
    conv1 = next(r for r in summary.layers if r.layer == "conv1")
    assert conv1.shapes == {"weight": ((64, 3, 7, 7), (32, 3, 7, 7))}
    again = sg.PruningPlan.model_validate_json(plan.model_dump_json())
    assert again == plan
    replayed = sg.apply(model, again, example_inputs=SMALL)
    assert replayed.state_dict().keys() == result.model.state_dict().keys()
    for key, value in result.model.state_dict().items():
        assert torch.equal(replayed.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(replayed(*SMALL), result.model(*SMALL))


def test_ratio_zero_drops_blocks_only_and_in_place_drops_them_from_the_model() -> None:
    model = _resnet18()
    result = sg.slim(model, SMALL, ratio=0.0, drop_blocks=["layer3.1"], inplace=True)
    assert result.model is model and len(model.layer3) == 1
    assert result.plan.blocks == ("layer3.1",) and result.plan.dropped == 0
    assert result.plan.params_before == 11_689_512
    assert sg.count_params(model) == 11_689_512 - sum(
        p.numel() for p in _resnet18().layer3[1].parameters()
    )


def test_a_failed_in_place_apply_leaves_the_model_with_its_blocks() -> None:
    model = _resnet18()
    plan = sg.slim(model, SMALL, ratio=0.5, drop_blocks=1).plan
    cut = plan.cuts[0]
    wrong = cut.model_copy(update={"size": cut.size + 1})  # does not fit: refused after the drop
    bad = plan.model_copy(update={"cuts": (wrong, *plan.cuts[1:])})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sg.PlanError, match="prunable units"):
        sg.apply(model, bad, inplace=True)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    no_member = plan.model_copy(update={"blocks": ("fc",)})
    with pytest.raises(sg.RewriteError, match=r"\['fc'\] are not members of an nn.Sequential"):
        sg.apply(model, no_member, inplace=True)
    assert model.fc.out_features == 1000


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        (["layer1.0", "layer1.0"], "appears twice"),
        (["layer1", "layer1.0"], "inside block 'layer1'"),
        (["layer1.0; rm -rf"], "is not a module path"),
    ],
)
def test_a_plan_with_bad_blocks_is_refused(blocks: list[str], message: str) -> None:
    data = json.loads(sg.slim(_resnet18(), SMALL, ratio=0.3).plan.model_dump_json())
    with pytest.raises(pydantic.ValidationError, match=message):
        sg.PruningPlan.model_validate({**data, "blocks": blocks})


def _bilinear_latency(model: torch.nn.Module) -> sg.LatencyModel:
    """A latency model whose every conv and linear layer costs 1e-6 ms per weight element
    at any width (tables at the full width and at 1 channel: the cost is bilinear)."""
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            o, i, *k = m.weight.shape
            area = 1e-6 * (k[0] * k[1] if k else 1)
            grid = tuple(tuple(area * a * b for b in (1, i)) for a in (1, o))
            layers[name] = LayerTable(shape=(o, i, *k), outs=(1, o), ins=(1, i), ms=grid)
    return sg.LatencyModel(runtime="torch", version="-", machine="-", threads=1, layers=layers)


def test_blocks_pay_part_of_a_latency_budget_and_the_width_the_rest() -> None:
    model = _resnet18()
    lm = _bilinear_latency(model)
    whole = lm.predict({})
    result = sg.slim(model, SMALL, drop_blocks=2, target_latency=0.5, latency_model=lm)
    plan = result.plan
    short = plan.config.latency_model
    assert len(plan.blocks) == 2
    assert len(short.layers) == len(lm.layers) - 2 * 2  # two convs a block
    rest = short.predict({})
    # the two blocks' tables went, and the width keeps the share of the rest that meets 0.5
    dropped = sum(
        lm.layers[f"{b}.conv{i}"].at(*lm.layers[f"{b}.conv{i}"].shape[:2])
        for b in plan.blocks
        for i in (1, 2)
    )
    assert rest == pytest.approx(whole - dropped)
    assert plan.config.target_latency == pytest.approx(0.5 * whole / rest)
    assert plan.predicted_latency_ms == pytest.approx(0.5 * whole, rel=0.03)
    # the prediction is the slim model's: its layers' tables at their new widths
    shapes = {
        n: tuple(m.weight.shape) for n, m in result.model.named_modules() if n in short.layers
    }
    assert short.predict(shapes) == pytest.approx(plan.predicted_latency_ms)
    met = sg.slim(model, SMALL, drop_blocks=5, target_latency=0.95, latency_model=lm)
    assert met.plan.dropped == 0 and met.plan.config.target_latency is None  # blocks alone


def test_a_calibration_of_the_whole_model_is_refused_with_drop_blocks() -> None:
    model = _resnet18()
    measured = sg.calibrate(
        sg.trace(model, SMALL), [SMALL], config=sg.PruneConfig(importance="activation")
    )
    with pytest.raises(sg.PlanError, match="pass the calibration batches themselves"):
        sg.slim(model, SMALL, drop_blocks=1, importance="activation", calibration=measured)
    result = sg.slim(
        model, SMALL, drop_blocks=1, importance="activation", calibration=iter([SMALL])
    )
    assert result.plan.provenance and len(result.plan.blocks) == 1  # batches read twice


def test_a_llama_without_a_layer_and_narrower_reloads_through_its_plan(tmp_path: Path) -> None:
    model, inputs = tiny_llama()
    result = sg.slim(model, inputs, ratio=0.5, scope="global", drop_blocks=1)
    slim = result.model
    assert len(result.plan.blocks) == 1 and slim.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in slim.model.layers] == [0, 1, 2]
    widths = {layer.mlp.down_proj.in_features for layer in slim.model.layers}
    assert len(widths) > 1  # global scope: per-layer widths no single config field holds
    assert not slim.config.slimgraph_config_exact
    sg.save(slim, tmp_path, result.plan)
    reloaded = sg.load(tmp_path)
    assert reloaded.config.num_hidden_layers == 3
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, slim(**inputs).logits)


def test_cli_slim_and_plan_record_blocks_and_apply_replays_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec, shape = "torchvision:resnet18", ["--input-shape", "1,3,64,64"]
    assert main(["slim", spec, *shape, "--drop-blocks", "2", "--out", "s", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["blocks"]) == 2 and report["groups_cut"] > 0
    assert json.loads(Path("s/plan.json").read_text())["blocks"] == report["blocks"]
    assert main(["apply", spec, "--plan", "s/plan.json", "--out", "a", "--json"]) == 0
    capsys.readouterr()
    slimmed, applied = load_file("s/model.safetensors"), load_file("a/model.safetensors")
    assert slimmed.keys() == applied.keys()
    assert all(torch.equal(slimmed[k], applied[k]) for k in slimmed)
    assert (
        main(["plan", spec, *shape, "--drop-blocks", "1", "--ratio", "0", "--out", "p.json"]) == 0
    )
    assert "blocks dropped" in capsys.readouterr().out
    assert len(json.loads(Path("p.json").read_text())["blocks"]) == 1
    assert main(["diff", "s/plan.json", "p.json"]) == 0
    shown = ", ".join(report["blocks"])
    assert f"blocks dropped: A {shown}; B " in capsys.readouterr().out
    lm = _bilinear_latency(_resnet18())
    Path("lm.json").write_text(lm.model_dump_json())
    budget = ["--target-latency", "0.5", "--latency-model", "lm.json"]
    original = lm.predict({})
    # the reports: the width's budget is a share of the shorter model, the latency the whole's
    for command, out, written in [("plan", "l.json", "l.json"), ("slim", "ls", "ls/plan.json")]:
        assert main([command, spec, *shape, "--drop-blocks", "2", *budget, "--out", out]) == 0
        text = " ".join(capsys.readouterr().out.split())  # as rich wraps it at any width
        mixed = sg.PruningPlan.model_validate_json(Path(written).read_text())
        assert len(mixed.blocks) == 2 and mixed.dropped > 0
        assert mixed.config is not None and mixed.config.target_latency is not None
        width = f"target_latency {mixed.config.target_latency:.4g} of the model without its blocks"
        assert f"{spec}: {width} (ratio {mixed.config.ratio:.4g}), l2" in text
        ms = mixed.predicted_latency_ms
        assert ms is not None and ms / original == pytest.approx(0.5, rel=0.03)
        assert (
            f"predicted {ms:.2f} ms, {ms / original:.3f} of the original's {original:.2f} ms"
            in (text)
        )
    # the plan records the shorter model's latency model only: apply has no original's to print
    assert main(["apply", spec, "--plan", "ls/plan.json", "--out", "la", "--json"]) == 0
    latency = json.loads(capsys.readouterr().out)["latency"]
    assert latency["predicted_ms"] == mixed.predicted_latency_ms
    assert latency["original_predicted_ms"] is None
    assert main(["slim", spec, *shape, "--drop-blocks", "0", "--out", "z"]) == 2
    assert "--drop-blocks 0: give how many blocks to drop" in capsys.readouterr().err
    assert main(["slim", spec, *shape, "--drop-blocks", "9", "--out", "z"]) == 2
    assert "n must be between 1 and 5" in capsys.readouterr().err


def test_streaming_a_checkpoint_refuses_a_plan_with_blocks(tmp_path: Path) -> None:
    plan = sg.slim(_resnet18(), SMALL, ratio=0.0, drop_blocks=1).plan
    with pytest.raises(sg.PlanError, match="streaming does not do yet"):
        sg.apply_checkpoint(tmp_path / "src", plan, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
