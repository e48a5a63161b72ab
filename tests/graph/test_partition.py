"""Partitioned tracing: models torch.export cannot trace whole slim part by part."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimgraph as sg
from tests.oracles import frozen_line, prunable

DATA_DEPENDENT = "which could not be traced (data-dependent control flow)"


class Gated(nn.Module):
    """A conv backbone and head, then post-processing that branches on values."""

    def __init__(self, read_features: bool = False) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(32, 4, 1)
        self.read_features = read_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        scores = self.head(features).flatten(2).amax(-1)
        if self.read_features and features.mean() > 1e6:  # reads every feature channel
            scores = scores * 0
        if scores.max() > 0:  # data-dependent control flow
            return scores.clamp(min=0)
        return scores


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y.relu() if y.mean() > 0 else y


class Nested(nn.Module):
    """The untraceable code sits inside a submodule (``stem``) too."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Stem()
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(self.stem(x))
        return y if y.sum() > 0 else -y


def x_in() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_the_whole_model_does_not_trace() -> None:
    with pytest.raises(sg.TraceError, match="data-dependent"):
        sg.trace(Gated().eval(), (x_in(),))


def test_parts_slim_and_the_boundary_between_them_stays_free() -> None:
    torch.manual_seed(0)
    model = Gated().eval()
    result = sg.slim(model, (x_in(),), ratio=0.5)
    # the backbone's output only flows into the head, another part: it is wired, not frozen
    assert prunable(result.graph) == {"backbone.0.weight:0": 16, "backbone.2.weight:0": 32}
    assert result.model.backbone[0].out_channels == 8
    assert result.model.head.in_channels == 16
    assert result.model.head.out_channels == 4
    assert frozen_line(result.graph, "head.weight:0").endswith(
        f"output of head, read by the model's forward, {DATA_DEPENDENT}"
    )
    with torch.no_grad():
        assert result.model(x_in()).shape == (2, 4)
    assert model.backbone[0].out_channels == 16  # not inplace: the caller's model is whole
    assert result.plan.params_before == sum(p.numel() for p in model.parameters())
    assert result.plan.params_after == sum(p.numel() for p in result.model.parameters())


@pytest.mark.parametrize("inplace", [False, True])
def test_the_summary_reads_the_parts_as_they_were_traced(inplace: bool) -> None:
    torch.manual_seed(0)
    result = sg.slim(Gated().eval(), (x_in(),), ratio=0.5, inplace=inplace)
    summary = result.plan.summary()  # the parts were cut in place, in the copy or the model
    assert (summary.params_before, summary.params_after) == (5220, 1460)
    first = next(r for r in summary.layers if r.layer == "backbone.0")
    assert first.shapes["weight"] == ((16, 3, 3, 3), (8, 3, 3, 3))


def test_a_part_output_the_untraced_code_reads_freezes() -> None:
    result = sg.slim(Gated(read_features=True).eval(), (x_in(),), ratio=0.5)
    assert prunable(result.graph) == {"backbone.0.weight:0": 16}
    assert frozen_line(result.graph, "backbone.2.weight:0").endswith(
        f"output of backbone, read by the model's forward, {DATA_DEPENDENT}"
    )


def test_dead_units_drop_with_no_change_to_the_output() -> None:
    """Dead-unit oracle: units whose every weight is zero are the ones l2 drops, and the
    slim model computes what the model with them zeroed computed."""
    torch.manual_seed(0)
    model = Gated().eval()
    dead = torch.arange(0, 32, 2)
    with torch.no_grad():
        for layer in (model.backbone[2], model.head):
            layer.bias.fill_(0.1)
        model.backbone[2].weight[dead] = 0.0
        model.backbone[2].bias[dead] = 0.0
        model.head.weight[:, dead] = 0.0
        model.backbone[0].weight[1::2] = 0.0
        model.backbone[0].bias[1::2] = 0.0
        model.backbone[2].weight[:, 1::2] = 0.0
        expected = model(x_in())
    result = sg.slim(model, (x_in(),), ratio=0.5)
    kept = result.model.backbone
    assert (kept[0].out_channels, kept[2].out_channels) == (8, 16)
    assert result.model.backbone[2].weight.abs().sum((1, 2, 3)).min() > 0  # the live ones
    with torch.no_grad():
        torch.testing.assert_close(result.model(x_in()), expected)


def test_untraceable_submodules_are_searched_and_named_at_the_boundary() -> None:
    result = sg.slim(Nested().eval(), (x_in(),), ratio=0.5)
    assert prunable(result.graph) == {"body.0.weight:0": 16}
    line = frozen_line(result.graph, "stem.conv.weight:0")
    assert line.endswith(f"output of stem.conv, read by stem, {DATA_DEPENDENT}") or line.endswith(
        f"input of body, computed by stem, {DATA_DEPENDENT}"
    )
    assert result.model.body[0].out_channels == 8
    assert result.model.stem.conv.out_channels == 8


def test_value_dependent_shapes_partition_too() -> None:
    """Boolean-mask indexing exports, but its graph cannot be built: a TraceError, then
    part by part."""

    class Masked(Gated):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scores = self.head(self.backbone(x)).flatten(2).amax(-1)
            return scores[scores > 0]

    with pytest.raises(sg.TraceError, match="data-dependent shapes"):
        sg.trace(Masked().eval(), (x_in(),))
    result = sg.slim(Masked().eval(), (x_in(),), ratio=0.5)
    assert prunable(result.graph) == {"backbone.0.weight:0": 16, "backbone.2.weight:0": 32}


def test_train_mode_running_statistics_do_not_move() -> None:
    model = Gated().train()
    model.backbone[1] = nn.BatchNorm2d(16)
    result = sg.slim(model, (x_in(),), ratio=0.5)
    assert result.model.backbone[1].num_features == 8
    for bn in (model.backbone[1], result.model.backbone[1]):
        assert int(bn.num_batches_tracked) == 0
        assert not bn.running_mean.any()


def test_calibration_is_refused_on_a_partitioned_model() -> None:
    with pytest.raises(sg.PlanError, match="part by part"):
        sg.slim(Gated().eval(), (x_in(),), importance="activation", calibration=[(x_in(),)])


def test_latency_tries_are_refused_on_a_partitioned_model() -> None:
    model = Gated().eval()
    lm = sg.LatencyModel(runtime="torch", version="-", machine="-", threads=1, layers={})
    with pytest.raises(sg.PlanError, match="latency_tries is not supported yet .* part by part"):
        sg.slim(model, (x_in(),), target_latency=0.5, latency_model=lm, latency_tries=2)


def test_a_model_with_no_traceable_part_raises_the_trace_error() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.flatten(2).mean(-1) @ self.weight.T
            return y if y.sum() > 0 else -y

    with pytest.raises(sg.TraceError, match="No submodule with parameters could be traced"):
        sg.slim(Flat(), (x_in(),))


def test_blocks_held_in_a_module_list_are_searched() -> None:
    """A ModuleList is never called itself: its blocks are tried one by one."""

    class Blocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 1))
                for _ in range(2)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = block(x)
            return x if x.sum() > 0 else -x  # data-dependent control flow

    result = sg.slim(Blocks().eval(), (x_in(),), ratio=0.5)
    # the width between the blocks is wired from one part to the next: it stays free
    assert prunable(result.graph) == {
        "blocks.0.0.weight:0": 16,
        "blocks.0.2.weight:0": 3,
        "blocks.1.0.weight:0": 16,
    }
    assert [block[0].out_channels for block in result.model.blocks] == [8, 8]
