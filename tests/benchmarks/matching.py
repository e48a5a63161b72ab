"""Re-planning a slim until it runs as fast as a reference, measured (shared by the
benchmarks that compare plans at equal latency).

>>> latency = lambda t: 0.92 if t < 0.8 else 0.97 + 2 * (t - 0.8)  # over the reference's
>>> target, slim, miss = matched(lambda t: round(t, 3), latency, 0.791, tries=5)
  target 0.791 runs at 0.920 of the reference's latency
  target 0.847 runs at 1.064 of the reference's latency
  target 0.816 runs at 1.002 of the reference's latency
  target 0.811 runs at 0.992 of the reference's latency
>>> slim, round(miss, 3)
(0.811, 0.992)
>>> matched(lambda t: round(t, 3), latency, 0.791, tries=3)[1:]  # 1.002 is slower: not counted
  target 0.791 runs at 0.920 of the reference's latency
  target 0.847 runs at 1.064 of the reference's latency
  target 0.816 runs at 1.002 of the reference's latency
(0.791, 0.92)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

__all__ = ["matched"]

Slim = TypeVar("Slim")


def matched(
    make: Callable[[float], Slim],
    miss: Callable[[Slim], float],
    target: float,
    tries: int,
    tolerance: float = 0.03,
) -> tuple[float, Slim, float]:
    """``make(target)``, planned again with ``target`` moved by its ``miss`` (its measured
    latency over the reference's, timed in the same rounds so that the machine's drift
    cancels; see :func:`_next`) and kept between the targets already found too fast and
    too slow, up to ``tries`` times, until one runs as fast as the reference or up to
    ``tolerance`` faster (aiming at the middle of that window). The try that counts is
    the closest one not slower than the reference, so that any gap favours the
    reference; the closest of all if every try was slower. Returns (target, slim, miss)."""
    aim = 1 - tolerance / 2  # the middle of the window
    found: list[tuple[float, Slim, float]] = []
    for _ in range(tries):
        slim = make(target)
        m = miss(slim)
        found.append((target, slim, m))
        print(f"  target {target:.3f} runs at {m:.3f} of the reference's latency", flush=True)
        if 1 - tolerance <= m <= 1:
            break
        target = _next(found, aim)
    fair = [f for f in found if f[2] <= 1]
    return min(fair or found, key=lambda f: abs(f[2] - 1))


def _next(found: list[tuple[float, object, float]], aim: float) -> float:
    """The next target: on the line through the nearest tries either side of ``aim`` once
    there are both (a plan's latency is a step function of its target, so scaling by the
    miss alone can step back and forth over the window), else the last target scaled by
    its miss; the midpoint of the nearest tries where either leaves them."""
    fast = [(t, m) for t, _, m in found if m < aim]
    slow = [(t, m) for t, _, m in found if m >= aim]
    lo = max(fast, default=(0.0, 0.0))
    hi = min(slow, default=(1.0, math.inf))
    if fast and slow and hi[1] > lo[1]:
        guess = lo[0] + (aim - lo[1]) * (hi[0] - lo[0]) / (hi[1] - lo[1])
    else:
        target, _, m = found[-1]
        guess = target * aim / m
    return guess if lo[0] < guess < hi[0] else (lo[0] + hi[0]) / 2
