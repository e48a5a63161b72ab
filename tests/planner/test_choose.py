"""``Chooser.choose`` takes items in order while they fit the budget and leave every
partial slot at least one index: the vectorised form against the plain loop it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from slimgraph.planner.choose import Chooser


def loop_choose(chooser: Chooser, items: list[tuple[int, ...]], budget: int) -> list[int]:
    """The reference: one item at a time, every check on numpy arrays."""
    picked: list[int] = []
    left = chooser.partial.sum(axis=1)
    spent = 0
    for item in items:
        w = int(chooser.weight[list(item)].sum())
        if spent + w > budget:
            continue
        need = chooser.partial[:, list(item)].sum(axis=1)
        if (left - need < 1).any():
            continue
        left = left - need
        picked += item
        spent += w
    return sorted(picked)


def chooser(units: int, partial_rows: int, rng: np.random.Generator) -> Chooser:
    c = Chooser.__new__(Chooser)  # the attributes choose reads, without a graph
    c.scores = rng.random(units)
    c.weight = rng.integers(1, 4, units)
    partial = rng.integers(0, 3, (partial_rows, units)) * (rng.random((partial_rows, units)) < 0.4)
    partial[:, 0] = 1  # every row holds some unit
    c.partial = partial
    return c


@pytest.mark.parametrize("partial_rows", [0, 1, 5])
@pytest.mark.parametrize("pairs", [False, True])
def test_choose_matches_the_item_by_item_loop(partial_rows: int, pairs: bool) -> None:
    rng = np.random.default_rng(partial_rows + 10 * pairs)
    for _ in range(40):
        units = int(rng.integers(1, 40))
        c = chooser(units, partial_rows, rng)
        order = rng.permutation(units).tolist()
        if pairs:
            items = [tuple(order[i : i + 2]) for i in range(0, units, 2)]
        else:
            items = [(u,) for u in order]
        for budget in (0, 1, units // 2, 3 * units):
            assert c.choose(items, budget) == loop_choose(c, items, budget)
    assert chooser(3, 1, rng).choose([], 5) == []
