"""Bias compensation at rewrite time: what the plan's folds add to biases and running
means, computed from the weights before they are sliced."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from slimgraph.criteria.data_aware import consumer_dims
from slimgraph.errors import PlanError
from slimgraph.resolve.plan import Fold

__all__ = ["bias_shifts"]


def bias_shifts(
    model: nn.Module, folds: tuple[Fold, ...], kept: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Tensor name -> what the plan's folds add to it (negative for a running mean),
    computed from ``model``'s own weights before slicing. ``kept`` maps parameter names
    to the ``(dim, kept indices)`` slices the plan makes.

    Raises :class:`PlanError` when a fold does not fit the model: a layer that is not
    there, a means count other than the number of inputs dropped, a target tensor that is
    missing or not one value per output of the layer.
    """
    modules = dict(model.named_modules())
    tensors = dict(model.named_parameters(remove_duplicate=False)) | dict(
        model.named_buffers(remove_duplicate=False)
    )
    shifts: dict[str, torch.Tensor] = {}
    for fold in folds:
        target, _, dim_text = fold.reads.rpartition(":")
        module = modules.get(target.rpartition(".")[0])
        dims = consumer_dims(module) if module is not None else None
        if dims is None or f"{dims[0]}" != dim_text or target.rpartition(".")[2] != "weight":
            raise PlanError(f"bias compensation: {fold.reads} is not the input dim of a layer")
        w = module.weight.detach()
        held = dict(kept.get(target, [])).get(dims[0])
        all_idx = np.arange(w.shape[dims[0]])
        dropped = np.setdiff1d(all_idx, held) if held is not None else np.zeros(0, np.int64)
        if len(dropped) != len(fold.means):
            raise PlanError(
                f"bias compensation for {fold.reads}: the plan drops {len(dropped)} input "
                f"indices but records {len(fold.means)} means"
            )
        read = w.index_select(dims[0], torch.as_tensor(dropped)).double()
        taps = [d for d in range(w.ndim) if d not in dims[:2]]
        read = read.sum(taps) if taps else read  # a kernel's taps all read the mean
        read = read if dims[1] < dims[0] else read.T  # (outputs, dropped inputs)
        shift = read @ torch.tensor(fold.means, dtype=torch.float64)
        into = tensors.get(fold.into)
        if into is None:
            raise PlanError(
                f"bias compensation for {fold.reads}: the model has no tensor {fold.into}; "
                "re-plan with bias_compensation=True on this model"
            )
        if tuple(into.shape) != tuple(shift.shape):
            raise PlanError(
                f"bias compensation for {fold.reads}: {fold.into} has shape "
                f"{tuple(into.shape)}, but the layer has {shift.numel()} outputs; fold into "
                "the bias (or BatchNorm running_mean) that follows that layer"
            )
        sign = -1.0 if fold.into.endswith(".running_mean") else 1.0
        shifts[fold.into] = shifts.get(fold.into, 0) + sign * shift
    return shifts
