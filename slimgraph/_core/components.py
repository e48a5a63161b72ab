"""Connected components of a large graph of integer ids, vectorised with numpy."""

from __future__ import annotations

import numpy as np

__all__ = ["IndexLabels", "components", "in_order"]


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Label every id in ``range(n)`` with the smallest id of its component.

    Each round hooks the larger of two roots under the smaller along every edge, then
    compresses paths by pointer jumping, so the number of rounds grows with log(n).

    >>> components(5, np.array([0, 3]), np.array([1, 4])).tolist()
    [0, 0, 2, 3, 3]
    """
    labels = np.arange(n, dtype=np.int64)
    if len(a) == 0:
        return labels
    while True:
        la, lb = labels[a], labels[b]
        differ = la != lb
        if not differ.any():
            return labels
        lo = np.minimum(la[differ], lb[differ])
        hi = np.maximum(la[differ], lb[differ])
        np.minimum.at(labels, hi, lo)
        while True:
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped


class IndexLabels:
    """The component of every index of every slot, where slots are coupled whole
    (``same``: index k of one slot with index k of the other) or index by index
    (``pairs``: ``(slot_a, slot_b, indices_a, indices_b)``).

    Index k of slot s is element ``offsets[s] + k``, and its label is the smallest element
    of its component, as :func:`components` over all elements would give; but whole-slot
    couplings (most of a network: every elementwise op) are merged slot by slot first, so
    only the first slot of each merged class has elements of its own and only the
    index-by-index pairs are materialised. Offsets must grow with the slot number.

    >>> labels = IndexLabels([2, 2, 3], [0, 2, 4], [(0, 1)], [(1, 2, [1], [2])])
    >>> [labels.of(s).tolist() for s in range(3)]
    [[0, 1], [0, 1], [4, 5, 1]]
    """

    def __init__(
        self,
        sizes: list[int],
        offsets: list[int],
        same: list[tuple[int, int]],
        pairs: list[tuple[int, int, np.ndarray, np.ndarray]],
    ) -> None:
        size = np.asarray(sizes, dtype=np.int64)
        offset = np.asarray(offsets, dtype=np.int64)
        whole = np.asarray(same, dtype=np.int64).reshape(-1, 2)
        root = components(len(size), whole[:, 0], whole[:, 1])  # the class's first slot
        roots = np.unique(root)
        start = np.zeros(len(size), dtype=np.int64)  # in the space of the roots' elements
        start[roots] = np.concatenate([[0], np.cumsum(size[roots])[:-1]]) if len(roots) else []
        self.start = start[root]
        self.size = size
        n = int(size[roots].sum())
        a = [self.start[sa] + np.asarray(ia, dtype=np.int64) for sa, _, ia, _ in pairs]
        b = [self.start[sb] + np.asarray(ib, dtype=np.int64) for _, sb, _, ib in pairs]
        joined = components(
            n,
            np.concatenate(a) if a else np.zeros(0, np.int64),
            np.concatenate(b) if b else np.zeros(0, np.int64),
        )
        # roots' elements are numbered in the order of their elements, so the smallest
        # of a component maps to the smallest element
        element = np.repeat(offset[roots] - start[roots], size[roots]) + np.arange(n)
        self.labels = element[joined]

    def of(self, slot: int) -> np.ndarray:
        """The labels of the indices of ``slot``."""
        begin = self.start[slot]
        return self.labels[begin : begin + self.size[slot]]


def in_order(values: np.ndarray) -> np.ndarray:
    """The distinct ``values`` in the order they first appear.

    >>> in_order(np.array([5, 1, 5, 3, 1])).tolist()
    [5, 1, 3]
    """
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]
