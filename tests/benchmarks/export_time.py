"""How long ``sg.export_onnx`` takes on the slowest torchvision models, original and slim.

Usage: python tests/benchmarks/export_time.py [--models mvit_v2_s raft_small] [--ratio 0.5]

Each model (random weights, eval) is slimmed with ``sg.slim(ratio=--ratio)``, then the
original and the slim model are exported one after the other with the default checks
(ONNX Runtime parity at the example batch and, with a dynamic batch, at batch 3). MViT-v2-S
runs on a 16x224x224 clip; RAFT-small on two 128x128 frames with ``dynamic_batch=False``,
since its correlation volume fixes the batch size (with the default the batch-3 check
refuses it, and that refusal is timed too). The issue's bar: a slim export finishes within
120 s, or refuses clearly. The load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import slimgraph as sg  # noqa: E402

INPUTS = {
    "mvit_v2_s": lambda: (torch.randn(1, 3, 16, 224, 224),),
    "raft_small": lambda: (torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128)),
}
KWARGS = {"raft_small": {"dynamic_batch": False}}


def build(name: str) -> torch.nn.Module:
    if name == "raft_small":
        return torchvision.models.optical_flow.raft_small().eval()
    return torchvision.models.get_model(name).eval()


def timed_export(model: torch.nn.Module, x: tuple, folder: str, tag: str, **kw) -> str:
    start = time.perf_counter()
    try:
        sg.export_onnx(model, x, os.path.join(folder, f"{tag}.onnx"), **kw)
        outcome = "exported"
    except sg.ExportError as err:
        outcome = f"refused: {str(err).splitlines()[0][:90]}"
    return f"{time.perf_counter() - start:.1f} s, {outcome}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    parser.add_argument("--ratio", type=float, default=0.5)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    print("| model | export kwargs | slim s | original export | slim export |")
    print("| --- | --- | ---: | --- | --- |")
    for name in args.models:
        torch.manual_seed(0)
        model, x = build(name), INPUTS[name]()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = sg.slim(model, x, ratio=args.ratio).model
        slimmed = time.perf_counter() - start
        variants = [KWARGS.get(name, {})] + ([{}] if name in KWARGS else [])
        for kw in variants:
            with tempfile.TemporaryDirectory() as folder:
                original = timed_export(model, x, folder, "original", **kw)
                small = timed_export(slim, x, folder, "slim", **kw)
            print(f"| {name} | {kw or 'defaults'} | {slimmed:.1f} | {original} | {small} |")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
