"""The meta dry run runs at most once per plan: ``apply`` reuses a passed run while the
model and plan are the same, and ``sg.slim``, whose forward check on the real weights is
the dry run, runs none unless that check fails."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

import slimgraph as sg
from slimgraph.errors import PlanError, RewriteError
from slimgraph.rewrite import apply as apply_module
from slimgraph.rewrite.apply import dry_run

X = torch.randn(1, 3, 8, 8)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)
    ).eval()


class Strided(nn.Conv2d):
    """Another class of the same weight shapes, whose output is half as wide."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., ::2, ::2]


def kept(slices) -> dict[str, list[tuple[int, list[int]]]]:
    return {name: [(dim, list(map(int, k))) for dim, k in v] for name, v in slices.items()}


@pytest.fixture
def meta_copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the weightless copies the dry runs make."""
    made: list[int] = []
    sliced_copy = apply_module.sliced_copy

    def counting(model, slices, meta):
        made.extend([1] if meta else [])
        return sliced_copy(model, slices, meta=meta)

    monkeypatch.setattr(apply_module, "sliced_copy", counting)
    return made


def test_slim_checks_on_the_real_weights_without_a_meta_dry_run(meta_copies: list[int]) -> None:
    result = sg.slim(net(), (X,), ratio=0.5)
    assert result.model[0].out_channels == 4
    assert meta_copies == []


def test_apply_without_inputs_dry_runs_on_meta(meta_copies: list[int]) -> None:
    model = net()
    graph = sg.trace(model, (X,))
    assert sg.apply(model, sg.plan(graph, ratio=0.5), graph=graph)[0].out_channels == 4
    assert len(meta_copies) == 1


def test_apply_runs_again_for_another_plan_or_a_changed_model(meta_copies: list[int]) -> None:
    model = net()
    graph = sg.trace(model, (X,))
    plan = sg.plan(graph, ratio=0.5)
    first = kept(dry_run(model, plan, graph))
    assert kept(dry_run(model, plan, graph)) == first and len(meta_copies) == 1
    same = sg.plan(graph, ratio=0.5)  # equal, but not the plan that ran
    assert kept(dry_run(model, same, graph)) == first and len(meta_copies) == 2
    model[3] = Strided(8, 4, 1)  # changed after its dry run: it runs again
    with pytest.raises(RewriteError, match="output shapes changed"):
        dry_run(model, same, graph)
    assert len(meta_copies) == 3
    model[3] = nn.Conv2d(8, 4, 3)  # another weight shape: refused before any run
    with pytest.raises(PlanError, match=r"3\.weight dim 2 has 3, 1 when traced"):
        dry_run(model, same, graph)
    assert len(meta_copies) == 3


def test_the_remembered_run_lets_graph_plan_and_models_go() -> None:
    result = sg.slim(net(), (X,), ratio=0.5)
    gone = [weakref.ref(o) for o in (result.graph, result.plan, result.model)]
    del result
    gc.collect()
    assert [ref() for ref in gone] == [None, None, None]
