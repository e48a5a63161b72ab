"""``kinds.reshape.refine`` (common refinement of two shapes) and ``_components``."""

from __future__ import annotations

import math
from itertools import pairwise

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimgraph._core.components import components
from slimgraph.graph.kinds.reshape import refine


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


def test_components_labels_with_the_smallest_id() -> None:
    labels = components(7, np.array([5, 3, 6]), np.array([3, 1, 5]))
    assert labels.tolist() == [0, 1, 2, 1, 4, 1, 1]


def test_components_without_edges_are_singletons() -> None:
    empty = np.zeros(0, np.int64)
    assert components(4, empty, empty).tolist() == [0, 1, 2, 3]


def test_components_of_a_long_reversed_chain() -> None:
    n = 1000
    ids = np.arange(n - 1, 0, -1)
    assert components(n, ids, ids - 1).tolist() == [0] * n


def test_components_ignore_self_loops_and_repeats() -> None:
    labels = components(5, np.array([2, 2, 4, 4]), np.array([2, 4, 2, 4]))
    assert labels.tolist() == [0, 1, 2, 3, 2]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60),
        )
    )
)
def test_components_match_networkx(case) -> None:
    n, edges = case
    a = np.array([e[0] for e in edges], dtype=np.int64)
    b = np.array([e[1] for e in edges], dtype=np.int64)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(edges)
    expected = np.empty(n, dtype=np.int64)
    for comp in nx.connected_components(graph):
        expected[list(comp)] = min(comp)
    assert components(n, a, b).tolist() == expected.tolist()
