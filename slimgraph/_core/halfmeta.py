"""Meta forward passes in bfloat16, for kernels whose meta implementation refuses float32.

``torch._grouped_mm`` (mixture-of-experts layers) checks its dtype even on the meta device,
where only shapes matter: a float32 model's weightless copy cannot run it, the same copy
in bfloat16 can, and the shapes it computes are the same.

>>> err = RuntimeError("Expected mat_a to be BFloat16 or supported Float16 matrix, got torch.float32.")
>>> refuses_float32(err), refuses_float32(RuntimeError("size mismatch"))
(True, False)
>>> import torch
>>> model, inputs = in_bfloat16(torch.nn.Linear(2, 3, device="meta"), {"x": torch.zeros(1, 2)})
>>> model.weight.dtype, inputs["x"].dtype
(torch.bfloat16, torch.bfloat16)
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils import _pytree

__all__ = ["in_bfloat16", "refuses_float32"]


def refuses_float32(err: BaseException) -> bool:
    """Whether a forward pass failed because a kernel accepts only 16-bit floats."""
    text = f"{err} {err.__cause__ or ''}"
    return "float32" in text and ("BFloat16" in text or "Float16" in text)


def in_bfloat16(model: torch.nn.Module, inputs: Any) -> tuple[torch.nn.Module, Any]:
    """``model`` cast to bfloat16 in place (meant for meta copies) and ``inputs`` with
    every floating tensor cast likewise; integer inputs (token ids) stay."""

    def cast(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(torch.bfloat16)
        return value

    return model.to(torch.bfloat16), _pytree.tree_map(cast, inputs)
