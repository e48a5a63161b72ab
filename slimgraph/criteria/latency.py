"""A latency model of one runtime: per-layer tables of measured milliseconds by width,
summed and calibrated against whole-model measurements.

Each convolution and linear layer has a table of its latency, measured alone on the
input it gets in the model, at a few output and input widths (``dim 0`` and ``dim 1`` of
its weight). The tables' sum maps to the whole model's milliseconds through ``knots``,
whole-model measurements (the original and slims) as (sum, ms) pairs: between
two knots the prediction is linear, beyond the end ones it extends their segments. So
what the tables leave out (norms, activations, pooling, attention softmax, the runtime's
fixed cost) is carried along, and so is the runtime's response to width, which is not
linear in the sum (a network cut to half its latency runs slower than the straight line
from the original to a deeper cut predicts). Without knots, ``scale * sum + offset_ms``.
``scale`` and ``offset_ms`` are in any case the straight line through the original and
one slim: the cost of a channel reads ``scale``. Between measured widths the tables
interpolate linearly; below the narrowest they extend its segment (to no less than 0 ms:
a plan may cut a group to a few channels, far below the quarter widths timed), above the
widest they hold it.

A layer timed alone also pays for what the model's layers share: moving its input and
output, the runtime's layout changes around it (MobileNetV2's early layers, at 112x112,
run in about half their table's time in the model). The knots average that out over the
slims they were measured on, so they hold for plans that spread their cut like those:
``scope`` says which (uniform slims, or global or isomorphic budget plans).

:func:`slimgraph.profile_latency` measures a model; the result is plain data (JSON) that
``PruneConfig(target_latency=..., latency_model=...)`` plans against.

>>> table = LayerTable(shape=(8, 4), outs=(4, 8), ins=(2, 4), ms=((1.0, 2.0), (2.0, 4.0)))
>>> table.at(6, 3), table.at(2, 1)  # the table is out * in / 8: both are exact
(2.25, 0.25)
>>> model = LatencyModel(runtime="torch", version="x", machine="m", threads=1,
...                      layers={"fc": table}, scale=2.0, offset_ms=1.0)
>>> model.predict({"fc": (8, 4)}), model.predict({"fc": (4, 2)})
(9.0, 3.0)
>>> model.model_copy(update={"knots": ((1.0, 2.0), (2.25, 5.0), (4.0, 9.0))}).predict({"fc": (6, 3)})
5.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from slimgraph.graph.depgraph import Group

__all__ = ["LatencyModel", "LayerTable"]

CHORD = 0.5  # a group's saving per channel is read over its first half


class LayerTable(BaseModel):
    """Milliseconds of one layer at output widths ``outs`` (rows) and input widths ``ins``
    (columns), both ascending; ``shape`` is its full weight shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: tuple[int, ...]
    outs: tuple[int, ...]
    ins: tuple[int, ...]
    ms: tuple[tuple[float, ...], ...]
    calls: int = Field(1, ge=1, description="how often one forward runs the layer")

    @model_validator(mode="after")
    def _grid(self) -> LayerTable:
        if len(self.ms) != len(self.outs) or any(len(row) != len(self.ins) for row in self.ms):
            raise ValueError(f"ms must be {len(self.outs)} rows of {len(self.ins)} values")
        for axis in (self.outs, self.ins):
            if not axis or list(axis) != sorted(set(axis)):
                raise ValueError(f"widths {axis} must be distinct and ascending")
        return self

    def at(self, out: float, inp: float) -> float:
        """Milliseconds at ``out`` x ``inp`` (one call)."""
        rows = [_interp(inp, self.ins, row) for row in self.ms]
        return _interp(out, self.outs, rows)


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """``ys`` at ``x`` along the line through (``xs``, ``ys``); below ``xs[0]`` its first
    segment extended (held where noise made it fall), to no less than 0; above ``xs[-1]``,
    ``ys[-1]``."""
    if x >= xs[0] or len(xs) < 2:
        return float(np.interp(x, xs, ys))
    slope = max((ys[1] - ys[0]) / (xs[1] - xs[0]), 0.0)
    return max(float(ys[0] - slope * (xs[0] - x)), 0.0)


