"""``sg.slim(..., drop_blocks="auto", target_latency=...)``: the latency planner weighs
whole blocks against width. It slims with the 0, 1, 2, ... blocks of least influence
dropped and the width paying the rest of the budget, and keeps the mix that departs least
from the original; ``result.mixes`` records every mix tried."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import slimgraph as sg
from slimgraph.cli.main import main
from slimgraph.rewrite.depth import find_blocks, rank_blocks
from slimgraph.tools.departure import departure
from tests.helpers import Terminal
from tests.rewrite.test_depth_plans import SMALL, _bilinear_latency


class Res(nn.Module):
    def __init__(self, dead: bool) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(16, 64), nn.Linear(64, 16)
        if dead:  # the residual branch adds exactly 0: the block returns its input
            nn.init.zeros_(self.down.weight), nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(x)))


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    blocks = [Res(dead=i in (1, 3)) for i in range(6)]
    return nn.Sequential(nn.Linear(8, 16), *blocks, nn.Linear(16, 5)).eval()


X = (torch.randn(32, 8),)


def test_dead_blocks_pay_the_budget_when_they_alone_meet_it() -> None:
    model = _net()
    lm = _bilinear_latency(model)
    whole = lm.predict({})
    # each block holds 2 * 1024 of the 12496 weights' microseconds: the two dead ones
    # alone leave 0.672 of the latency, one leaves 0.836 and the width pays the rest
    # (to within 5 %: 16 residual channels are coarse units)
    assert whole == pytest.approx(1e-6 * (8 * 16 + 6 * 2 * 16 * 64 + 16 * 5))
    result = sg.slim(model, X, drop_blocks="auto", target_latency=0.7, latency_model=lm)
    mixes = result.mixes
    # the dead blocks rank first (their influence is 0 up to float64 rounding: either)
    assert [m.blocks for m in mixes] in ([(), (b,), ("2", "4")] for b in "24")
    assert mixes[0].predicted_latency_ms == pytest.approx(0.7 * whole, rel=0.05)
    assert mixes[1].predicted_latency_ms == pytest.approx(0.7 * whole, rel=0.05)
    assert mixes[2].predicted_latency_ms is None  # no width planned: 3 blocks are not tried
    assert min(mixes[0].departure, mixes[1].departure) > mixes[2].departure == 0.0
    assert result.plan.blocks == ("2", "4") and result.plan.dropped == 0
    assert len(result.model) == 6
    with torch.no_grad():
        assert torch.equal(result.model(*X), model(*X))  # x + 0 is x


@pytest.mark.parametrize("progress", [True, False])
def test_the_search_shows_its_mixes_on_a_terminal(monkeypatch, progress: bool) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.delenv("TERM", raising=False)
    model = _net()
    budget = {"target_latency": 0.7, "latency_model": _bilinear_latency(model)}
    result = sg.slim(model, X, drop_blocks="auto", **budget, progress=progress)
    assert len(result.mixes) == 3
    if not progress:
        assert terminal.text == ""
        return
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", terminal.text)
    # the ranking's bar, then the mixes': the third mix stops the search, which is done
    assert plain.index("block influence") < plain.index("depth and width mixes")
    assert re.search(r"2 blocks meet the budget ━+ 100%", plain)


def test_each_mix_is_the_slim_of_its_blocks_and_the_least_departing_is_kept() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    lm = _bilinear_latency(model)
    ranked = list(rank_blocks(model, find_blocks(model, SMALL), SMALL, progress=False))
    result = sg.slim(model, SMALL, drop_blocks="auto", target_latency=0.5, latency_model=lm)
    mixes = result.mixes
    assert [list(m.blocks) for m in mixes] == [sorted(ranked[:n]) for n in range(3)]  # 5 blocks
    score = departure(model, [SMALL])
    best = min(mixes, key=lambda m: m.departure)
    assert result.plan.blocks == best.blocks
    assert score(result.model) == best.departure
    assert result.plan.params_after == best.params_after
    other = next(m for m in mixes if m is not best)
    again = sg.slim(
        model, SMALL, drop_blocks=list(other.blocks) or None, target_latency=0.5, latency_model=lm
    )
    assert score(again.model) == other.departure
    assert again.plan.predicted_latency_ms == other.predicted_latency_ms


def test_with_a_loss_the_mixes_are_scored_by_it() -> None:
    model = _net()
    lm = _bilinear_latency(model)
    batches = [(torch.randn(16, 8), torch.randint(0, 5, (16,))) for _ in range(2)]

    def loss_fn(m: nn.Module, batch: tuple) -> torch.Tensor:
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    result = sg.slim(
        model,
        X,
        drop_blocks="auto",
        target_latency=0.7,
        latency_model=lm,
        calibration=iter(batches),  # read to rank, plan and score: listed once
        loss_fn=loss_fn,
        inputs=lambda b: b[0],
        importance="taylor",
    )
    with torch.no_grad():
        loss = sum(float(loss_fn(result.model, b)) for b in batches) / 2
    chosen = next(m for m in result.mixes if m.blocks == result.plan.blocks)
    assert chosen.departure == pytest.approx(loss, rel=1e-6)
    assert result.plan.provenance  # the taylor scores read the batches' gradients


def test_a_model_without_blocks_gets_the_width_plan() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    lm = _bilinear_latency(net)
    result = sg.slim(net, X, drop_blocks="auto", target_latency=0.5, latency_model=lm)
    plain = sg.slim(net, X, target_latency=0.5, latency_model=lm)
    assert [m.blocks for m in result.mixes] == [()]
    assert result.plan == plain.plan and result.model[0].out_features == 16


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"drop_blocks": "some"}, "pass a count, block names, or 'auto'"),
        ({"drop_blocks": "auto"}, "give target_latency and latency_model"),
        ({"drop_blocks": "auto", "target_macs": 0.5}, "give target_latency and latency_model"),
        ({"drop_blocks": "auto", "inplace": True, "lm": True}, "not with inplace=True"),
        ({"drop_blocks": "auto", "loss_fn": lambda m, b: m(b).sum(), "lm": True}, "calibration"),
    ],
)
def test_auto_needs_a_latency_budget_and_a_copy(options: dict, message: str) -> None:
    model = _net()
    if options.pop("lm", False):
        options |= {"target_latency": 0.5, "latency_model": _bilinear_latency(model)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sg.PlanError, match=message):
        sg.slim(model, X, **options)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_cli_slim_and_plan_choose_the_mix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec, shape = "torchvision:resnet18", ["--input-shape", "2,3,64,64"]  # SMALL's
    model = torchvision.models.resnet18().eval()
    Path("lm.json").write_text(_bilinear_latency(model).model_dump_json())
    budget = ["--target-latency", "0.5", "--latency-model", "lm.json", "--seed", "0"]
    args = [spec, *shape, "--drop-blocks", "auto", *budget]
    assert main(["slim", *args, "--out", "s", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    saved = sg.PruningPlan.model_validate_json(Path("s/plan.json").read_text())
    assert list(saved.blocks) == report["blocks"]
    assert main(["plan", *args, "--out", "p.json"]) == 0
    capsys.readouterr()
    assert sg.PruningPlan.model_validate_json(Path("p.json").read_text()) == saved
    assert main(["slim", spec, *shape, "--drop-blocks", "auto", "--out", "z"]) == 2
    assert "--drop-blocks auto weighs whole blocks" in capsys.readouterr().err
    assert main(["slim", spec, "--drop-blocks", "some"]) == 2
    assert "'some' is neither a count nor 'auto'" in capsys.readouterr().err
    assert not Path("z").exists()
