"""Calibration: measure on real batches what data-aware criteria read.

* **Activations** (``activation``, ``fluctuation``, ``bias_compensation``): per
  *consumer* (a layer whose weight reads its input channels, see
  :func:`slimgraph.criteria.data_aware.consumer_dims`) the count, sum and sum of squares of every
  input channel, and the BatchNorm that reads a bias-free consumer's output directly.
* **Gradients** (``taylor``): ``loss_fn(model, batch).backward()`` summed over the batches
  into ``.grad``, and per batch ``b`` the first-order change of the loss were each unit
  removed, ``Σ_{w in unit} w · ∂L_b/∂w``, squared and summed over batches (Molchanov et
  al., 2019): one estimate per batch, so their noise does not cancel the signal.

What was measured travels in a :class:`Calibration`, never on the graph: measure once and
plan many times with ``sg.plan(graph, config, calibration=calibration)``.

>>> import torch, slimgraph as sg
>>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> graph = sg.trace(net, (torch.randn(1, 3),))
>>> calibration = sg.calibrate(graph, [torch.randn(16, 3) for _ in range(4)])
>>> calibration
Calibration(activations of 2 consumers, provenance={'activations': '4 calibration batches (64 samples at the first consumer)'})
>>> calibration.activations["2"].count, graph.activations
(64, None)
>>> plan = sg.plan(graph, ratio=0.5, importance="activation", calibration=calibration)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from slimgraph._core.batches import Selector, call_on_batch
from slimgraph._core.inputs import preserve_modes
from slimgraph._core.progress import counted
from slimgraph.criteria.config import PruneConfig
from slimgraph.criteria.data_aware import consumer_dims
from slimgraph.criteria.gradient import unit_terms
from slimgraph.criteria.registry import CRITERIA
from slimgraph.criteria.routing import collect_routing
from slimgraph.errors import PlanError
from slimgraph.graph.depgraph import DependencyGraph

__all__ = [
    "Calibration",
    "ChannelStats",
    "accumulate_gradients",
    "calibrate",
    "collect_activations",
    "needs_of",
]


@dataclass
class ChannelStats:
    """Running count, sum and sum of squares of a consumer's input channels (float64)."""

    count: int = 0
    total: torch.Tensor | None = None
    squares: torch.Tensor | None = None
    norm: str | None = None  # a BatchNorm that reads the layer's output directly

    def add(self, x: torch.Tensor, axis: int) -> None:
        x = x.detach().movedim(axis, -1).reshape(-1, x.shape[axis]).double()
        total, squares = x.sum(0), x.square().sum(0)
        if self.total is None:
            self.total, self.squares = total, squares
        else:
            self.total += total
            self.squares += squares
        self.count += x.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.count

    @property
    def mean_square(self) -> torch.Tensor:
        return self.squares / self.count

    @property
    def variance(self) -> torch.Tensor:
        return (self.mean_square - self.mean.square()).clamp(min=0.0)


@dataclass(frozen=True, repr=False)
class Calibration:
    """What :func:`calibrate` measured on a model, for ``sg.plan(graph,
    calibration=...)``: it keeps no reference to the graph, and plans made from it see it
    through :meth:`DependencyGraph.calibrated <slimgraph.graph.views.GraphViews.calibrated>`.

    ``activations``: consumer module -> :class:`ChannelStats` of its input channels;
    ``taylor``: group id -> per unit, the squared first-order terms summed over the batches;
    ``provenance``: what was measured ("activations", "gradients") -> where it came from.
    Each is ``None`` (or empty) when the criterion did not need it."""

    activations: dict[str, ChannelStats] | None = None
    taylor: dict[str, np.ndarray] | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    routing: dict[str, np.ndarray] | None = None  # router weight -> routed mass per expert

    def __repr__(self) -> str:
        parts = [f"activations of {len(self.activations)} consumers"] if self.activations else []
        parts += [f"taylor terms of {len(self.taylor)} groups"] if self.taylor else []
        return f"Calibration({', '.join([*parts, f'provenance={self.provenance}'])})"


