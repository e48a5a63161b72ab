"""Kind ``reshape`` (view, flatten, unflatten): ``refine`` splits two shapes into shared
factors, and the channels follow their factor through flatten, shuffles and windows."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

import slimgraph as sg
from slimgraph.graph.kinds.reshape import refine
from tests.oracles import assert_dead_units_drop_exactly, assert_slims, prunable

# -- refine: the common refinement of two shapes.


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((2, 768), (24, 64), ([[0], [1, 2]], [[0, 1], [2]], [2, 12, 64])),
        ((2, 3, 4), (6, 4), ([[0], [1], [2]], [[0, 1], [2]], [2, 3, 4])),
        ((8,), (2, 4), ([[0, 1]], [[0], [1]], [2, 4])),
        ((2, 6), (4, 3), ([[0], [1, 2]], [[0, 1], [2]], [2, 2, 3])),
        ((4, 4), (4, 4), ([[0], [1]], [[0], [1]], [4, 4])),
        ((1, 8, 1, 1), (8,), ([[], [0], [], []], [[0]], [8])),
        ((2, 4, 1), (1, 8), ([[0], [1], []], [[], [0, 1]], [2, 4])),
        ((), (1,), ([], [[]], [])),
        # channel shuffle: (B, g, C/g, H, W) -> (B, C/g, g, H, W) -> (B, C, H, W)
        (
            (2, 2, 3, 4, 4),
            (2, 6, 4, 4),
            ([[0], [1], [2], [3], [4]], [[0], [1, 2], [3], [4]], [2, 2, 3, 4, 4]),
        ),
        # Swin window partition after the permute: (B, H/w, W/w, w, w, C) -> (-1, w*w, C)
        (
            (1, 2, 2, 2, 2, 8),
            (4, 4, 8),
            ([[], [0], [1], [2], [3], [4]], [[0, 1], [2, 3], [4]], [2, 2, 2, 2, 8]),
        ),
    ],
)
def test_refine_splits_both_shapes_into_shared_factors(a, b, expected) -> None:
    assert refine(a, b) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((6, 4), (4, 6)),  # boundaries 4 and 6 are not a divisibility chain
        ((2, 3), (3, 2)),
        ((4, 9), (6, 6)),
        ((2, 3), (7,)),  # different numel
        ((4,), (2,)),
    ],
)
def test_refine_refuses_shapes_without_a_common_refinement(a, b) -> None:
    assert refine(a, b) is None


def _boundaries(shape: tuple[int, ...]) -> set[int]:
    return {math.prod(shape[: i + 1]) for i in range(len(shape))} - {1}


@st.composite
def _two_groupings(draw):
    """Two shapes that regroup one chain of factors, with size-1 dims sprinkled in."""
    factors = draw(st.lists(st.integers(2, 5), min_size=1, max_size=6))

    def grouping() -> tuple[int, ...]:
        cuts = draw(st.sets(st.integers(1, len(factors) - 1))) if len(factors) > 1 else set()
        edges = [0, *sorted(cuts), len(factors)]
        dims = [math.prod(factors[i:j]) for i, j in pairwise(edges)]
        for _ in range(draw(st.integers(0, 2))):
            dims.insert(draw(st.integers(0, len(dims))), 1)
        return tuple(dims)

    return grouping(), grouping()


@settings(max_examples=200, deadline=None)
@given(_two_groupings())
def test_refine_is_the_coarsest_common_refinement(shapes) -> None:
    a, b = shapes
    found = refine(a, b)
    assert found is not None
    fa, fb, sizes = found
    for shape, dims in ((a, fa), (b, fb)):
        assert [math.prod(sizes[f] for f in ids) for ids in dims] == list(shape)
        assert [f for ids in dims for f in ids] == list(range(len(sizes)))
    assert all(s > 1 for s in sizes)
    assert len(sizes) == len(_boundaries(a) | _boundaries(b))


# -- flatten -> linear (VGG, AlexNet): channel c owns the inputs c*H*W ... (c+1)*H*W - 1.


FLATTEN = {
    "flatten": lambda y: torch.flatten(y, 1),
    "view": lambda y: y.view(y.size(0), -1),
    "reshape": lambda y: y.reshape(y.shape[0], -1),
    "Flatten": nn.Flatten(),
}


class Classifier(nn.Module):
    """conv -> relu -> max pool -> flatten -> linear -> relu -> linear."""

    def __init__(self, how: str, channels: int = 4, hw: tuple[int, int] = (2, 3)) -> None:
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.fc = nn.Linear(channels * hw[0] * hw[1], 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(torch.relu(self.conv(x)), 2)
        if self.how == "channels-last":
            y = y.permute(0, 2, 3, 1).flatten(1)
        else:
            y = FLATTEN[self.how](y)
        return self.out(torch.relu(self.fc(y)))


X = torch.randn(2, 3, 4, 6)


BLOCKS = [c for c in range(4) for _ in range(6)]


@pytest.mark.parametrize("how", sorted(FLATTEN))
def test_channel_owns_a_block_of_linear_inputs(how: str) -> None:
    graph = sg.trace(Classifier(how), (X,))
    assert prunable(graph) == {"conv.weight:0": 4, "fc.weight:0": 5}
    assert graph.unit_map("conv.weight:0") == {
        "conv.weight:0": [0, 1, 2, 3],
        "conv.bias:0": [0, 1, 2, 3],
        "fc.weight:1": BLOCKS,
    }
    assert graph.group("conv.weight:0").exact


def test_channels_last_flatten_interleaves_channels() -> None:
    graph = sg.trace(Classifier("channels-last"), (X,))
    assert prunable(graph) == {"conv.weight:0": 4, "fc.weight:0": 5}
    assert graph.unit_map("conv.weight:0")["fc.weight:1"] == [0, 1, 2, 3] * 6


@pytest.mark.parametrize("how", [*sorted(FLATTEN), "channels-last"])
def test_spatial_factors_of_the_flattened_dim_are_frozen(how: str) -> None:
    graph = sg.trace(Classifier(how), (X,))
    reasons = sorted(w for w in graph.frozen_slots.values() if w.startswith("reshape factor"))
    assert reasons == ["reshape factor 2 of a 24-wide dim", "reshape factor 3 of a 24-wide dim"]


@pytest.mark.parametrize("how", [*sorted(FLATTEN), "channels-last"])
def test_dead_channels_drop_their_linear_inputs_exactly(how: str) -> None:
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        Classifier(how), X, {"conv.weight:0": ([1, 3], ["conv.weight:0", "conv.bias:0"])}
    )
    assert (slim.conv.out_channels, slim.fc.in_features) == (2, 12)


def test_classifier_slims_end_to_end() -> None:
    torch.manual_seed(0)
    slim = assert_slims(Classifier("flatten"), X).model
    assert (slim.conv.out_channels, slim.fc.in_features, slim.fc.out_features) == (2, 12, 3)


def test_few_channels_on_a_large_map_still_own_their_blocks() -> None:
    model = Classifier("flatten", channels=2, hw=(3, 3))
    x = torch.randn(2, 3, 6, 6)
    graph = sg.trace(model, (x,))
    assert prunable(graph) == {"conv.weight:0": 2, "fc.weight:0": 5}
    assert graph.unit_map("conv.weight:0")["fc.weight:1"] == [0] * 9 + [1] * 9


# -- channel shuffle (view -> transpose -> view) permutes channels between two convs.


X_SHUFFLE = torch.randn(2, 3, 4, 4)


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class Shuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(shuffle(self.a(x), self.groups))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: half the channels pass, half go through a branch, then shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        h = channels // 2
        self.branch = nn.Sequential(
            nn.Conv2d(h, h, 1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False),
            nn.BatchNorm2d(h),
            nn.Conv2d(h, h, 1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, 1)
        return shuffle(torch.cat([a, self.branch(b)], 1), 2)


class ShuffleNet(nn.Module):
    def __init__(self, units: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.units = nn.Sequential(*[ShuffleUnit(8) for _ in range(units)])
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(self.stem(x)))


# Output channel j of a shuffle of g groups of n reads input channel (j % g) * n + j // g:
# unit i is one channel per group, {i, i + n, ...}, seen as g neighbours after the shuffle.
def test_shuffle_permutes_channels() -> None:
    graph = sg.trace(Shuffle(2), (X_SHUFFLE,))
    assert prunable(graph) == {"a.weight:0": 3}
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": [0, 1, 2, 0, 1, 2],
        "a.bias:0": [0, 1, 2, 0, 1, 2],
        "b.weight:1": [0, 0, 1, 1, 2, 2],
    }
    assert graph.group("a.weight:0").exact


def test_dead_shuffled_channels_drop_exactly() -> None:
    torch.manual_seed(0)
    slim = assert_dead_units_drop_exactly(
        Shuffle(2), X_SHUFFLE, {"a.weight:0": ([1], ["a.weight:0", "a.bias:0"])}
    )
    assert (slim.a.out_channels, slim.b.in_channels) == (4, 4)


@pytest.mark.xfail(
    strict=True,
    reason="reshape carries channels through its largest factor: in view(b, 3, 6 // 3, h, w) "
    "that is the constant group count 3, not the 2 channels per group, so a unit is a whole "
    "shuffle group and dropping one breaks the view (RewriteError in the meta dry run)",
)
def test_shuffle_with_more_groups_than_channels_per_group() -> None:
    torch.manual_seed(0)
    graph = sg.trace(Shuffle(3), (X_SHUFFLE,))
    assert graph.unit_map("a.weight:0") == {
        "a.weight:0": [0, 1, 0, 1, 0, 1],
        "a.bias:0": [0, 1, 0, 1, 0, 1],
        "b.weight:1": [0, 0, 0, 1, 1, 1],
    }
    assert assert_slims(Shuffle(3), X_SHUFFLE).model.a.out_channels == 3


def test_shuffle_unit_couples_passed_half_with_branch_output() -> None:
    graph = sg.trace(ShuffleNet(1), (X_SHUFFLE,))
    assert prunable(graph) == {"stem.weight:0": 8, "units.0.branch.0.weight:0": 4}
    # Unit i < 4 is passed channel i and branch output i, neighbours after the shuffle;
    # unit 4 + i is stem channel 4 + i, the branch's input i.
    four = [0, 1, 2, 3]
    assert graph.unit_map("stem.weight:0") == {
        "stem.weight:0": list(range(8)),
        "stem.bias:0": list(range(8)),
        "units.0.branch.0.weight:1": [4, 5, 6, 7],
        "units.0.branch.5.weight:0": four,
        "units.0.branch.6.weight:0": four,
        "units.0.branch.6.bias:0": four,
        "head.weight:1": [0, 0, 1, 1, 2, 2, 3, 3],
        "units.0.branch.6.running_mean:0": four,
        "units.0.branch.6.running_var:0": four,
    }
    assert graph.group("stem.weight:0").exact


def test_dead_shuffle_unit_channels_drop_exactly() -> None:
    torch.manual_seed(0)
    producers = [
        "stem.weight:0",
        "stem.bias:0",
        "units.0.branch.6.weight:0",
        "units.0.branch.6.bias:0",
    ]
    # One unit from each half of the chunk, so both halves stay equal.
    slim = assert_dead_units_drop_exactly(
        ShuffleNet(1), X_SHUFFLE, {"stem.weight:0": ([1, 6], producers)}
    )
    branch = slim.units[0].branch
    assert (slim.stem.out_channels, branch[0].in_channels, branch[5].out_channels) == (6, 3, 3)
    assert slim.head.in_channels == 6


def test_stacked_shuffle_units_slim_and_run() -> None:
    torch.manual_seed(0)
    result = assert_slims(ShuffleNet(2), X_SHUFFLE)
    # The second unit's chunk reads shuffled channels: its parts are re-split by position.
    assert sorted(g.id for g in result.graph.prunable_groups() if not g.exact) == [
        "units.0.branch.0.weight:1",
        "units.0.branch.5.weight:0",
        "units.1.branch.0.weight:1",
        "units.1.branch.5.weight:0",
    ]
    assert result.model.stem.out_channels == 4


# -- Swin: window partition keeps C prunable; patch merging ties the four slices' channel c.


X_WINDOWS = torch.randn(2, 4, 4, 3)  # B, H, W, C (channels last, as Swin keeps them)


def partition(x: torch.Tensor, w: int) -> torch.Tensor:
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def reverse(x: torch.Tensor, w: int, b: int, h: int, wd: int) -> torch.Tensor:
    x = x.view(b, h // w, wd // w, w, w, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, -1)


class Windows(nn.Module):
    """embed -> partition into 2x2 windows -> per-window linear -> reverse -> residual."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        y = self.embed(x)
        z = reverse(self.proj(partition(y, 2)), 2, b, h, w)
        return self.head(y + z)


