"""``sg.profile_latency``: measure a model's layers at a few widths on the runtime it will
run on, and fit the :class:`~slimgraph.criteria.latency.LatencyModel` that plans for a
latency budget (``PruneConfig(target_latency=..., latency_model=...)``).

Every convolution, linear layer and self-attention is timed alone at ``fractions`` of its
widths, on an input of the shape it gets in the model (:mod:`slimgraph.tools.layer_tables`).

Then whole models are timed, in two passes of five interleaved rounds (the median round
counts: the machine's load drifts; each round's median spans at least 0.25 s, so a 5 ms
network is timed 50 times a round, not 10). First the original and uniform slims at
ratios 0.3 and 0.45 with kept widths multiples of 1, 8 and 16 channels: the runtime's
favoured multiple (``model.round_to``) is the smallest whose slims run within 5 % of the
fastest at the same MACs (:func:`~slimgraph.tools.knots.favoured`; an isolated layer
does not show it: ONNX Runtime changes the memory layout around a layer of an unfavoured
width).
Then, at that multiple, the original and uniform slims at ratios 0.1 to 0.6 and 0.9
(0.7 and 0.8 too while the deepest keeps more than 30 % of the tables' sum, as where the
hidden width stays): the model's knots, its tables' sum against its measured
milliseconds (the straight line through the original and the 0.5 slim is its ``scale``
and ``offset_ms``). A runtime's latency is not a straight line in the tables' sum
(resnet50 in ONNX Runtime: the line through its 0.25 and 0.5 cuts predicted the 0.4 cut
18 % fast), and a plan in local scope is a uniform slim: dense knots are what it will
measure. The ``check_ratio`` slim, timed in the same rounds, checks the model:
``model.check_error`` is predicted / measured - 1 there, by the knots without it; then
it joins them.

A plan in global or isomorphic scope is no uniform slim: it cuts the layers whose
channels cost most per unit of importance, often the wide early ones, which the tables
price highest because a layer timed alone also moves its whole input and output. On
uniform knots such plans ran 10-20 % slower than predicted (MobileNetV2 at
``target_latency=0.5``: 0.633). So with ``config`` in those scopes, one more pass times
its own plans for 0.3, 0.5 and 0.7 of the latency, planned on the uniform model, and
they replace the knots (``model.scope``); a plan for 0.4 is the check. Global plans
for 0.5 on the four CNNs of the README's benchmark were then predicted within -3.8 % to
+3.5 % of the share of the latency they kept (on uniform knots: -22 % to -1 %). With
``uniform``, a local profile of the same model, only this pass runs.

Measurements are cached on disk (``cache``, default ``$SLIMGRAPH_CACHE/latency.json`` or
``~/.cache/slimgraph/latency.json``), keyed by the runtime and its version, the machine,
the thread count and the layer's exact shapes: a second model of the same family times
only the layers not seen. The model records the example inputs' shapes: a plan on a
model traced at other shapes is refused, as is one on a model whose layers are not the
tables'. The cache is plain JSON of numbers (anything else is ignored with a warning),
and so is the latency model (``lm.model_dump_json()``; ``slimgraph profile SPEC --out
FILE.json`` writes it, for ``--latency-model``).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimgraph._core.progress import counted
from slimgraph.criteria.calibration import needs_of
from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.latency import LatencyModel
from slimgraph.errors import SlimGraphError
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.graph.trace import trace
from slimgraph.planner import plan
from slimgraph.resolve.cost import layer_dtypes, layer_shapes, plan_macs
from slimgraph.resolve.plan import PruningPlan
from slimgraph.rewrite.apply import apply
from slimgraph.tools.knots import ascending, favoured, fit
from slimgraph.tools.latency import interleaved_ms, runner
from slimgraph.tools.layer_tables import layer_inputs, layer_table
from slimgraph.tools.layer_timer import LayerTimer, Runtime, cache_path
from slimgraph.tools.profile_reuse import check_reusable, warn_if_original_moved

__all__ = ["profile_latency"]

# the uniform slims timed at every multiple, to choose one: cuts that leave a width of
# 2^k channels unaligned (0.5 and 0.25 leave 64 as 32 and 48, aligned at any multiple)
STEP_RATIOS = (0.3, 0.45)
# and at the chosen multiple, the knots: the half cut first (with the original, the line)
KNOT_RATIOS = (0.5, 0.1, 0.2, 0.3, 0.4, 0.6)
# deeper knots, each while the deepest so far keeps more than DEEP_SHARE of the tables'
# sum (a language model whose hidden width stays keeps half of it at 0.6), and DEEPEST
# always: past the last knot the prediction extends the last segment, a fixed cost where
# the layers' time keeps falling (resnet18, eager torch, knots to 0.6: 0.203 of the
# latency predicted at 0.9, 0.081 measured; a plan for 0.2 cut to one channel a layer)
DEEPER_RATIOS, DEEP_SHARE = (0.7, 0.8, 0.9), 0.3
DEEPEST = DEEPER_RATIOS[-1]
STEPS = (1, 8, 16)  # multiples of channels tried: none, and x86 vector widths
# a config in global or isomorphic scope: its own plans for these shares of the latency
# are the knots (uniform knots read them 10-20 % fast), and one more is the check
BUDGETS, BUDGET_CHECK = (0.5, 0.3, 0.7), 0.4


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
    uniform: LatencyModel | None = None,
) -> LatencyModel:
    """Measure ``model``'s layers on ``runtime`` (``"onnxruntime"`` on the CPU, or eager
    ``"torch"`` on ``device``, where ``model`` and ``example_inputs`` must already be)
    with ``threads`` threads, and fit the latency model (see the module docstring).
    ``runs`` timed runs per measurement, median.

    ``config`` is the config the budget will be planned with: the uniform slims cut the
    groups its plans cut (``prune_residual``, ``ignore``, ``overrides``, ``min_keep``), so
    that the knots are measured on the kind of model it makes (a language model planned
    with ``prune_residual=False`` keeps its hidden width in every knot too); in global or
    isomorphic ``scope`` its own budget plans are the knots (its criterion's, or ``l2``'s
    where that reads calibration data).

    ``uniform`` is a latency model already profiled in local scope on this model, these
    inputs and this runtime (the same planning flags): a global or isomorphic profile then
    reuses its tables and fit and times only its own plans, instead of the uniform passes
    again. It must match the runtime, version, machine, threads and layers; its original
    timed far from the original now (more than 25 %) warns, as other inputs would."""
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
    layers = layer_inputs(model, example_inputs)
    if not layers:
        raise SlimGraphError(
            f"{type(model).__name__} has no layer the latency tables model (nn.Conv1d, "
            "nn.Conv2d, nn.Linear, or nn.MultiheadAttention over its own input) that its "
            "forward calls: profile the model in Python, as a module"
        )
    graph = trace(model, example_inputs)  # before minutes of timing: it can fail
    shapes = tuple(spec.shape for spec in graph.inputs)
    passes = _Passes(model, example_inputs, graph, config, runtime, threads, runs, progress)
    if uniform is None:
        tables = {
            name: layer_table(module, shape, calls, sorted(set(fractions) | {1.0}), timer)
            for name, (module, shape, calls) in counted(
                list(layers.items()), "layer latency", progress
            )
        }
        timer.save()
        bare = LatencyModel(
            runtime=runtime,
            version=timer.version,
            machine=timer.machine,
            threads=threads,
            layers=tables,
            inputs=shapes,
            dtypes=layer_dtypes(model, tables),
        )
        fitted, unseen, measured = _uniform_fit(passes, bare, check_ratio)
    else:
        check_reusable(uniform, config, timer, layers, shapes, layer_dtypes(model, layers))
        fitted, unseen, measured = uniform, uniform.check_error, dict(uniform.measured_ms)
    if config is not None and config.scope != "local":
        reused = uniform is not None
        fitted, unseen, measured = _scope_fit(passes, config, fitted, measured, unseen, reused)
    return fitted.model_copy(update={"measured_ms": measured, "check_error": unseen})


@dataclass
class _Passes:
    """What the passes over whole models share: the uniform slims planned so far (the
    knots' depth is read off plans), and timing slims against the original."""

    model: nn.Module
    example_inputs: Any
    graph: DependencyGraph
    config: PruneConfig | None
    runtime: Runtime
    threads: int
    runs: int
    progress: bool
    made: dict[tuple[float, int], PruningPlan] = field(default_factory=dict)

    def slim(self, ratio: float, step: int) -> PruningPlan:
        """The uniform slim at ``ratio`` and multiple ``step``."""
        if (ratio, step) not in self.made:
            self.made[ratio, step] = plan(self.graph, _uniform(self.config, ratio, step))
        return self.made[ratio, step]

    def slims(self, ratios: Sequence[float], steps: Sequence[int]) -> dict[str, PruningPlan]:
        return {_label(r, s): self.slim(r, s) for s in steps for r in ratios}

    def timed(
        self, slimmed: dict[str, PruningPlan], lm: LatencyModel
    ) -> dict[str, tuple[float, float]]:
        """label -> (``lm``'s tables' sum, measured ms) of the original and the ``slimmed``,
        timed together so that they share the machine's load."""
        plans: dict[str, PruningPlan | None] = {"original": None, **slimmed}
        models = {
            k: apply(self.model, p, graph=self.graph) if p else self.model for k, p in plans.items()
        }
        with tempfile.TemporaryDirectory() as folder:
            runners = {
                k: runner(m, self.example_inputs, self.runtime, Path(folder) / f"{i}.onnx")
                for i, (k, m) in enumerate(models.items())
            }
            ms = interleaved_ms(
                runners, self.example_inputs, self.threads, self.runs, progress=self.progress
            )
        return {
            k: (lm.layer_ms(layer_shapes(self.graph, p) if p else {}), ms[k])
            for k, p in plans.items()
        }


def _uniform_fit(
    passes: _Passes, bare: LatencyModel, check_ratio: float
) -> tuple[LatencyModel, float | None, dict[str, float]]:
    """``bare`` fitted on uniform slims (see the module docstring): the model, its check
    error, and what each pass measured."""
    first = passes.timed(passes.slims(STEP_RATIOS, STEPS), bare)
    steps = [(r, s) for r in STEP_RATIOS for s in STEPS]
    macs = {(r, s): plan_macs(passes.graph, passes.slim(r, s)) for r, s in steps}
    step = favoured({(r, s): first[_label(r, s)][1] for r, s in steps}, macs)
    ratios = _knot_ratios(passes.graph, bare, lambda r: passes.slim(r, step))
    second = passes.timed(passes.slims((*ratios, check_ratio), [step]), bare)
    check = second.pop(_label(check_ratio, step))
    unseen = fit(bare, list(second.values())).calibrated(check[0]) / check[1] - 1.0
    # measured, the check slim is one more knot: the model that plans uses every point
    fitted = fit(bare, [*second.values(), check]).model_copy(update={"round_to": step})
    # each pass under its own labels: each times the original (and the chosen multiple's
    # 0.3 slim), in rounds of their own
    measured = {f"multiple: {k}": ms for k, (_, ms) in first.items()}
    measured |= {f"knot: {k}": ms for k, (_, ms) in second.items()}
    measured[f"check: {_label(check_ratio, step)}"] = check[1]
    return fitted, unseen, measured


def _scope_fit(
    passes: _Passes,
    config: PruneConfig,
    fitted: LatencyModel,
    measured: dict[str, float],
    unseen: float | None,
    reused: bool,
) -> tuple[LatencyModel, float | None, dict[str, float]]:
    """The budget plans of ``config`` (global or isomorphic scope) become the knots of
    ``fitted`` and one more its check; ``measured`` gains them. A ``reused`` uniform
    profile timed its original elsewhere, maybe at other inputs: a move warns."""
    third = passes.timed(_budget_plans(passes.graph, config, fitted), fitted)
    if reused:
        warn_if_original_moved(measured.get("knot: original"), third["original"][1])
    check = third.pop(_budget_label(config.scope, BUDGET_CHECK))
    points = list(third.values())  # the original's first
    knots = ascending(points)
    if len(knots) > 1:
        guess = fitted.model_copy(update={"knots": knots}).calibrated(check[0])
        unseen = guess / check[1] - 1.0
        knots = ascending([*points, check])
        fitted = fitted.model_copy(update={"knots": knots, "scope": config.scope})
    measured = measured | {f"{config.scope} knot: {k}": ms for k, (_, ms) in third.items()}
    measured[f"{config.scope} check: {_budget_label(config.scope, BUDGET_CHECK)}"] = check[1]
    return fitted, unseen, measured


def _budget_plans(
    graph: DependencyGraph, config: PruneConfig, fitted: LatencyModel
) -> dict[str, PruningPlan]:
    """Plans of ``config`` (global or isomorphic scope) for :data:`BUDGETS` and
    :data:`BUDGET_CHECK` of the latency, on the model fitted so far. A criterion that
    reads calibration data gives way to ``l2``: the profile has weights only, and the
    knots need the way the plans spread their cut, not the very channels."""
    lm = fitted.model_copy(update={"scope": config.scope})
    update = {"latency_model": lm, "target_macs": None, "target_params": None}
    budget = config.model_copy(update=update | {"bias_compensation": False})
    if needs_of(budget):
        budget = budget.model_copy(update={"importance": "l2"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "drops nothing": the sums say it too
        return {
            _budget_label(config.scope, t): plan(graph, budget, target_latency=t)
            for t in (*BUDGETS, BUDGET_CHECK)
        }


def _budget_label(scope: str, target: float) -> str:
    return f"{scope} target_latency {target}"


def _knot_ratios(
    graph: DependencyGraph, bare: LatencyModel, uniform: Callable[[float], PruningPlan]
) -> list[float]:
    """:data:`KNOT_RATIOS`, then :data:`DEEPER_RATIOS` while the deepest slim so far
    (``uniform(ratio)``) keeps more than :data:`DEEP_SHARE` of the original's tables' sum,
    and :data:`DEEPEST` anyway; each only if it keeps less (``min_keep`` stops cuts)."""

    def share(ratio: float) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "drops nothing": the sums say it too
            cut = uniform(ratio)
        return bare.layer_ms(layer_shapes(graph, cut)) / bare.layer_ms({})

    ratios, kept = list(KNOT_RATIOS), share(max(KNOT_RATIOS))
    for ratio in DEEPER_RATIOS:
        if kept <= DEEP_SHARE and ratio != DEEPEST:
            continue
        deeper = share(ratio)
        if deeper >= kept:
            break
        ratios.append(ratio)
        kept = deeper
    return ratios


def _uniform(config: PruneConfig | None, ratio: float, step: int) -> PruneConfig:
    """A uniform slim at ``ratio`` and multiple ``step`` of the groups ``config`` cuts."""
    kept = ("prune_residual", "ignore", "overrides", "min_keep")
    fields = {k: getattr(config, k) for k in kept} if config else {}
    return PruneConfig(ratio=ratio, round_to=step, **fields)


def _label(ratio: float, step: int) -> str:
    return f"uniform {ratio} round_to {step}"
