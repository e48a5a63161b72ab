"""MACs-targeted against latency-targeted plans on a GPU, in eager torch (issue 15, item 5).

Usage: python tests/benchmarks/gpu_latency.py [--models resnet50 vit_b_16] [--batches 1 64]
       [--device cuda] [--target 0.5] [--rounds 5] [--runs 20] [--json out.json]

For each model (random weights, eval) and batch size: ``sg.profile_latency(runtime="torch",
device=...)`` measures its layers and whole slims on the device, in eager mode (no CUDA
graphs, no ``torch.compile``; cuDNN's autotuner and TF32 as torch leaves them, printed);
then ``sg.slim`` plans on a CPU copy with ``target_macs=T`` and with ``target_latency=T``
against that latency model (the plans do not depend on the device, the latency model
does), Torch-Pruning's MetaPruner slims a copy to about the MACs the latency plan kept,
and the original and the slim models, moved to the device, are timed by
``sg.measure_latency`` in ``--rounds`` interleaved rounds (each a median of ``--runs``
after warm-up; a run counts until its kernels finish). The table is
``latency_plans.py``'s: MACs kept, latency, speed-up, latency efficiency (speed-up x MACs
kept), its middle half over the rounds, each row against the MACs plan round by round,
the latency kept, and the prediction's error in ms and as a share.

``--device cpu --models resnet18 --batches 1`` rehearses the script where no GPU is.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import slimgraph as sg  # noqa: E402
from tests.benchmarks.latency_plans import (  # noqa: E402
    build,
    measured,
    table_row,
    torch_pruning_copy,
)


def interleaved(models: dict[str, nn.Module], x: tuple, args) -> dict[str, list[float]]:
    """``--rounds`` medians per model, the models taking turns in every round."""
    seen: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.rounds):
        for k, model in models.items():
            seen[k].append(sg.measure_latency(model, x, runs=args.runs).median_ms)
    return seen


def rows_for(name: str, batch: int, args) -> list[dict]:
    model, _ = build(name)
    x_cpu = (torch.randn(batch, 3, 224, 224),)
    device = torch.device(args.device)
    on_device, x = copy.deepcopy(model).to(device), (x_cpu[0].to(device),)
    started = time.perf_counter()
    lm = sg.profile_latency(on_device, x, runtime="torch", device=device, progress=False)
    profiled = time.perf_counter() - started
    macs = sg.count_macs(model, x_cpu)
    budgets = {
        f"target_macs={args.target}": {"target_macs": args.target},
        f"target_latency={args.target}": {"target_latency": args.target, "latency_model": lm},
    }
    results, said = {}, {}
    for kind, fields in budgets.items():
        with warnings.catch_warnings(record=True) as caught:  # a budget out of reach says so
            warnings.simplefilter("always")
            results[kind] = sg.slim(model, x_cpu, **fields)
        said[kind] = [str(w.message) for w in caught if "out of reach" in str(w.message)]
    slims = {k: r.model for k, r in results.items()}
    local = sg.count_macs(slims[f"target_latency={args.target}"], x_cpu) / macs
    slims["torch-pruning, same MACs"] = torch_pruning_copy(name, local)
    kept_by = {kind: sg.count_macs(slim, x_cpu) / macs for kind, slim in slims.items()}
    timed = {"original": on_device} | {k: m.to(device) for k, m in slims.items()}
    rounds = interleaved(timed, x, args)
    base = f"target_macs={args.target}"
    rows = []
    for kind, kept in kept_by.items():
        plan = results[kind].plan if kind in results else None
        rows.append(
            {
                "model": f"{name}, batch {batch}",
                "plan": kind,
                **measured(rounds, kind, kept, base, kept_by[base]),
                "predicted_ms": plan.predicted_latency_ms if plan else None,
                "predicted_original_ms": lm.predict({}),
                "round_to": lm.round_to,
                "check_error": lm.check_error,
                "profile_s": profiled,
                "warnings": said.get(kind, []),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"eager torch {torch.__version__} on {where}: cudnn.benchmark "
        f"{torch.backends.cudnn.benchmark}, TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
        f"no CUDA graphs; median of {args.rounds} interleaved medians of {args.runs} runs; "
        f"target {args.target}\n"
    )
    print(
        "| model | plan | MACs kept | latency (ms) | speed-up | latency efficiency "
        "| efficiency by round (middle half) | against the MACs plan (rounds ahead) "
        "| latency kept | predicted (ms) | error of prediction | error of predicted share |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name in args.models:
        for batch in args.batches:
            found = rows_for(name, batch, args)
            for r in found:
                print(table_row(r), flush=True)
            rows += found
    print(
        "\nlatency models: "
        + "; ".join(
            f"{r['model']} round_to {r['round_to']}, check error {r['check_error']:+.1%}, "
            f"profiled in {r['profile_s']:.0f} s"
            for r in rows
            if r["plan"].startswith("target_macs")
        )
    )
    for r in rows:
        for message in r["warnings"]:
            print(f"{r['model']}, {r['plan']}: {message}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