class PatchMerging(nn.Module):
    """cat of the four 2x2 neighbours on C -> LayerNorm(4C) -> Linear(4C, 2C)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(16)
        self.reduction = nn.Linear(16, 8, bias=False)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.embed(x)
        parts = [y[:, 0::2, 0::2], y[:, 1::2, 0::2], y[:, 0::2, 1::2], y[:, 1::2, 1::2]]
        return self.head(self.reduction(self.norm(torch.cat(parts, -1))))


def test_window_partition_keeps_channels_prunable() -> None:
    graph = sg.trace(Windows(), (X_WINDOWS,))
    assert prunable(graph) == {"embed.weight:0": 8}
    c = list(range(8))
    assert graph.unit_map("embed.weight:0") == {
        "embed.weight:0": c,
        "embed.bias:0": c,
        "proj.weight:0": c,
        "proj.weight:1": c,
        "proj.bias:0": c,
        "head.weight:1": c,
    }
    assert graph.group("embed.weight:0").exact


def test_dead_window_channels_drop_exactly() -> None:
    torch.manual_seed(0)
    producers = ["embed.weight:0", "embed.bias:0", "proj.weight:0", "proj.bias:0"]
    slim = assert_dead_units_drop_exactly(
        Windows(), X_WINDOWS, {"embed.weight:0": ([0, 3, 4], producers)}
    )
    assert (slim.embed.out_features, slim.proj.in_features, slim.head.in_features) == (5, 5, 5)


def test_patch_merging_unit_has_four_norm_indices() -> None:
    graph = sg.trace(PatchMerging(), (X_WINDOWS,))
    assert prunable(graph) == {"embed.weight:0": 4, "reduction.weight:0": 8}
    four = [0, 1, 2, 3]
    assert graph.unit_map("embed.weight:0") == {
        "embed.weight:0": four,
        "embed.bias:0": four,
        "norm.weight:0": four * 4,
        "norm.bias:0": four * 4,
        "reduction.weight:1": four * 4,
    }
    assert graph.unit_map("reduction.weight:0") == {
        "reduction.weight:0": list(range(8)),
        "head.weight:1": list(range(8)),
    }
    assert graph.group("embed.weight:0").exact is False
    assert graph.group("reduction.weight:0").exact is True


def test_patch_merging_slims_end_to_end() -> None:
    torch.manual_seed(0)
    slim = assert_slims(PatchMerging(), X_WINDOWS).model
    assert slim.embed.out_features == 2
    assert slim.norm.normalized_shape == (8,)
    assert slim.reduction.weight.shape == (4, 8)


def test_windows_slim_end_to_end() -> None:
    torch.manual_seed(0)
    slim = assert_slims(Windows(), X_WINDOWS).model
    assert (slim.embed.out_features, slim.proj.out_features) == (4, 4)
