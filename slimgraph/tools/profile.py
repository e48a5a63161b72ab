"""``sg.profile_latency``: measure a model's layers at a few widths on the runtime it will
run on, and fit the :class:`~slimgraph.criteria.latency.LatencyModel` that plans for a
latency budget (``PruneConfig(target_latency=..., latency_model=...)``).

Every convolution and linear layer is timed alone on an input of the shape it gets in the
model, at ``fractions`` of its output and input widths (a depthwise convolution at its
channel widths only); a layer run more than once per forward counts as often. A
:class:`torch.nn.MultiheadAttention` used as self-attention is timed whole (projections,
softmax and all) at ``fractions`` of its heads: its width is one, in and out.

Then whole models are timed, in two passes of interleaved rounds (the lower median
counts: the machine's load drifts). First the original and uniform slims at ratios 0.3
and 0.45 with kept widths multiples of 1, 8 and 16 channels: the runtime's favoured
multiple (``model.round_to``) is the smallest whose slims run within 5 % of the fastest
(an isolated layer does not show it, because a runtime like ONNX Runtime changes the
memory layout around a layer of an unfavoured width). Then, at that multiple, the
original and uniform slims at ratios 0.1 to 0.6 (and on to 0.9 while the deepest keeps
more than 30 % of the tables' sum, as where the hidden width stays): the model's knots,
its tables' sum against its measured milliseconds (the straight line through the
original and the 0.5 slim is its ``scale`` and ``offset_ms``). A runtime's latency is
not a straight line in the tables' sum (resnet50 in ONNX Runtime: the line through its 0.25 and 0.5 cuts
predicted the 0.4 cut 18 % fast), and a plan in local scope is a uniform slim:
dense knots are what it will measure. The ``check_ratio`` slim, timed in the same
rounds, checks the model: ``model.check_error`` is predicted / measured - 1 there, by
the knots without it; then it joins them (the model that plans uses every measurement).

Measurements are cached on disk (``cache``, default ``$SLIMGRAPH_CACHE/latency.json`` or
``~/.cache/slimgraph/latency.json``), keyed by the runtime and its version, the machine,
the thread count and the layer's exact shapes: profiling a second model of the same
family measures only the layers it has not seen. The cache is plain JSON of numbers;
anything else in it is ignored with a warning.

>>> import torch, slimgraph as sg, tempfile
>>> net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
>>> cache = tempfile.mkdtemp() + "/latency.json"
>>> lm = sg.profile_latency(net, (torch.randn(32, 64),), runtime="torch", runs=3, cache=cache,
...                         progress=False)
>>> sorted(lm.layers), lm.layers["0"].outs, lm.layers["0"].ins
(['0', '2'], (64, 128, 192, 256), (16, 32, 48, 64))
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimgraph._core.inputs import preserve_modes, split_inputs, without_kv_cache
from slimgraph._core.progress import counted
from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.latency import LatencyModel, LayerTable
from slimgraph.errors import SlimGraphError
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.graph.trace import trace
from slimgraph.planner import plan
from slimgraph.resolve.cost import layer_shapes
from slimgraph.resolve.plan import PruningPlan
from slimgraph.rewrite.apply import apply
from slimgraph.tools.latency import interleaved_ms, runner
from slimgraph.tools.layer_timer import LayerTimer, Runtime, cache_path

__all__ = ["profile_latency"]

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.MultiheadAttention)
# the uniform slims timed at every multiple, to choose one: cuts that leave a width of
# 2^k channels unaligned (0.5 and 0.25 leave 64 as 32 and 48, aligned at any multiple)
STEP_RATIOS = (0.3, 0.45)
# and at the chosen multiple, the knots: the half cut first (with the original, the line)
KNOT_RATIOS = (0.5, 0.1, 0.2, 0.3, 0.4, 0.6)
# deeper knots, each while the deepest so far keeps more than DEEP_SHARE of the tables'
# sum: a language model whose hidden width stays (prune_residual=False) keeps half of it
# at 0.6, and a plan for half its latency would land past the last knot
DEEPER_RATIOS, DEEP_SHARE = (0.7, 0.8, 0.9), 0.3
STEPS = (1, 8, 16)  # multiples of channels tried: none, and x86 vector widths


def profile_latency(
    model: nn.Module,
    example_inputs: Any,
    *,
    runtime: Runtime = "onnxruntime",
    threads: int = 1,
    fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    runs: int = 10,
    check_ratio: float = 0.35,
    cache: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    config: PruneConfig | None = None,
) -> LatencyModel:
    """Measure ``model``'s layers on ``runtime`` (``"onnxruntime"`` on the CPU, or eager
    ``"torch"`` on ``device``, where ``model`` and ``example_inputs`` must already be)
    with ``threads`` threads, and fit the latency model (see the module docstring).
    ``runs`` timed runs per measurement, median.

    ``config`` is the config the budget will be planned with: the uniform slims cut the
    groups its plans cut (``prune_residual``, ``ignore``, ``overrides``, ``min_keep``), so
    that the knots are measured on the kind of model it makes (a language model planned
    with ``prune_residual=False`` keeps its hidden width in every knot too)."""
    if runtime not in ("torch", "onnxruntime"):
        raise SlimGraphError(f"runtime must be 'torch' or 'onnxruntime', not {runtime!r}")
    device = torch.device(device)
    if runtime == "onnxruntime" and device.type != "cpu":
        raise SlimGraphError(
            f"device={str(device)!r}: ONNX Runtime is timed on its CPU provider; profile "
            "another device with runtime='torch'"
        )
    misplaced = {str(p.device) for p in model.parameters()} - {str(device), f"{device}:0"}
    if misplaced:
        raise SlimGraphError(
            f"the model's parameters are on {sorted(misplaced)}, not {device}: move the model "
            f"and its inputs there first (model.to({str(device)!r}))"
        )
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise SlimGraphError(f"fractions must lie in (0, 1], got {tuple(fractions)}")
    if not 0.0 < check_ratio < 1.0 or check_ratio in KNOT_RATIOS:
        raise SlimGraphError(
            f"check_ratio must lie in (0, 1) and not be one of the fitted ratios {KNOT_RATIOS}, "
            f"got {check_ratio}"
        )
    timer = LayerTimer(runtime, threads, runs, cache_path(cache), device)
    layers = _layer_inputs(model, example_inputs)
    if not layers:
        raise SlimGraphError(
            f"{type(model).__name__} has no layer the latency tables model (nn.Conv1d, "
            "nn.Conv2d, nn.Linear, or nn.MultiheadAttention over its own input) that its "
            "forward calls: profile the model in Python, as a module"
        )
    tables = {
        name: _table(module, shape, calls, sorted(set(fractions) | {1.0}), timer)
        for name, (module, shape, calls) in counted(list(layers.items()), "layer latency", progress)
    }
    timer.save()
    graph = trace(model, example_inputs)
    bare = LatencyModel(
        runtime=runtime,
        version=timer.version,
        machine=timer.machine,
        threads=threads,
        layers=tables,
    )

    def timed(ratios: Sequence[float], steps: Sequence[int]) -> dict[str, tuple[float, float]]:
        """label -> (tables' sum, measured ms) of the original and uniform slims"""
        plans: dict[str, PruningPlan | None] = {"original": None}
        plans |= {_label(r, s): plan(graph, _uniform(config, r, s)) for s in steps for r in ratios}
        models = {k: apply(model, p, graph=graph) if p else model for k, p in plans.items()}
        with tempfile.TemporaryDirectory() as folder:
            runners = {
                k: runner(m, example_inputs, runtime, Path(folder) / f"{i}.onnx")
                for i, (k, m) in enumerate(models.items())
            }
            ms = interleaved_ms(runners, example_inputs, threads, runs, progress=progress)
        return {
            k: (bare.layer_ms(layer_shapes(graph, p) if p else {}), ms[k]) for k, p in plans.items()
        }

    first = timed(STEP_RATIOS, STEPS)
    step = _favoured({k: ms for k, (_, ms) in first.items()}, STEP_RATIOS)
    # the knots, timed together so that they share the machine's load
    second = timed((*_knot_ratios(graph, bare, config, step), check_ratio), [step])
    check = second.pop(_label(check_ratio, step))
    unseen = _fitted(bare, list(second.values())).calibrated(check[0]) / check[1] - 1.0
    # measured, the check slim is one more knot: the model that plans uses every point
    fitted = _fitted(bare, [*second.values(), check])
    # each pass under its own labels: both time the original (and the chosen multiple's
    # 0.3 slim), in rounds of their own
    measured = {f"multiple: {k}": ms for k, (_, ms) in first.items()}
    measured |= {f"knot: {k}": ms for k, (_, ms) in second.items()}
    measured[f"check: {_label(check_ratio, step)}"] = check[1]
    return fitted.model_copy(
        update={
            "round_to": step,
            "measured_ms": measured,
            "check_error": unseen,
        }
    )


def _fitted(bare: LatencyModel, points: list[tuple[float, float]]) -> LatencyModel:
    """``bare`` calibrated on (tables' sum, measured ms) ``points``, the original's first
    and the half cut's second: the line through those two is ``scale`` and ``offset_ms``,
    and with the others that keep both coordinates ascending they are the knots (noise
    can time a lighter cut below a deeper one: such a point is left out, in order).

    >>> from slimgraph.criteria.latency import LayerTable
    >>> t = LayerTable(shape=(2, 2), outs=(2,), ins=(2,), ms=((1.0,),))
    >>> bare = LatencyModel(runtime="torch", version="x", machine="m", threads=1, layers={"a": t})
    >>> m = _fitted(bare, [(10.0, 12.0), (4.0, 6.0), (6.0, 9.0)])
    >>> m.scale, m.offset_ms, m.knots
    (1.0, 2.0, ((4.0, 6.0), (6.0, 9.0), (10.0, 12.0)))
    >>> _fitted(bare, [(10.0, 12.0), (4.0, 6.0), (6.0, 5.0)]).knots
    ((4.0, 6.0), (10.0, 12.0))
    """
    (s_full, full), (s_half, half) = points[0], points[1]
    scale = (full - half) / (s_full - s_half) if s_full > s_half else 0.0
    if scale <= 0.0:  # the tables do not order the two: keep their proportion only
        return bare.model_copy(update={"scale": full / s_full, "offset_ms": 0.0})
    knots = [points[1], points[0]]
    for point in points[2:]:
        candidate = sorted([*knots, point])
        if all(a[0] < b[0] and a[1] < b[1] for a, b in zip(candidate, candidate[1:])):
            knots = candidate
    update = {"scale": scale, "offset_ms": full - scale * s_full, "knots": tuple(knots)}
    return bare.model_copy(update=update)


def _knot_ratios(
    graph: DependencyGraph, bare: LatencyModel, config: PruneConfig | None, step: int
) -> list[float]:
    """:data:`KNOT_RATIOS`, then each of :data:`DEEPER_RATIOS` while the deepest slim so
    far keeps more than :data:`DEEP_SHARE` of the original's tables' sum and the next
    one keeps less (``min_keep`` can stop a cut from going deeper)."""

    def share(ratio: float) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "drops nothing": the sums say it too
            cut = plan(graph, _uniform(config, ratio, step))
        return bare.layer_ms(layer_shapes(graph, cut)) / bare.layer_ms({})

    ratios, kept = list(KNOT_RATIOS), share(max(KNOT_RATIOS))
    for ratio in DEEPER_RATIOS:
        deeper = share(ratio)
        if kept <= DEEP_SHARE or deeper >= kept:
            break
        ratios.append(ratio)
        kept = deeper
    return ratios


def _uniform(config: PruneConfig | None, ratio: float, step: int) -> PruneConfig:
    """A uniform slim at ``ratio`` and multiple ``step`` of the groups ``config`` cuts."""
    if config is None:
        return PruneConfig(ratio=ratio, round_to=step)
    kept = ("prune_residual", "ignore", "overrides", "min_keep")
    return PruneConfig(ratio=ratio, round_to=step, **{k: getattr(config, k) for k in kept})


def _label(ratio: float, step: int) -> str:
    return f"uniform {ratio} round_to {step}"


def _favoured(measured: dict[str, float], ratios: Sequence[float]) -> int:
    """The smallest multiple of channels whose uniform slims run within 5 % of the fastest
    multiple's, at all ``ratios`` (on average).

    >>> _favoured({_label(r, s): ms for r, s, ms in [(0.5, 1, 12.0), (0.3, 1, 10.0),
    ...     (0.5, 8, 9.0), (0.3, 8, 12.0), (0.5, 16, 10.0), (0.3, 16, 11.0)]}, (0.5, 0.3))
    8
    """
    best = {r: min(measured[_label(r, s)] for s in STEPS) for r in ratios}
    slowdown = {
        s: sum(measured[_label(r, s)] / best[r] for r in ratios) / len(ratios) for s in STEPS
    }
    # no multiple is fastest at every ratio when they disagree: within 5 % of the best mean
    return min(s for s in STEPS if slowdown[s] <= 1.05 * min(slowdown.values()))


def _layer_inputs(
    model: nn.Module, example_inputs: Any
) -> dict[str, tuple[nn.Module, tuple[int, ...], int]]:
    """Name -> (layer, the shape of its first input, calls per forward), for every layer
    whose cost the tables model."""
    found: dict[str, tuple[nn.Module, tuple[int, ...], int]] = {}

    skipped: set[str] = set()  # attention over other keys than its queries: not tabled

    def seen(name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if isinstance(module, nn.MultiheadAttention) and not _self_attention(args, kwargs):
            skipped.add(name)
        elif name in found:
            found[name] = (module, found[name][1], found[name][2] + 1)
        elif args and isinstance(args[0], torch.Tensor):
            found[name] = (module, tuple(args[0].shape), 1)

    handles = [
        m.register_forward_pre_hook(
            lambda mod, args, kwargs, n=name: seen(n, mod, args, kwargs), with_kwargs=True
        )
        for name, m in model.named_modules()
        if isinstance(m, LAYERS) and _tabled(m)
    ]
    args, kwargs = split_inputs(example_inputs)
    try:
        with preserve_modes(model), torch.no_grad(), without_kv_cache(model):
            model.eval()
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return {k: v for k, v in found.items() if k not in skipped}


def _tabled(module: nn.Module) -> bool:
    """Whether the tables can model ``module``: attention only with packed projections."""
    return not isinstance(module, nn.MultiheadAttention) or module._qkv_same_embed_dim


def _self_attention(args: tuple, kwargs: dict) -> bool:
    qkv = [*args[:3], *(kwargs.get(k) for k in ("query", "key", "value")[len(args) :])]
    return len(qkv) == 3 and qkv[0] is qkv[1] is qkv[2]


class _SelfAttention(nn.Module):
    """An attention layer over its own input, as one module to time."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]

    def extra_repr(self) -> str:  # the cache key: heads are not in the layer's repr
        a = self.attention
        return f"embed_dim={a.embed_dim}, num_heads={a.num_heads}, batch_first={a.batch_first}"


def _widths(full: int, fractions: Sequence[float], step: int) -> tuple[int, ...]:
    """``fractions`` of ``full``, as multiples of ``step``, distinct and ascending."""
    return tuple(sorted({max(step, round(f * full / step) * step) for f in fractions}))


Variant = tuple[nn.Module, tuple[int, ...]]  # a layer at other widths, and its input shape


def _table(
    module: nn.Module,
    shape: tuple[int, ...],
    calls: int,
    fractions: Sequence[float],
    timer: LayerTimer,
) -> LayerTable:
    layer: Any = module
    if isinstance(layer, nn.MultiheadAttention):
        return _attention_table(layer, shape, calls, fractions, timer)
    weight: tuple[int, ...] = tuple(layer.weight.shape)
    if isinstance(layer, nn.Linear):
        outs, ins = _widths(weight[0], fractions, 1), _widths(weight[1], fractions, 1)

        def make(o: int, i: int) -> Variant:
            return nn.Linear(i, o, bias=layer.bias is not None), (*shape[:-1], i)
    else:
        g = layer.groups
        depthwise = g > 1 and g == layer.in_channels  # its channels are its groups
        outs = _widths(weight[0], fractions, weight[0] // g if depthwise else g)
        ins = (weight[1],) if depthwise else _widths(weight[1], fractions, 1)

        def make(o: int, i: int) -> Variant:
            groups = o * g // weight[0] if depthwise else g
            cin = groups if depthwise else i * g
            conv = type(layer)(
                cin,
                o,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                layer.dilation,
                groups,
                layer.bias is not None,
                layer.padding_mode,
            )
            return conv, (shape[0], cin, *shape[2:])

    ms = tuple(tuple(timer.time(*make(o, i)) for i in ins) for o in outs)
    return LayerTable(shape=weight, outs=outs, ins=ins, ms=ms, calls=calls)


def _attention_table(
    layer: nn.MultiheadAttention,
    shape: tuple[int, ...],
    calls: int,
    fractions: Sequence[float],
    timer: LayerTimer,
) -> LayerTable:
    """Milliseconds by the rows of ``in_proj_weight`` (3 x heads x head_dim), whole heads
    dropped; one column, since the layer's input width is its embedding width."""
    embed, head_dim = layer.embed_dim, layer.head_dim
    widths = _widths(embed, fractions, head_dim)
    ms = []
    for width in widths:
        attention = nn.MultiheadAttention(
            width,
            width // head_dim,
            bias=layer.in_proj_bias is not None,
            batch_first=layer.batch_first,
        )
        ms.append((timer.time(_SelfAttention(attention), (*shape[:-1], width)),))
    outs = tuple(3 * w for w in widths)
    return LayerTable(shape=(3 * embed, embed), outs=outs, ins=(embed,), ms=tuple(ms), calls=calls)
