"""Connected components of a large graph of integer ids, vectorised with numpy."""

from __future__ import annotations

import numpy as np

__all__ = ["components"]


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
