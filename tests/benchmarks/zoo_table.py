"""Slim every torchvision classifier at ratio 0.5 and print the README's table.

Usage: python tests/benchmarks/zoo_table.py [--ratio 0.5] [--json out.json] [NAME ...]

Columns: MACs and parameter ratios, slim / original (MACs by FlopCounterMode), and the
wall time of ``sg.slim`` (trace + plan + apply + forward check) on this machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import slimgraph as sg
from tests.helpers import build_torchvision, torchvision_names


def measure(name: str, ratio: float) -> dict:
    model, x = build_torchvision(name)
    start = time.perf_counter()
    result = sg.slim(model, (x,), ratio=ratio)
    seconds = time.perf_counter() - start
    row = {
        "model": name,
        "macs": sg.count_macs(result.model, (x,)) / sg.count_macs(model, (x,)),
        "params": sg.count_params(result.model) / sg.count_params(model),
        "seconds": seconds,
    }
    del model, result
    gc.collect()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = [measure(n, args.ratio) for n in (args.names or torchvision_names())]
    print("| model | MACs kept | params kept | slim time (s) |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['macs']:.3f} | {r['params']:.3f} | {r['seconds']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
