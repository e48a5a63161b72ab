"""Accuracy at equal measured latency: MACs-targeted against latency-targeted plans, on the
digits ResNet-18 of ``bench_digits.py``.

Usage: python tests/benchmarks/digits_latency.py [--target-macs 0.5] [--threads 1]
       [--runs 50] [--rounds 5] [--json out.json]

The trained baseline is ``bench_digits.py``'s (cached). ``sg.profile_latency`` measures it
in ONNX Runtime (CPU, ``--threads``, batch 1, 3x32x32). The MACs plan is
``sg.slim(target_macs=T)`` (l2, local scope); its latency kept, measured, becomes the
target of the latency plans: ``target_latency`` in local scope (every group cut alike, at
the runtime's favoured multiple of channels) and in global scope (units ranked by l2 score
per millisecond they cost; its latency model profiled with ``scope="global"``, whose knots
are global plans). Each latency plan is timed against the MACs plan's slim, in
the same rounds, and planned again with its target scaled by the miss (up to ``--tries``
plans) until it runs as fast as it or up to 3 % faster; the closest try not slower
than it counts (``matching.matched``). Every model is
exported and timed in interleaved rounds (median of ``--rounds`` medians of ``--runs``),
then gets the same recovery: BatchNorm re-estimated on 10 training batches, one epoch of
fine-tuning (Adam, cosine schedule, the same batch order for all), and the same epoch
again from the same start in ``--orders`` batch orders (one epoch's accuracy on 360 test
images moves by a few images with the order alone). Prints a markdown table and the load
average at the start and the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bench_digits as digits  # noqa: E402
from matching import matched  # noqa: E402

import slimgraph as sg  # noqa: E402


def measured(models: dict[str, nn.Module], x: torch.Tensor, args) -> dict[str, float]:
    """Median of ``--rounds`` medians per model in ONNX Runtime, the models taking turns."""
    seen: dict[str, list[float]] = {k: [] for k in models}
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for k, m in models.items():
            paths[k] = Path(folder) / f"{len(paths)}.onnx"
            sg.export_onnx(m, (x,), paths[k], check=False)
        for _ in range(args.rounds):
            for k, path in paths.items():
                report = sg.measure_latency(path, (x,), threads=args.threads, runs=args.runs)
                seen[k].append(report.median_ms)
    return {k: statistics.median(v) for k, v in seen.items()}


def latency_plans(base, x, lms, macs_slim, goal: float, args) -> tuple[dict[str, nn.Module], dict]:
    """The latency-targeted slims, each re-planned until it runs as fast as the MACs
    plan's slim (``matching.matched``, up to ``--tries`` plans); ``lms`` are the latency
    models by scope."""
    kinds = {"target_latency (local)": "local", "target_latency (global, per ms)": "global"}
    found, targets = {}, {}
    for kind, scope in kinds.items():

        def make(target: float, scope: str = scope) -> nn.Module:
            lm = lms[scope]
            return sg.slim(base, (x,), target_latency=target, latency_model=lm, scope=scope).model

        def miss(slim: nn.Module) -> float:
            ms = measured({"macs": macs_slim, "slim": slim}, x, args)
            return ms["slim"] / ms["macs"]

        print(kind)
        targets[kind], found[kind], _ = matched(make, miss, goal, args.tries)
    return found, targets


def recovered_accuracy(slim: nn.Module, data, args) -> dict[str, float]:
    train_data, test_data = data
    slim = copy.deepcopy(slim)
    row = {"after": digits.accuracy(slim, test_data)}
    sg.recalibrate_bn(slim, [b[0] for b in digits.batches(train_data, 1, seed=7)[:10]])
    row["bn_recal"] = digits.accuracy(slim, test_data)
    row["epoch_1_by_order"] = []
    for order in range(args.orders):  # one epoch from the same start, batches reshuffled
        tuned = copy.deepcopy(slim)
        stream = digits.batches(train_data, 1, seed=digits.SEED + 2 + order)
        digits.train(tuned, stream, digits.cosine(len(stream)))
        row["epoch_1_by_order"].append(digits.accuracy(tuned, test_data))
    row["epoch_1"] = row["epoch_1_by_order"][0]  # the batch order of every earlier run
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-macs", type=float, default=0.5)
    parser.add_argument("--baseline-epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tries", type=int, default=5, help="plans per latency target")
    parser.add_argument(
        "--orders", type=int, default=5, help="batch orders of the epoch of fine-tuning"
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    print(f"load average at start: {os.getloadavg()}")
    data = digits.load_data()
    base = digits.baseline(data[0], args.baseline_epochs)
    x = data[0][0][:1]
    # knots on the kind of plan they predict: uniform slims, global plans (on its fit)
    lm = sg.profile_latency(base, (x,), threads=args.threads, progress=False)
    on_global = sg.profile_latency(
        base,
        (x,),
        threads=args.threads,
        progress=False,
        config=sg.PruneConfig(scope="global"),
        uniform=lm,
    )
    lms = {"local": lm, "global": on_global}
    macs_slim = sg.slim(base, (x,), target_macs=args.target_macs).model
    first = measured({"original": base, "macs": macs_slim}, x, args)
    goal = first["macs"] / first["original"]
    slims, targets = latency_plans(base, x, lms, macs_slim, goal, args)
    slims = {f"target_macs={args.target_macs} (local)": macs_slim, **slims}
    ms = measured({"original": base, **slims}, x, args)
    macs = sg.count_macs(base, (x,))
    rows = []
    for kind, slim in slims.items():
        row = {
            "plan": kind,
            "target": targets.get(kind),
            "macs_kept": sg.count_macs(slim, (x,)) / macs,
            "params_kept": sg.count_params(slim) / sg.count_params(base),
            "ms": ms[kind],
            "original_ms": ms["original"],
            "latency_kept": ms[kind] / ms["original"],
            **recovered_accuracy(slim, data, args),
        }
        rows.append(row)
    print(f"load average at end: {os.getloadavg()}")
    print(
        f"\nbaseline accuracy {digits.accuracy(base, data[1]):.4f}; latency model: round_to "
        f"{lm.round_to}, check error {lm.check_error:+.1%}; ONNX Runtime CPU, "
        f"{args.threads} thread(s), batch 1\n"
    )
    print(
        "| plan | target | MACs kept | params kept | latency (ms) | latency kept | "
        f"acc. after | after BN | after 1 epoch | after 1 epoch, {args.orders} batch orders "
        "(mean, min-max) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        target = f"{r['target']:.3f}" if r["target"] is not None else ""
        orders = r["epoch_1_by_order"]
        print(
            f"| {r['plan']} | {target} | {r['macs_kept']:.3f} | {r['params_kept']:.3f} | "
            f"{r['original_ms']:.2f} -> {r['ms']:.2f} | {r['latency_kept']:.3f} | "
            f"{r['after']:.4f} | {r['bn_recal']:.4f} | {r['epoch_1']:.4f} | "
            f"{statistics.mean(orders):.4f} ({min(orders):.4f}-{max(orders):.4f}) |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
