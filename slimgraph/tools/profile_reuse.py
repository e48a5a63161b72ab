"""Reusing a uniform latency model for a profile in another scope
(``sg.profile_latency(..., config=PruneConfig(scope="global"), uniform=lm)``): its
tables and fit stand for measuring them again, if they were measured on this model,
runtime, machine and thread count."""

from __future__ import annotations

import warnings

from torch import nn

from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.latency import LatencyModel
from slimgraph.errors import SlimGraphError
from slimgraph.tools.layer_timer import LayerTimer

__all__ = ["check_reusable", "warn_if_original_moved"]


def check_reusable(
    uniform: LatencyModel,
    config: PruneConfig | None,
    timer: LayerTimer,
    layers: dict[str, tuple[nn.Module, tuple[int, ...], int]],
    inputs: tuple[tuple[int, ...], ...],
    dtypes: tuple[str, ...],
) -> None:
    """Refuse a ``uniform`` latency model that was not profiled in local scope on this
    runtime, machine and thread count, at these ``inputs`` (shapes) and layer weight
    ``dtypes``, or whose tables are not this model's layers."""
    if config is None or config.scope == "local":
        raise SlimGraphError(
            "uniform= serves a profile in global or isomorphic scope: pass "
            "config=PruneConfig(scope='global') (the uniform model is the local one)"
        )
    if uniform.scope != "local":
        raise SlimGraphError(f"uniform= must be profiled in local scope, not {uniform.scope!r}")
    ours = {
        "runtime": timer.runtime,
        "version": timer.version,
        "machine": timer.machine,
        "threads": timer.threads,
    }
    if uniform.inputs:  # recorded since the field came
        ours["inputs"] = inputs
    if uniform.dtypes:  # and this one
        ours["dtypes"] = dtypes
    differ = {k: (getattr(uniform, k), v) for k, v in ours.items() if getattr(uniform, k) != v}
    if differ:
        said = ", ".join(f"{k} {a!r}, not {b!r}" for k, (a, b) in differ.items())
        raise SlimGraphError(f"uniform= was profiled elsewhere: {said}")
    mine = {n: (_weight_shape(m), calls) for n, (m, _, calls) in layers.items()}
    theirs = {n: (t.shape, t.calls) for n, t in uniform.layers.items()}
    if mine != theirs:
        other = sorted(set(mine.items()) ^ set(theirs.items()))[:3]
        raise SlimGraphError(
            f"uniform= tables other layers than this model's ({len(theirs)} against "
            f"{len(mine)}; first differences {other}): profile it on this model"
        )


def _weight_shape(module: nn.Module) -> tuple[int, ...]:
    """The shape :class:`LayerTable` records: attention's as its packed in-projection's."""
    if isinstance(module, nn.MultiheadAttention):
        return (3 * module.embed_dim, module.embed_dim)
    return tuple(module.get_parameter("weight").shape)


def warn_if_original_moved(before: float | None, now: float) -> None:
    """The uniform model's knots hold for the inputs and the load they were timed at."""
    if before is not None and not 0.8 < now / before < 1.25:
        warnings.warn(
            f"the original measured {now:.2f} ms now and {before:.2f} ms in the uniform "
            "profile: if it was profiled on other inputs, or the machine's load moved, its "
            "fit predicts this scope's plans poorly; profile without uniform=",
            stacklevel=4,  # profile_latency's caller
        )
