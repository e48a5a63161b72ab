"""A built :class:`~slimgraph.graph.depgraph.DependencyGraph` never changes: what differs
from it is a *view*, a new graph object that shares every slot, group and coupling.

Three things vary after tracing, and each gets its view:

* :meth:`GraphViews.calibrated` attaches what :func:`slimgraph.calibrate` measured, so that
  criteria (called as ``criterion(graph, groups, config)``) read it as
  ``graph.activations``, ``graph.taylor`` and ``graph.provenance``;
* :meth:`GraphViews.for_model` binds the structure to another model of identical
  structure (the real model whose weightless copy was traced);
* :meth:`GraphViews.with_weights` gives a graph traced on the meta device the values its
  weight criteria read (a checkpoint read tensor by tensor).

Assigning an attribute of a built graph raises, so that nothing can depend on a graph
having been changed by an earlier call.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
import torch
from torch import nn

__all__ = ["GraphViews"]


class GraphViews:
    """Immutability and views, mixed into :class:`~slimgraph.graph.depgraph.DependencyGraph`.

    The graph's ``__init__`` sets its attributes and ends with :meth:`_seal`; after that
    every assignment raises.

    >>> import torch, slimgraph as sg
    >>> graph = sg.trace(torch.nn.Linear(4, 3), (torch.randn(2, 4),))
    >>> graph.activations = {}
    Traceback (most recent call last):
    ...
    AttributeError: a DependencyGraph does not change once built, so 'activations' cannot be set; ...
    """

    _sealed = False
    _calibration: Any = None  # a slimgraph.criteria.calibration.Calibration, or None
    _weights: Mapping[str, torch.Tensor] | None = None  # see with_weights
    model: nn.Module

    def __setattr__(self, name: str, value: Any) -> None:
        if self._sealed:
            raise AttributeError(
                f"a DependencyGraph does not change once built, so {name!r} cannot be set; "
                "attach calibration with graph.calibrated(sg.calibrate(graph, batches))"
            )
        super().__setattr__(name, value)

    def _seal(self) -> None:
        object.__setattr__(self, "_sealed", True)

    def _view(self, **changes: Any) -> Self:
        """A new graph sharing everything with this one but ``changes``."""
        view = copy.copy(self)  # copies the attribute dict; bypasses __setattr__
        view.__dict__.update(changes)
        return view

    def calibrated(self, calibration: Any) -> Self:
        """A view of this graph with ``calibration`` (what :func:`slimgraph.calibrate`
        returns) attached; this graph is unchanged. ``sg.plan(graph, calibration=...)``
        makes it for the criteria, which read :attr:`activations`, :attr:`taylor` and
        :attr:`provenance` from it.

        >>> import torch, slimgraph as sg
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
        >>> graph = sg.trace(net, (torch.randn(1, 3),))
        >>> seen = graph.calibrated(sg.calibrate(graph, [torch.randn(8, 3)]))
        >>> seen.activations["1"].count, graph.activations, seen.groups is graph.groups
        (8, None, True)
        """
        return self._view(_calibration=calibration)

    def for_model(self, model: nn.Module) -> Self:
        """This graph's structure bound to ``model``, which must have the same structure
        as the traced one (parameter names and shapes), e.g. the real model whose
        weightless copy was traced; this graph is unchanged."""
        return self._view(model=model)

    def with_weights(self, weights: Mapping[str, torch.Tensor]) -> Self:
        """A view whose weight criteria (``l1``, ``l2``, ``bn_scale``) read parameter
        values from ``weights`` (name -> tensor, looked up when a criterion needs it)
        instead of the traced model, which may be weightless (meta); this graph is
        unchanged.

        >>> import torch, slimgraph as sg
        >>> with torch.device("meta"):
        ...     net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
        >>> graph = sg.trace(net, (torch.randn(1, 2, device="meta"),))
        >>> values = {"0.weight": torch.tensor([[3.0, 4.0], [0.0, 0.0]]),
        ...           "0.bias": torch.zeros(2), "1.weight": torch.ones(1, 2)}
        >>> sg.plan(graph.with_weights(values), ratio=0.5).cuts[0].drop
        (1,)
        """
        return self._view(_weights=weights)

    def weights(self) -> Mapping[str, torch.Tensor]:
        """Parameter name -> its values, for the weight criteria: the model's parameters
        (shared ones under every name), or what :meth:`with_weights` attached."""
        if self._weights is not None:
            return self._weights
        return dict(self.model.named_parameters(remove_duplicate=False))

    @property
    def activations(self) -> dict[str, Any] | None:
        """Consumer module -> its input channels' ``ChannelStats``, from the attached
        calibration (``None`` without, see :meth:`calibrated`)."""
        return None if self._calibration is None else self._calibration.activations

    @property
    def taylor(self) -> dict[str, np.ndarray] | None:
        """Group id -> per unit, the squared first-order terms summed over calibration
        batches (``None`` without, see :meth:`calibrated`)."""
        return None if self._calibration is None else self._calibration.taylor

    @property
    def routing(self) -> dict[str, np.ndarray] | None:
        """Router weight -> per expert, the routed probability mass on calibration
        batches (``None`` without, see :meth:`calibrated`)."""
        return None if self._calibration is None else self._calibration.routing

    @property
    def provenance(self) -> dict[str, str]:
        """What the attached calibration measured ("activations", "gradients") -> where
        it came from (empty without)."""
        return {} if self._calibration is None else dict(self._calibration.provenance)