class LatencyModel(BaseModel):
    """What :func:`slimgraph.profile_latency` measured: where, and the layer tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: Literal["torch", "onnxruntime"]
    version: str
    machine: str
    threads: int
    layers: dict[str, LayerTable]
    round_to: int = Field(
        1,
        ge=1,
        description="the multiple of channels the runtime favours, as measured (the fastest "
        "at the same MACs)",
    )
    scale: float = Field(1.0, gt=0.0)
    offset_ms: float = 0.0
    measured_ms: dict[str, float] = Field(
        default_factory=dict,
        description="whole-model measurements of the original and uniform slims, by pass: "
        "'multiple: ...' chose round_to, 'knot: ...' are the knots, 'check: ...' the check",
    )
    knots: tuple[tuple[float, float], ...] = Field(
        (),
        description="(tables' sum, measured ms) of whole models, both ascending: the "
        "prediction follows the line through them",
    )
    check_error: float | None = Field(
        None,
        description="predicted / measured - 1 on a slim model, by the knots without it",
    )
    inputs: tuple[tuple[int, ...], ...] = Field(
        (),
        description="the shapes of the example inputs it was profiled on, positional then "
        "keyword: its tables time the layers at these (empty: not recorded)",
    )
    dtypes: tuple[str, ...] = Field(
        (),
        description="the dtypes of its layers' weights when profiled ('float32', "
        "'bfloat16'): its tables time kernels of these (empty: not recorded)",
    )
    scope: Literal["local", "global", "isomorphic"] = Field(
        "local",
        description="the plans the knots were measured on: uniform slims ('local'), or "
        "budget plans in this scope, which spread their cut unevenly",
    )

    @model_validator(mode="after")
    def _ascending(self) -> LatencyModel:
        for (s0, m0), (s1, m1) in zip(self.knots, self.knots[1:]):
            if not (0.0 <= s0 < s1 and 0.0 <= m0 < m1):
                raise ValueError(f"knots {self.knots} must ascend in both the sum and the ms")
        if len(self.knots) == 1:
            raise ValueError("knots: none, or at least two")
        if not np.isfinite(np.asarray(self.knots, dtype=float)).all():
            raise ValueError(f"knots {self.knots} must be finite")
        return self

    def layer_ms(self, shapes: Mapping[str, tuple[int, ...]]) -> float:
        """The tables' sum at the weight shapes ``shapes`` (module name -> shape); a layer
        ``shapes`` does not name is at its full width."""
        total = 0.0
        for name, table in self.layers.items():
            shape = shapes.get(name, table.shape)
            inp = shape[1] if len(shape) > 1 else 1
            total += table.calls * table.at(shape[0], inp)
        return total

    def predict(self, shapes: Mapping[str, tuple[int, ...]]) -> float:
        """Predicted milliseconds of the whole model at the weight shapes ``shapes``."""
        return self.calibrated(self.layer_ms(shapes))

    def calibrated(self, total: float) -> float:
        """Whole-model milliseconds where the tables sum to ``total``."""
        if not self.knots:
            return self.scale * total + self.offset_ms
        sums, ms = zip(*self.knots)
        # the segment holding ``total``; beyond the ends, the end segment extended
        i = min(max(int(np.searchsorted(sums, total)), 1), len(sums) - 1)
        slope = (ms[i] - ms[i - 1]) / (sums[i] - sums[i - 1])
        return max(ms[i - 1] + slope * (total - sums[i - 1]), 0.0)  # far below: no time

    def with_knot(self, total: float, ms: float) -> LatencyModel:
        """This model with one more whole-model measurement: ``ms`` where the tables sum
        to ``total``. The knots it contradicts (a deeper cut measured no faster, or a
        lighter one no slower) go: the newest measurement is of the widths at hand.
        Without knots, the line's point at the full widths starts them; where one point
        would be left, the line moves through it instead (same ``scale``, no knots).

        >>> t = LayerTable(shape=(2, 2), outs=(2,), ins=(2,), ms=((10.0,),))
        >>> lm = LatencyModel(runtime="torch", version="x", machine="m", threads=1,
        ...                   layers={"a": t}, knots=((4.0, 5.0), (6.0, 8.0), (10.0, 12.0)))
        >>> lm.with_knot(5.0, 8.5).knots  # (6, 8), a lighter cut measured faster, goes
        ((4.0, 5.0), (5.0, 8.5), (10.0, 12.0))
        >>> lm.with_knot(5.0, 8.5).calibrated(5.0)
        8.5
        """
        full = self.layer_ms({})
        knots = self.knots or ((full, self.calibrated(full)),)
        kept = [(s, m) for s, m in knots if (s < total and m < ms) or (s > total and m > ms)]
        refined = tuple(sorted([*kept, (float(total), float(ms))]))
        if len(refined) < 2:
            return self.model_copy(update={"knots": (), "offset_ms": ms - self.scale * total})
        return self.model_copy(update={"knots": refined})

    def renamed(self, paths: Mapping[str, str | None]) -> LatencyModel:
        """The tables of the model whose module ``paths`` changed (old path -> new one,
        ``None``: removed, as :func:`slimgraph.rewrite.depth.remove_blocks` reports):
        a removed module's layers go, a moved one's follow it, inner paths first. What
        the tables leave out (``offset_ms``: norms, activations) goes with the layers, in
        proportion to the tabled time that remains; so do the knots, whose curve keeps
        its shape at the shorter model's scale.

        >>> def t(ms):
        ...     return LayerTable(shape=(2, 2), outs=(2,), ins=(2,), ms=((ms,),))
        >>> lm = LatencyModel(runtime="torch", version="x", machine="m", threads=1, offset_ms=3.0,
        ...                   layers={"b.0.fc": t(1.0), "b.1.fc": t(2.0), "b.2.fc": t(3.0)})
        >>> short = lm.renamed({"b.2": "b.1", "b.1": None})  # b.1 dropped, b.2 moved up
        >>> {name: table.ms for name, table in short.layers.items()}
        {'b.0.fc': ((1.0,),), 'b.1.fc': ((3.0,),)}
        >>> short.offset_ms  # 4 of the 6 tabled ms are left
        2.0
        """
        layers: dict[str, LayerTable] = {}
        for name, table in self.layers.items():
            # the paths holding ``name`` as it was, innermost first: an inner rename keeps
            # the outer path's characters, so each applies to what the last one left
            holders = [p for p in paths if name == p or name.startswith(f"{p}.")]
            new: str | None = name
            for old in sorted(holders, key=len, reverse=True):
                to = paths[old]
                new = None if to is None or new is None else to + new[len(old) :]
            if new is not None:
                layers[new] = table
        short = self.model_copy(update={"layers": layers})
        whole, left = self.layer_ms({}), short.layer_ms({})
        if whole > 0:
            r = left / whole
            knots = tuple((total * r, ms * r) for total, ms in self.knots) if r > 0 else ()
            short = short.model_copy(update={"offset_ms": self.offset_ms * r, "knots": knots})
        return short

    def ms_per_channel(self, group: Group, channels: int) -> float:
        """Milliseconds saved per channel ``group`` drops, of its ``channels``: the
        tables' saving when every weight dim the group cuts loses half its width, over
        half the channels (a chord: the tables are coarse). 0.0 where no tabled layer
        narrows."""
        cut: dict[str, set[int]] = {}
        for name, dim in group.params:
            module, _, leaf = name.rpartition(".")
            if module in self.layers and leaf in ("weight", "in_proj_weight") and dim < 2:
                cut.setdefault(module, set()).add(dim)
        saved = 0.0
        for module, dims in cut.items():
            table = self.layers[module]
            out, inp = table.shape[0], table.shape[1] if len(table.shape) > 1 else 1
            narrow = [w * CHORD if d in dims else w for d, w in enumerate((out, inp))]
            saved += table.calls * (table.at(out, inp) - table.at(narrow[0], narrow[1]))
        return self.scale * saved / (CHORD * channels)
