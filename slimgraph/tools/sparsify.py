"""Unstructured and 2:4 sparsity by magnitude, for completeness and for honesty.

Zeroed weights keep their place: the model has the same shapes, the same MACs on a dense
runtime and **no speed-up there**. Only kernels that exploit sparsity (2:4 on recent GPUs'
sparse tensor cores, sparse CPU kernels at high sparsity) turn it into time; structured
slimming (:func:`slimgraph.slim`) is what makes a dense model smaller and faster.

>>> import torch, slimgraph as sg
>>> net = torch.nn.Linear(8, 4)
>>> report = sg.sparsify(net, 0.5)
>>> report.sparsity, int((net.weight == 0).sum())
(0.5, 16)
>>> report = sg.sparsify(torch.nn.Linear(8, 4), pattern="2:4")
>>> report.pattern, report.sparsity
('2:4', 0.5)
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from slimgraph.errors import SlimGraphError

__all__ = ["SparsityReport", "sparsify"]

NOTE = "zeros keep their place: dense runtimes get no speed from this sparsity"


class SparsityReport(BaseModel):
    """What :func:`sparsify` zeroed: per layer and overall, and the layers it left."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: Literal["unstructured", "2:4"]
    sparsity: float  # zeros / weights, over the layers it sparsified
    zeroed: int
    layers: dict[str, float]  # layer -> its sparsity
    skipped: dict[str, str]  # layer -> why it was left dense
    note: str = NOTE


def sparsify(
    model: nn.Module,
    sparsity: float = 0.5,
    pattern: Literal["unstructured", "2:4"] = "unstructured",
) -> SparsityReport:
    """Zero the smallest-magnitude weights of every Linear and Conv layer, in place.

    ``"unstructured"`` zeroes ``sparsity`` of each layer's weights; ``"2:4"`` zeroes the
    2 smallest of every 4 consecutive input weights (sparsity 0.5 by definition), and
    leaves dense the layers whose input width is not a multiple of 4. Biases stay.
    """
    if pattern not in ("unstructured", "2:4"):
        raise SlimGraphError(f"pattern {pattern!r}: use 'unstructured' or '2:4'")
    if pattern == "unstructured" and not 0.0 <= sparsity < 1.0:
        raise SlimGraphError(f"sparsity {sparsity} is not in [0, 1)")
    layers, skipped = {}, {}
    zeroed = total = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                continue
            w = module.weight
            if w.is_meta:
                skipped[name] = "meta weights"
                continue
            if pattern == "2:4":
                mask = _two_of_four(w)
                if mask is None:
                    skipped[name] = f"input width {w[0].numel()} is not a multiple of 4"
                    continue
            else:
                k = int(sparsity * w.numel())
                mask = torch.ones_like(w, dtype=torch.bool)
                if k:
                    order = w.abs().flatten().argsort()
                    mask.view(-1)[order[:k]] = False
            w.mul_(mask)
            layers[name or "<model>"] = float((w == 0).float().mean())
            zeroed += int((~mask).sum())
            total += w.numel()
    return SparsityReport(
        pattern=pattern,
        sparsity=round(zeroed / total, 6) if total else 0.0,
        zeroed=zeroed,
        layers=layers,
        skipped=skipped,
    )


def _two_of_four(w: torch.Tensor) -> torch.Tensor | None:
    """Keep the 2 largest of every 4 consecutive weights along the input (per output row)."""
    rows = w.reshape(w.shape[0], -1)
    if rows.shape[1] % 4:
        return None
    blocks = rows.abs().reshape(rows.shape[0], -1, 4)
    keep = torch.zeros_like(blocks, dtype=torch.bool)
    keep.scatter_(2, blocks.topk(2, dim=2).indices, True)
    return keep.reshape(w.shape)