def collect_activations(
    model: nn.Module,
    batches: Iterable[Any],
    max_batches: int | None = None,
    inputs: Selector | None = None,
) -> tuple[dict[str, ChannelStats], int]:
    """Run ``batches`` (tensors, tuples of positional inputs or dicts of keyword inputs;
    ``inputs(batch)`` selects them from other batches) through ``model`` without gradients; return the input statistics of every consumer
    layer by module name, and the number of batches. Every position counts: feed
    unpadded batches when padding would skew the statistics."""
    stats: dict[str, ChannelStats] = {}
    outputs: dict[int, tuple[str, torch.Tensor]] = {}  # of bias-free consumers, this batch
    hooks = []

    def observe(name: str, axis: int):
        def hook(module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                stats.setdefault(name, ChannelStats()).add(args[0], axis)

        return hook

    def produced(name: str):
        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                outputs[id(out)] = (name, out)

        return hook

    def normalises(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            source = outputs.get(id(args[0])) if args else None
            if source is not None and source[1] is args[0]:
                stats[source[0]].norm = name

        return hook

    for name, module in model.named_modules():
        dims = consumer_dims(module)
        if dims is not None:
            hooks.append(module.register_forward_pre_hook(observe(name, dims[2])))
            if getattr(module, "bias", None) is None:
                hooks.append(module.register_forward_hook(produced(name)))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            hooks.append(module.register_forward_pre_hook(normalises(name)))
    used = 0
    try:
        with preserve_modes(model), torch.no_grad():
            model.eval()
            for batch in counted(batches, "calibration batches (activations)"):
                if max_batches is not None and used >= max_batches:
                    break
                call_on_batch(model, batch, inputs)
                outputs.clear()
                used += 1
    finally:
        for h in hooks:
            h.remove()
    if not used:
        raise PlanError("calibration gave no batches; pass an iterable of model inputs")
    return stats, used


def calibrate(
    graph: DependencyGraph,
    calibration: Iterable[Any],
    loss_fn: Any = None,
    config: PruneConfig | None = None,
    *,
    inputs: Selector | None = None,
) -> Calibration:
    """Measure what ``config.importance`` (and ``bias_compensation``) need on the traced
    model and return it as a :class:`Calibration`; ``graph`` is not changed. Measured are
    the input statistics of every consumer and, for criteria that read gradients, the
    gradients of ``loss_fn(model, batch)`` (summed into the parameters' ``.grad``, and
    per-batch unit terms in ``Calibration.taylor``); ``provenance`` says where they came
    from, as the plan records it. Pass the result to ``sg.plan(graph, config,
    calibration=...)``: a plan made without it has no activations to read (and taylor
    falls back to the one summed ``.grad``). ``inputs(batch)`` selects the model inputs
    of batches that hold more, such as ``(inputs, labels)`` pairs (``loss_fn`` gets the
    whole batch)."""
    config = config or PruneConfig(importance="activation")
    needs = needs_of(config)
    if not needs:
        warnings.warn(
            f"calibration batches are unused: importance={config.importance!r} reads only "
            "the weights (data-aware: activation, fluctuation, taylor, bias_compensation)",
            stacklevel=3,
        )
        return Calibration()
    batches = list(calibration)
    activations, taylor, provenance = None, None, {}
    if "gradients" in needs:
        if loss_fn is None:
            raise PlanError(
                f"importance={config.importance!r} needs gradients: pass "
                "loss_fn=lambda model, batch: loss with the calibration batches"
            )
        used, taylor = accumulate_gradients(graph.model, batches, loss_fn, graph)
        provenance["gradients"] = f"loss_fn over {used} calibration batches"
    if "activations" in needs:
        activations, used = collect_activations(graph.model, batches, inputs=inputs)
        first = next(iter(activations.values()), None)
        samples = f" ({first.count} samples at the first consumer)" if first else ""
        provenance["activations"] = f"{used} calibration batches{samples}"
    routing = None
    if "routing" in needs:
        routing = collect_routing(graph, batches, inputs=inputs)
        provenance["routing"] = f"top-k picks over {len(batches)} calibration batches"
    return Calibration(activations, taylor, provenance, routing)


def needs_of(config: PruneConfig) -> set[str]:
    """What the criterion and options of ``config`` measure: "gradients", "activations"."""
    needs = set(CRITERIA[config.importance].needs)
    if config.bias_compensation:
        needs.add("activations")
    return needs


def accumulate_gradients(
    model: nn.Module, batches: Iterable[Any], loss_fn: Any, graph: DependencyGraph | None = None
) -> tuple[int, dict[str, np.ndarray] | None]:
    """Zero the gradients, then sum ``loss_fn(model, batch).backward()`` over ``batches``
    into ``.grad`` (the model's train/eval modes are kept). Returns the number of batches
    and, with ``graph``, per prunable group the squared first-order unit terms summed
    over the batches (``Calibration.taylor``; else ``None``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    terms = {g.id: np.zeros(g.size) for g in graph.prunable_groups()} if graph else None
    used = 0
    with preserve_modes(model), torch.enable_grad():
        for batch in counted(batches, "calibration batches (gradients)"):
            model.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                raise PlanError("loss_fn(model, batch) must return a scalar tensor")
            loss.backward()
            for p, t in zip(params, total):
                if p.grad is not None:
                    t += p.grad
            if terms is not None:
                for gid, values in unit_terms(graph).items():
                    terms[gid] += values**2
            used += 1
    if not used:
        raise PlanError("calibration gave no batches")
    for p, t in zip(params, total):
        p.grad = t
    return used, terms
