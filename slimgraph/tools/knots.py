"""The arithmetic of a latency model's fit on whole-model measurements (see
:mod:`slimgraph.tools.profile`): the knots a noisy series of points keeps, the line and
knots of a fit, and the multiple of channels the runtime favours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from slimgraph.criteria.latency import LatencyModel

__all__ = ["ascending", "favoured", "fit"]


def ascending(points: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Of (tables' sum, measured ms) ``points``, in order, those that keep both
    coordinates ascending with the ones kept before them (noise can time a lighter cut
    below a deeper one: such a point is left out).

    >>> ascending([(10.0, 12.0), (4.0, 6.0), (6.0, 5.0), (6.0, 9.0)])
    ((4.0, 6.0), (6.0, 9.0), (10.0, 12.0))
    """
    knots: list[tuple[float, float]] = []
    for point in points:
        candidate = sorted([*knots, point])
        if all(a[0] < b[0] and a[1] < b[1] for a, b in zip(candidate, candidate[1:])):
            knots = candidate
    return tuple(knots)


def fit(bare: LatencyModel, points: list[tuple[float, float]]) -> LatencyModel:
    """``bare`` calibrated on (tables' sum, measured ms) ``points``, the original's first
    and the half cut's second: the line through those two is ``scale`` and ``offset_ms``,
    and with the others that keep both coordinates ascending they are the knots (noise
    can time a lighter cut below a deeper one: such a point is left out, in order).

    >>> from slimgraph.criteria.latency import LayerTable
    >>> t = LayerTable(shape=(2, 2), outs=(2,), ins=(2,), ms=((1.0,),))
    >>> bare = LatencyModel(runtime="torch", version="x", machine="m", threads=1, layers={"a": t})
    >>> m = fit(bare, [(10.0, 12.0), (4.0, 6.0), (6.0, 9.0)])
    >>> m.scale, m.offset_ms, m.knots
    (1.0, 2.0, ((4.0, 6.0), (6.0, 9.0), (10.0, 12.0)))
    >>> fit(bare, [(10.0, 12.0), (4.0, 6.0), (6.0, 5.0)]).knots
    ((4.0, 6.0), (10.0, 12.0))
    """
    (s_full, full), (s_half, half) = points[0], points[1]
    scale = (full - half) / (s_full - s_half) if s_full > s_half else 0.0
    if scale <= 0.0:  # the tables do not order the two: keep their proportion only
        return bare.model_copy(update={"scale": full / s_full, "offset_ms": 0.0})
    update = {"scale": scale, "offset_ms": full - scale * s_full, "knots": ascending(points)}
    return bare.model_copy(update=update)


def favoured(ms: Mapping[tuple[float, int], float], macs: Mapping[tuple[float, int], float]) -> int:
    """The smallest multiple of channels whose uniform slims run within 5 % of the fastest
    multiple's at the same MACs: each multiple's slims (``ms`` and ``macs`` kept, by
    (ratio, multiple)) give a line of milliseconds against MACs, read at the mean MACs of
    their slims. Not the fastest slim at one ratio: widths round up, so a larger multiple
    keeps more there (resnet50 in ONNX Runtime, cut 0.45: 0.371 of the MACs in 17.8 ms at
    multiples of 16, 0.333 in 18.2 ms at 8). A multiple whose slims keep the same MACs at
    every ratio cannot cut the model that finely and is left out (unless all are), of the
    choice and of the mean.

    >>> kept = {(0.5, 1): 40, (0.3, 1): 60, (0.5, 8): 44, (0.3, 8): 62, (0.5, 16): 48, (0.3, 16): 64}
    >>> ms = {(0.5, 1): 10.0, (0.3, 1): 14.0, (0.5, 8): 10.4, (0.3, 8): 14.0, (0.5, 16): 10.0,
    ...       (0.3, 16): 13.2}
    >>> favoured(ms, kept)  # at 53 MACs: 12.6, 12.2 and 11.0 ms
    16
    >>> favoured({**ms, (0.5, 16): 10.8, (0.3, 16): 14.0}, kept)  # 16 at 11.8: 8 within 5 %
    8
    >>> favoured(ms, {**kept, (0.5, 16): 64})  # 16 keeps 64 at both ratios: it cannot cut
    1
    >>> stuck = {**kept, (0.5, 16): 64}  # nor are its slims' MACs the level: at 51.5, not 55.7
    >>> favoured({**ms, (0.5, 8): 9.5, (0.3, 8): 14.3}, stuck)  # 12.3 against 11.5 ms
    8
    """
    lines = {
        s: _line([(macs[r, t], v) for (r, t), v in ms.items() if t == s])
        for s in sorted({s for _, s in ms})
    }
    cuts = {s: line for s, line in lines.items() if line is not None}
    if not cuts:
        return min(lines)
    level = sum(macs[r, s] for r, s in ms if s in cuts) / sum(1 for _, s in ms if s in cuts)
    timed = {s: my + slope * (level - mx) for s, (mx, my, slope) in cuts.items()}
    return min(s for s in cuts if timed[s] <= 1.05 * min(timed.values()))


def _line(points: list[tuple[float, float]]) -> tuple[float, float, float] | None:
    """The least-squares line through ``points`` as (mean x, mean y, slope); None where
    every x is the same."""
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx <= 0.0:
        return None
    return mx, my, sum((x - mx) * (y - my) for x, y in points) / sxx
