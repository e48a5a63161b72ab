"""The export report and the bench report (original beside slim), as tables on stdout."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from slimgraph.cli.render.text import percent, stdout

__all__ = ["print_bench", "print_export"]


def print_export(r: dict[str, Any]) -> None:
    """What ``slimgraph export`` wrote and how close ONNX Runtime came to PyTorch."""

    table = Table(title=f"{r['spec']} -> {r['path']}")
    table.add_column("")
    table.add_column("value", justify="right")
    simplified = (
        f"{r['nodes_before']} -> {r['nodes_after']} nodes"
        if r["simplified"]
        else f"no ({r['simplify_skipped_reason']})"
    )
    rows = [
        (
            "exporter",
            r["exporter"]
            + (f" (fallback: {r['fallback_reason']})" if r["fallback_reason"] else ""),
        ),
        ("opset", str(r["opset"])),
        ("simplified", simplified),
        (
            "file size",
            f"{r['file_size']:,} bytes" + (" + external data" if r["external_data"] else ""),
        ),
        ("checked at batch", ", ".join(map(str, r["batch_sizes"])) or "not checked"),
        *(
            [("checked at past length", ", ".join(map(str, r["past_lengths"])))]
            if r.get("past_lengths")
            else []
        ),
        (
            "max relative difference",
            "-" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.2e}",
        ),
    ]
    if r["quantized"]:
        q = r["quantized"]
        rows.append(
            (
                "int8 copy",
                f"{q['path']}: {q['file_size']:,} bytes, rel diff {q['max_rel_diff']:.2e}",
            )
        )
    for name, value in rows:
        table.add_row(name, value)
    stdout().print(table)


def print_bench(r: dict[str, Any]) -> None:
    """Original and slim side by side, then speedup and latency efficiency."""

    o, s = r["original"], r["slim"]
    lat = o["latency"]
    table = Table(
        title=f"{r['spec']} at ratio {r['config']['ratio']} "
        f"(ONNX Runtime CPU, {lat['threads']} thread(s), median of {lat['runs']})"
    )
    for col in ("", "original", "slim", "slim/original"):
        table.add_column(col, justify="left" if not col else "right")
    for label, key, fmt in (
        ("params", "params", "{:,}"),
        ("MACs", "macs", "{:,}"),
        ("ONNX bytes", "onnx_bytes", "{:,}"),
    ):
        table.add_row(label, fmt.format(o[key]), fmt.format(s[key]), percent(s[key] / o[key]))
    table.add_row(
        "latency (ms)",
        f"{o['latency']['median_ms']:.2f}",
        f"{s['latency']['median_ms']:.2f}",
        percent(s["latency"]["median_ms"] / o["latency"]["median_ms"]),
    )
    console = stdout()
    console.print(table)
    console.print(
        Text(
            f"speedup {r['speedup']:.2f}x, latency efficiency {r['latency_efficiency']:.2f} "
            f"(speedup x MACs kept; 1.0 = every MAC saved became time saved)\n"
            f"elapsed {r['seconds']:.1f} s"
        )
    )
