"""Latency efficiency of slimmed models in ONNX Runtime, slimgraph beside Torch-Pruning.

Usage: python tests/benchmarks/bench_latency.py [--models resnet50 ...] [--ratio 0.5]
       [--round-to 1 8 16] [--threads 1] [--runs 20] [--json out.json]

For each model (random weights, eval, 1x3x224x224): the original, slimgraph's slim copy
(one per ``--round-to``) and Torch-Pruning's (MetaPruner, L2, local, same ratio, final
classifier ignored) are exported with ``sg.export_onnx`` and timed with
``sg.measure_latency`` (median of ``--runs`` after warm-up, fixed threads), all in one run.
latency efficiency = speedup / (1 / MACs ratio) = speedup x MACs kept: 1.0 means the
runtime turns every MAC saved into time saved.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import slimgraph as sg  # noqa: E402
from tests.peer import meta_pruner  # noqa: E402


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.get_model(name).eval(), torch.randn(1, 3, 224, 224)


def torch_pruning_copy(name: str, ratio: float) -> nn.Module:
    model, x = build(name)
    meta_pruner(model, x, ratio).step()
    return model


def measure(model: nn.Module, x: torch.Tensor, folder: Path, tag: str, args) -> dict:
    f = sg.bench.figures(model, (x,), folder / f"{tag}.onnx", threads=args.threads, runs=args.runs)
    return {"macs": f.macs, "onnx_bytes": f.onnx_bytes, "ms": f.latency.median_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["resnet50", "mobilenet_v2", "convnext_tiny", "vit_b_16"]
    )
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.models:
            model, x = build(name)
            base = measure(model, x, folder, f"{name}-original", args)
            variants = {
                f"slimgraph round_to={r}": sg.slim(model, (x,), ratio=args.ratio, round_to=r).model
                for r in args.round_to
            }
            try:
                variants["torch-pruning"] = torch_pruning_copy(name, args.ratio)
            except Exception as err:  # report a peer's failure rather than stop the run
                rows.append(
                    {
                        "model": name,
                        "tool": "torch-pruning",
                        "error": f"{type(err).__name__}: {err}"[:120],
                    }
                )
            for tool, slim in variants.items():
                try:
                    m = measure(slim, x, folder, f"{name}-{tool.replace(' ', '_')}", args)
                except sg.SlimGraphError as err:  # e.g. a peer's pruned model that no longer runs
                    rows.append(
                        {"model": name, "tool": tool, "error": str(err).splitlines()[0][:120]}
                    )
                    continue
                macs, speedup = m["macs"] / base["macs"], base["ms"] / m["ms"]
                rows.append(
                    {"model": name, "tool": tool, "macs_ratio": macs, "original_ms": base["ms"], "ms": m["ms"],
                     "speedup": speedup, "efficiency": speedup * macs, "onnx_mb": m["onnx_bytes"] / 2**20}
                )  # fmt: skip
    print(
        f"ONNX Runtime CPU, {args.threads} thread(s), median of {args.runs}; ratio {args.ratio}\n"
    )
    print("| model | tool | MACs kept | latency (ms) | speedup | latency efficiency |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['tool']} | failed: {r['error']} | | | |")
        else:
            print(
                f"| {r['model']} | {r['tool']} | {r['macs_ratio']:.3f} | {r['original_ms']:.1f} -> {r['ms']:.1f} "
                f"| {r['speedup']:.2f} | {r['efficiency']:.2f} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
