"""What every report's text shares: the console on stdout and how numbers, inputs and
module lists are worded.

>>> percent(0.2614), value(None), modules(["a", "b", "c", "d"])
('26.1%', '-', 'a, b, c, …')
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console

__all__ = ["elapsed", "inputs_text", "modules", "percent", "stdout", "title", "value"]


def stdout() -> Any:
    """A rich console on stdout: 160 columns when piped (no terminal, no COLUMNS)."""

    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=160 if wide else None)


def title(r: dict[str, Any]) -> str:
    """``SPEC: ratio 0.5, l2, local scope, input 1x3x224x224``, with a budget
    ``SPEC: target_macs 0.5 (ratio 0.5842), ...`` (the ratio its search took; after
    dropped blocks, the budget of the model without them), and the plan's fingerprint
    where no config was recorded."""
    cfg, shapes = r.get("config"), inputs_text(r["inputs"])
    if not cfg:
        return f"{r['spec']}: plan {r['fingerprint']}, input {shapes}"
    ratio = f"ratio {cfg['ratio']:.4g}"
    budgets = ("target_macs", "target_params", "target_latency")
    budget = next((f"{k} {cfg[k]:.4g}" for k in budgets if cfg.get(k) is not None), None)
    if budget and r.get("blocks"):  # the width's budget is a share of the shorter model
        budget = f"{budget} of the model without its blocks"
    how = f"{budget} ({ratio})" if budget else ratio
    return f"{r['spec']}: {how}, {cfg['importance']}, {cfg['scope']} scope, input {shapes}"


def elapsed(seconds: dict[str, float]) -> str:
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items() if k != "total")
    return f"elapsed {seconds['total']:.1f} s ({steps})"


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.1f}%"


def modules(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", …" if len(names) > 3 else "")


def value(x: Any) -> str:
    """A config value or count as the tables show it: ``-`` for none."""
    if x is None:
        return "-"
    if isinstance(x, (list, dict)):
        return json.dumps(x)
    return str(x)


def inputs_text(inputs: list[dict[str, Any]]) -> str:
    """``1x3x224x224``, or ``input_ids 1x16`` for keyword inputs; commas between several.

    >>> inputs_text([{"name": None, "shape": [1, 3, 8, 8]}, {"name": "mask", "shape": [1, 8]}])
    '1x3x8x8, mask 1x8'
    """
    return ", ".join(
        ("" if i["name"] is None else f"{i['name']} ") + "x".join(map(str, i["shape"]))
        for i in inputs
    )
