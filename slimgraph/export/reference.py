"""PyTorch's side of the parity check: the call the exporters trace, the outputs the ONNX
model must reproduce, and the same at a second batch size.

>>> import torch
>>> net = torch.nn.Linear(4, 2).eval()
>>> args = (torch.randn(1, 4),)
>>> expected = run_torch(net, args, {})
>>> call = Call.of(args, {}, ["input"], expected, dynamic_batch=True, batch=1)
>>> call.output_names, call.dynamic, call.out_dynamic
(['output_0'], [True], [True])
>>> [size for _, _, size in cases(net, call, expected, 1, second=True)]
[1, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from slimgraph.errors import ExportArgumentError, ModelCallError
from slimgraph.export._quiet import one_line
from slimgraph.export.arguments import has_batch

__all__ = ["SECOND_BATCH", "Call", "Case", "cases", "feeds", "rebatch", "run_torch"]

SECOND_BATCH = 3

# One parity case: ONNX Runtime feeds, the PyTorch outputs they must give, the batch size.
Case = tuple[dict[str, np.ndarray], list[torch.Tensor], int]


@dataclass(frozen=True)
class Call:
    """What the exporters call the model with, and what the ONNX graph calls things."""

    args: tuple[torch.Tensor, ...]
    kwargs: dict[str, torch.Tensor]
    names: list[str]
    output_names: list[str]
    dynamic: list[bool]  # per input: dim 0 is the batch
    out_dynamic: list[bool]  # per output

    @classmethod
    def of(
        cls,
        args: tuple[torch.Tensor, ...],
        kwargs: dict[str, torch.Tensor],
        names: list[str],
        expected: list[torch.Tensor],
        dynamic_batch: bool,
        batch: int | None,
    ) -> Call:
        """The call for ``expected`` outputs; with ``dynamic_batch`` every tensor whose
        dim 0 is ``batch`` gets a dynamic one."""
        inputs = [*args, *kwargs.values()]
        return cls(
            args,
            kwargs,
            names,
            [f"output_{i}" for i in range(len(expected))],
            [dynamic_batch and has_batch(t, batch) for t in inputs],
            [dynamic_batch and has_batch(t, batch) for t in expected],
        )

    @property
    def inputs(self) -> list[torch.Tensor]:
        return [*self.args, *self.kwargs.values()]

    def rebatched(self, batch: int | None, size: int) -> Call:
        """The same call with ``size`` rows wherever the batch was."""
        more = [rebatch(t, batch, size, seed=i) for i, t in enumerate(self.inputs)]
        n = len(self.args)
        return replace(self, args=tuple(more[:n]), kwargs=dict(zip(self.kwargs, more[n:])))


def run_torch(model: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """The model's tensor outputs, flattened as the exporters number them.

    >>> run_torch(torch.nn.Identity(), (torch.ones(2),), {})
    [tensor([1., 1.])]
    """
    try:
        with torch.no_grad():
            out = model(*args, **kwargs)
    except Exception as exc:
        call = "model(**example_inputs)" if kwargs else "model(*example_inputs)"
        raise ModelCallError(
            f"{call} raised {type(exc).__name__}: {one_line(exc)}; pass example inputs "
            "that the model's forward accepts (a tuple for positional, a dict for keyword "
            "arguments)"
        ) from exc
    # both exporters drop None outputs, so only the tensors are numbered
    leaves = [(k, leaf) for k, leaf in pytree.tree_leaves_with_path(out) if leaf is not None]
    for key, leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            raise ModelCallError(
                f"the model returns a {type(leaf).__name__} at output{pytree.keystr(key)}; "
                "ONNX outputs must be tensors, so wrap the model to return only its tensors"
            )
    if not leaves:
        raise ModelCallError(
            f"the model returns no tensors (got {type(out).__name__}); ONNX needs at least "
            "one tensor output, so wrap the model to return the tensors you need"
        )
    return [leaf for _, leaf in leaves]


def cases(
    model: nn.Module, call: Call, expected: list[torch.Tensor], batch: int | None, second: bool
) -> list[Case]:
    """The example inputs and, if ``second``, inputs of a second batch size."""
    found = [(feeds(call.names, call.inputs), expected, batch or 1)]
    if not second:
        return found
    size = SECOND_BATCH if batch != SECOND_BATCH else SECOND_BATCH - 1
    more = call.rebatched(batch, size)
    try:
        outputs = run_torch(model, more.args, more.kwargs)
    except ModelCallError as exc:
        raise ModelCallError(
            f"the model runs at batch {batch} but not at batch {size} ({exc}); it fixes its "
            "batch size, so export with dynamic_batch=False"
        ) from exc.__cause__
    return [*found, (feeds(call.names, more.inputs), outputs, size)]


def feeds(names: list[str], inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """ONNX Runtime's feeds: each input as a numpy array under its ONNX name.

    >>> feeds(["x"], [torch.zeros(1, 2)])["x"].shape
    (1, 2)
    """
    return {name: _to_numpy(t, name) for name, t in zip(names, inputs)}


def rebatch(t: torch.Tensor, batch: int | None, size: int, seed: int) -> torch.Tensor:
    """``t`` with ``size`` rows: random floats at the example's scale, cycled rows otherwise.

    Integer and bool inputs (token ids, masks) only make sense with values the model
    accepts, so their example rows are repeated.

    >>> rebatch(torch.tensor([[7], [8]]), 2, 3, seed=0).tolist()
    [[7], [8], [7]]
    """
    if not has_batch(t, batch):
        return t
    if t.is_floating_point():
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((size, *t.shape[1:]), generator=gen, dtype=torch.float32)
        ref = t.detach().float().cpu()
        std = ref.std() if ref.numel() > 1 else ref.new_ones(())
        return (noise * std + ref.mean()).to(device=t.device, dtype=t.dtype)
    rows = torch.arange(size, device=t.device) % t.shape[0]
    return t[rows]


def _to_numpy(t: torch.Tensor, name: str) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        raise ExportArgumentError(
            f"input {name!r} is bfloat16, which ONNX Runtime's parity check cannot feed from "
            "numpy; export a float32 or float16 copy of the model and inputs"
        )
    return t.detach().cpu().numpy()
