"""Re-planning a slim until it runs as fast as a reference, measured (shared by the
benchmarks that compare plans at equal latency).

>>> latency = {0.5: 1.2, 0.42: 0.9, 0.46: 1.02, 0.45: 0.99}  # over the reference's
>>> target, slim, miss = matched(lambda t: round(t, 2), lambda t: latency[t], 0.5, tries=4)
  target 0.500 runs at 1.200 of the reference's latency
  target 0.417 runs at 0.900 of the reference's latency
  target 0.463 runs at 1.020 of the reference's latency
  target 0.454 runs at 0.990 of the reference's latency
>>> slim, miss  # 1.02 is within 3 %, but slower: it does not count
(0.45, 0.99)
"""

from __future__ import annotations

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
    """``make(target)``, planned again with ``target`` scaled by its ``miss`` (its measured
    latency over the reference's, timed in the same rounds so that the machine's drift
    cancels) and kept between the targets already found too fast and too slow, up to
    ``tries`` times, until one runs as fast as the reference or up to ``tolerance``
    faster. The try that counts is the closest one not slower than the reference, so
    that any gap favours the reference; the closest of all if every try was slower.
    Returns (target, slim, miss)."""
    lo, hi = 0.0, 1.0
    found: list[tuple[float, Slim, float]] = []
    for _ in range(tries):
        slim = make(target)
        m = miss(slim)
        found.append((target, slim, m))
        print(f"  target {target:.3f} runs at {m:.3f} of the reference's latency", flush=True)
        if 1 - tolerance <= m <= 1:
            break
        lo, hi = (lo, target) if m > 1 else (target, hi)
        scaled = target / m
        target = scaled if lo < scaled < hi else (lo + hi) / 2
    fair = [f for f in found if f[2] <= 1]
    return min(fair or found, key=lambda f: abs(f[2] - 1))
