"""Every torchvision detection model (``list_models(module=detection)``), random weights,
slimmed at ratio 0.5 with ``sg.slim`` (partitioned tracing): backbone MACs kept, what the
slim detector returns, and the seconds it took. tests/zoo/test_detection.py checks one of
each architecture in CI; this covers the rest.

Usage: python tests/benchmarks/detection_table.py [name ...] > table.md
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import slimgraph as sg  # noqa: E402
from tests.zoo.test_detection import build_detector  # noqa: E402


def row(name: str) -> str:
    start = time.perf_counter()
    model, images = build_detector(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slim = sg.slim(model, (images,), ratio=0.5).model.eval()
    batch = model.transform(images)[0].tensors
    macs = sg.count_macs(slim.backbone, (batch,)) / sg.count_macs(model.backbone, (batch,))
    with torch.no_grad():
        (found,) = slim(images)
    n = len(found["scores"])
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(found.items()))
    ok = n > 0 and found["boxes"].shape == (n, 4) and all(len(v) == n for v in found.values())
    seconds = time.perf_counter() - start
    return f"| {name} | {macs:.3f} | {'yes' if ok else 'NO'}: {shapes} | {seconds:.0f} |"


def main() -> None:
    names = sys.argv[1:] or torchvision.models.list_models(module=torchvision.models.detection)
    print(f"load average at start: {os.getloadavg()[0]:.1f}\n")
    print("| detector | backbone MACs kept | well-formed detections | seconds |")
    print("|---|---:|---|---:|")
    for name in names:
        try:
            print(row(name), flush=True)
        except Exception as err:  # noqa: BLE001 - the table reports every failure
            print(f"| {name} | - | {type(err).__name__}: {str(err)[:120]} | - |", flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
