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
    """The smallest multiple of channels whose uniform slims keep, per millisecond (``ms``
    of the slim at (ratio, multiple)), within 5 % of the ``macs`` that the most efficient
    multiple's keep, on average over the ratios. At one ratio a larger multiple keeps
    more (widths round up), so the fastest slim is no guide: resnet50 in ONNX Runtime,
    cut 0.45, kept 0.371 of its MACs in 17.8 ms at multiples of 16, 0.333 in 18.2 ms at
    multiples of 8.

    >>> ms = {(r, s): 10.0 for r in (0.5, 0.3) for s in (1, 8, 16)}
    >>> kept = {(r, s): {1: 10.0, 8: 12.0, 16: 12.4}[s] for r in (0.5, 0.3) for s in (1, 8, 16)}
    >>> favoured(ms, kept)  # 16 keeps the most per ms, 8 within 5 % of it
    8
    >>> favoured(ms, {**kept, (0.3, 16): 13.6})  # now 8 is 8 % behind
    16
    """
    ratios, steps = sorted({r for r, _ in ms}), sorted({s for _, s in ms})
    efficiency = {s: sum(macs[r, s] / ms[r, s] for r in ratios) / len(ratios) for s in steps}
    return min(s for s in steps if efficiency[s] >= 0.95 * max(efficiency.values()))
