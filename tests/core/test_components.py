"""``_core.components``: connected components of an edge list, labelled by the smallest id."""

from __future__ import annotations

import networkx as nx
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from slimgraph._core.components import components


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
