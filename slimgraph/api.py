"""``sg.slim``: trace, plan and apply in one call."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimgraph._core.batches import Selector
from slimgraph._core.gcpause import gc_paused
from slimgraph._core.inputs import split_inputs
from slimgraph._core.progress import progress_bar
from slimgraph.criteria.calibration import Calibration, calibrate
from slimgraph.criteria.config import PruneConfig
from slimgraph.errors import PlanError, RewriteError, TraceError
from slimgraph.graph.depgraph import DependencyGraph
from slimgraph.graph.partition import buffers_restored, trace_parts
from slimgraph.graph.trace import trace
from slimgraph.planner.blocks import width_budget
from slimgraph.resolve.cost import count_params
from slimgraph.resolve.plan import PruningPlan
from slimgraph.resolve.slicing import meta_copy
from slimgraph.rewrite.apply import apply
from slimgraph.rewrite.depth import DepthResult, find_blocks, rank_blocks
from slimgraph.rewrite.depth import drop_blocks as drop_depth
from slimgraph.rewrite.fallback import applied_plan
from slimgraph.rewrite.hf_config import remember_source
from slimgraph.tools.departure import departure
from slimgraph.tools.latency_fit import fit_latency

__all__ = ["Mix", "SlimResult", "slim"]


@dataclass
class SlimResult:
    """The slim model, the plan that made it, and the graph the plan was made on (with
    the calibration attached, when there was one). Where the cut was made in place on
    the traced model (``inplace=True``, or the copy without ``drop_blocks``' blocks), the
    graph is bound to a weightless (meta) copy of that model as it was traced: its
    shapes serve :meth:`PruningPlan.summary` and drawing, not another plan."""

    model: nn.Module
    plan: PruningPlan
    graph: DependencyGraph
    mixes: tuple[Mix, ...] = ()  # drop_blocks="auto": every mix of depth and width tried


@dataclass(frozen=True)
class Mix:
    """One mix of depth and width ``drop_blocks="auto"`` tried: the blocks it dropped, how
    far the slim model departed from the original (see :mod:`slimgraph.tools.departure`;
    the lowest is chosen) and the latency its plan was predicted at (``None`` where the
    blocks alone meet the budget: no width was planned)."""

    blocks: tuple[str, ...]
    departure: float
    predicted_latency_ms: float | None
    params_after: int


def slim(
    model: nn.Module,
    example_inputs: Any,
    *,
    ratio: float = 0.5,
    importance: str = "l2",
    prune_residual: bool = True,
    calibration: Any = None,
    loss_fn: Any = None,
    inputs: Selector | None = None,
    head_dims: bool = False,
    query_heads: bool = False,
    drop_blocks: int | Sequence[str] | str | None = None,
    inplace: bool = False,
    latency_tries: int = 0,
    progress: bool = True,
    **fields: Any,
) -> SlimResult:
    """Trace ``model``, plan the cuts and return a smaller dense copy.

    ``fields`` are further :class:`PruneConfig` fields (scope, round_to, ignore, ...).
    ``calibration`` (an iterable of batches, or what :func:`slimgraph.calibrate` measured
    on this model) feeds the data-aware criteria: input statistics for
    ``importance="activation"`` / ``"fluctuation"`` and ``bias_compensation=True``;
    gradients of ``loss_fn(model, batch) -> loss`` for ``importance="taylor"`` (without
    them, taylor reads the ``.grad`` the caller has accumulated); ``inputs(batch)``
    selects the model inputs of batches that hold more, such as ``(inputs, labels)``. The plan's
    ``provenance`` says which.
    ``head_dims`` and ``query_heads`` choose the attention units, as for
    :func:`slimgraph.trace`: whole heads (whole key/value groups under grouped-query
    attention) by default.

    ``drop_blocks`` first drops that many whole residual blocks (or the named ones), those
    of least influence on ``calibration`` (the example inputs by default; with
    ``loss_fn``, the loss rise when each is skipped), as :func:`slimgraph.drop_blocks`
    does; the width is then planned on the model without them. ``plan.blocks`` records
    them, and :func:`slimgraph.apply` replays both on the original. ``ratio=0`` drops
    blocks only. With ``target_latency``, the blocks pay part of the budget and the width
    the rest: the latency model's tables follow the renumbered layers, and
    ``plan.config.target_latency`` is the share of the shorter model's latency the width
    plan keeps (see :mod:`slimgraph.planner.blocks`).

    ``drop_blocks="auto"`` (with ``target_latency``) lets the latency planner choose the
    mix: it slims with the 0, 1, 2, ... blocks of least influence dropped (up to half the
    blocks, or until the blocks alone meet the budget) and the width paying the rest, and
    keeps the slim model that departs least from the original on ``calibration`` (the
    example inputs by default): the lowest mean ``loss_fn`` if given, else the lowest
    distillation loss against the original's outputs (:mod:`slimgraph.tools.departure`).
    ``result.mixes`` records every mix tried.

    ``latency_tries=N`` (with ``target_latency``) measures the slim model against the
    original on the latency model's runtime and, while it misses the target by more than
    3 %, adds the measurement to the latency model and plans again, up to ``N`` slim
    models (see :mod:`slimgraph.tools.latency_fit`); ``plan.measured_latency_kept`` is
    what the chosen one measured.

    ``progress`` shows bars on stderr while blocks are ranked and while the mixes are
    slimmed (silent when stderr is not a terminal).

    A model ``torch.export`` cannot trace whole (a detector's data-dependent decoding) is
    slimmed part by part: its largest traceable submodules are traced on the inputs they
    received in one real forward, and the widths at the untraced boundary freeze
    (``result.graph.explain`` names it; see :mod:`slimgraph.graph.partition`).

    >>> import torch, slimgraph as sg
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> r = sg.slim(net, (torch.randn(1, 4),), ratio=0.5)
    >>> r.model[0].out_features, r.plan.params_after
    (8, 58)
    """
    # the trace's fx nodes and graph dicts live in cycles until the call returns
    with gc_paused():
        config = PruneConfig(
            ratio=ratio, importance=importance, prune_residual=prune_residual, **fields
        )
        asked = config  # the budget of the whole model, before blocks pay part of it
        _check_tries(latency_tries, config, inplace)
        if drop_blocks is not None and isinstance(calibration, Calibration):
            raise PlanError(
                "a Calibration measured on the whole model does not fit it without its "
                "dropped blocks: pass the calibration batches themselves with drop_blocks"
            )
        if isinstance(drop_blocks, str):
            if drop_blocks != "auto":
                raise PlanError(
                    f"drop_blocks={drop_blocks!r}: pass a count, block names, or 'auto'"
                )
            if calibration is not None and not isinstance(calibration, Calibration):
                calibration = list(calibration)  # read once per mix, and to score them
            again = functools.partial(
                slim,
                model,
                example_inputs,
                ratio=ratio,
                importance=importance,
                prune_residual=prune_residual,
                calibration=calibration,
                loss_fn=loss_fn,
                inputs=inputs,
                head_dims=head_dims,
                query_heads=query_heads,
                progress=False,
                **fields,
            )
            return _best_mix(
                again,
                model,
                example_inputs,
                config,
                calibration,
                inputs,
                loss_fn,
                latency_tries,
                inplace,
                progress,
            )
        depth = None
        if drop_blocks is not None:
            if calibration is not None and not isinstance(calibration, Calibration):
                calibration = list(calibration)  # read twice: block influence, then the criteria
            depth = _drop(
                model, example_inputs, drop_blocks, calibration, inputs, loss_fn, progress
            )
            config = width_budget(config, depth.renamed)  # the blocks pay part of a latency budget
        source = model if depth is None else depth.model  # a copy, whose width is cut in place
        try:
            graph = trace(source, example_inputs, head_dims=head_dims, query_heads=query_heads)
        except TraceError as failure:
            if failure.__cause__ is None:  # not torch.export's refusal: nothing to partition
                raise
            if depth is not None:
                raise PlanError(
                    f"drop_blocks is not supported yet on a model traced part by part ({failure}); "
                    "drop the blocks with sg.drop_blocks, then sg.slim the result"
                ) from failure
            if calibration is not None:
                raise PlanError(
                    "calibration is not supported yet on a model traced part by part "
                    f"({failure}); slim it with a weight criterion such as importance='l2'"
                ) from failure
            if latency_tries:
                raise PlanError(
                    "latency_tries is not supported yet on a model traced part by part "
                    f"({failure}); slim it with target_latency alone and time the result "
                    "with sg.compare"
                ) from failure
            return _slim_parts(
                model, example_inputs, failure, config, head_dims, query_heads, inplace
            )
        if calibration is not None:
            if not isinstance(calibration, Calibration):
                calibration = calibrate(graph, calibration, loss_fn, config, inputs=inputs)
            graph = graph.calibrated(calibration)  # what the criteria read

        params_before = count_params(model)  # before an in-place apply changes it
        # inplace=True cuts the traced model, and a drop_blocks slim cuts its copy without
        # the blocks (unless tries cut it again): the plan's summary and the result's graph
        # then read a weightless copy of it as it was traced
        cut_in_place = inplace if depth is None else not (inplace or latency_tries)
        traced = meta_copy(source) if cut_in_place else None

        def applied(plan: PruningPlan) -> nn.Module:
            if depth is None:
                return apply(
                    model, plan, graph=graph, inplace=inplace, example_inputs=example_inputs
                )
            if inplace:  # blocks and cuts, on the caller's model (restored if anything fails)
                whole = plan.with_blocks(depth.dropped, params_before)
                return apply(model, whole, graph=graph, inplace=True, example_inputs=example_inputs)
            # a copy of the model without the blocks is cut in place, unless it is tried again
            once = not latency_tries
            return apply(source, plan, graph=graph, inplace=once, example_inputs=example_inputs)

        if latency_tries:
            plan, slim_model = fit_latency(
                model,
                example_inputs,
                graph,
                config,
                asked,
                lambda c: applied_plan(source, graph, c, applied),
                latency_tries,
            )
        else:
            plan, slim_model = applied_plan(source, graph, config, applied)
        if traced is not None:
            graph = graph.for_model(traced)
            plan = plan.for_graph(graph)
        if depth is not None:
            plan = plan.with_blocks(depth.dropped, params_before)
        return SlimResult(slim_model, plan, graph)


def _check_tries(tries: int, config: PruneConfig, inplace: bool) -> None:
    if tries < 0:
        raise PlanError(f"latency_tries must be 0 (measure nothing) or more, not {tries}")
    if tries and config.target_latency is None:
        raise PlanError("latency_tries measures plans for a latency budget: give target_latency")
    if tries and inplace:
        raise PlanError(
            "latency_tries times the slim models against the original: not with inplace=True"
        )


def _best_mix(
    again: Callable[..., SlimResult],
    model: nn.Module,
    example_inputs: Any,
    config: PruneConfig,
    calibration: Any,
    inputs: Selector | None,
    loss_fn: Any,
    tries: int,
    inplace: bool,
    progress: bool,
) -> SlimResult:
    """``drop_blocks="auto"``: the mix of depth and width that departs least (see
    :func:`slim`); ``again(drop_blocks=..., latency_tries=...)`` slims one mix."""
    if config.target_latency is None or config.latency_model is None:
        raise PlanError(
            "drop_blocks='auto' weighs whole blocks against width under a latency budget: "
            "give target_latency and latency_model (sg.profile_latency)"
        )
    if inplace:
        raise PlanError("drop_blocks='auto' slims several copies to compare: not with inplace=True")
    if loss_fn is not None and calibration is None:
        raise PlanError(
            "loss_fn scores the mixes on calibration batches: pass calibration=batches too"
        )
    blocks = find_blocks(model, example_inputs)
    ranked = list(
        rank_blocks(model, blocks, example_inputs, calibration, inputs, loss_fn, progress)
    )
    batches, selector = (
        (calibration, inputs) if calibration is not None else ([example_inputs], None)
    )
    score = departure(model, batches, selector, loss_fn)
    mixes: list[Mix] = []

    def tried(n: int) -> tuple[Mix, SlimResult]:
        result = again(drop_blocks=ranked[:n] or None, latency_tries=0)
        plan = result.plan
        departed = score(result.model)
        mixes.append(Mix(plan.blocks, departed, plan.predicted_latency_ms, plan.params_after))
        return mixes[-1], result

    with progress_bar(len(ranked) // 2 + 1, "depth and width mixes", progress) as update:
        least, chosen = tried(0)
        update(description="0 blocks dropped")
        for n in range(1, len(ranked) // 2 + 1):
            mix, result = tried(n)
            update(description=f"{n} blocks dropped")
            if mix.departure < least.departure:
                least, chosen = mix, result
            width = result.plan.config
            if width is None or width.target_latency is None:  # the blocks alone meet it
                update(advance=len(ranked) // 2 - n, description=f"{n} blocks meet the budget")
                break
    if tries:  # measured and re-planned: only the chosen mix
        chosen = again(drop_blocks=list(least.blocks) or None, latency_tries=tries)
    chosen.mixes = tuple(mixes)
    return chosen


def _drop(
    model: nn.Module,
    example_inputs: Any,
    blocks: int | Sequence[str],
    calibration: Any,
    inputs: Selector | None,
    loss_fn: Any,
    progress: bool,
) -> DepthResult:
    """:func:`slimgraph.drop_blocks` for ``sg.slim``: ``n`` blocks or the named ones."""
    chosen: dict[str, Any] = {"n": blocks} if isinstance(blocks, int) else {"blocks": list(blocks)}
    depth = drop_depth(
        model,
        example_inputs,
        **chosen,
        calibration=calibration,
        inputs=inputs,
        loss_fn=loss_fn,
        progress=progress,
    )
    remember_source(depth.model, model)  # what sg.load rebuilds before it applies the plan
    return depth


def _slim_parts(
    model: nn.Module,
    example_inputs: Any,
    failure: TraceError,
    config: PruneConfig,
    head_dims: bool,
    query_heads: bool,
    inplace: bool,
) -> SlimResult:
    """Slim the traced parts of ``model`` (through a module that shares its modules), then
    check that the whole model still runs on ``example_inputs``."""
    found = trace_parts(
        model, example_inputs, failure, head_dims=head_dims, query_heads=query_heads
    )
    target = model if inplace else copy.deepcopy(model)
    parts, graph = found.bind(target)
    # the parts are cut in place: the plan's summary reads them as they were traced
    traced = graph.for_model(meta_copy(parts)) if inplace else found.graph
    plan, _ = applied_plan(
        parts,
        graph,
        config,
        lambda p: apply(parts, p, graph=graph, inplace=True, example_inputs=found.inputs),
    )
    args, kwargs = split_inputs(example_inputs)
    try:
        with torch.no_grad(), buffers_restored(target):
            target(*args, **kwargs)
    except Exception as err:
        raise RewriteError(
            f"the slim model's forward failed outside its traced parts ({', '.join(found.names)}): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}\n"
            "Code outside those parts probably reads a width; please report this model."
        ) from err
    return SlimResult(target, plan.for_graph(traced), traced)
