"""The profile report: where the latency model was measured, what it holds, how well it
predicted a slim it was not fitted on, and the file it was written to."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from slimgraph.cli.render.text import elapsed, inputs_text, stdout

__all__ = ["print_profile"]


def print_profile(r: dict[str, Any]) -> None:
    """One table of the latency model's facts, then the file and the time it took."""
    table = Table(title=f"{r['spec']}: latency model, input {inputs_text(r['inputs'])}")
    table.add_column("")
    table.add_column("value", justify="right")
    measured = "-" if r["original_ms"] is None else f"{r['original_ms']:.2f} ms"
    check = "-" if r["check_error"] is None else f"{r['check_error']:+.1%}"
    rows = (
        ("runtime", f"{r['version']}, {r['threads']} thread(s)"),  # the version names it
        ("machine", r["machine"]),
        ("layers tabled", f"{r['layers']} ({', '.join(r['dtypes'])})"),
        ("favoured multiple (round_to)", str(r["round_to"])),
        ("original, measured", measured),
        ("original, predicted", f"{r['predicted_ms']:.2f} ms"),
        ("whole-model knots", str(r["knots"])),
        ("knots measured on", "uniform slims" if r["scope"] == "local" else f"{r['scope']} plans"),
        ("error on an unfitted slim", check),
    )
    for name, value in rows:
        table.add_row(name, value)
    console = stdout()
    console.print(table)
    console.print(Text(f"wrote {r['file']}\n{elapsed(r['seconds'])}"))
