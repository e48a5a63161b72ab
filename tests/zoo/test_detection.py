"""Detectors torch.export cannot trace whole (data-dependent decoding) slim part by part.

A YOLO-style detector written for the tests (tests/yolo.py) and torchvision's detection
models: the traced parts (backbone, neck, heads) are pruned, the untraced boundary
freezes, and the slim detector returns well-formed detections.
"""

from __future__ import annotations

import pytest
import torch

import slimgraph as sg
from tests.yolo import YOLO, Raw

pytestmark = pytest.mark.zoo


def test_yolo_style_detector_slims_and_exports(tmp_path) -> None:
    torch.manual_seed(0)
    model, x = YOLO().eval(), torch.randn(1, 3, 128, 128)
    with pytest.raises(sg.TraceError, match="data-dependent"):
        sg.trace(model, (x,))
    result = sg.slim(model, (x,), ratio=0.5)
    slim = result.model.eval()
    macs = sg.count_macs(Raw(slim), (x,)) / sg.count_macs(Raw(model), (x,))
    assert macs <= 0.35, f"MACs ratio {macs:.3f}"
    # backbone, neck and head are all cut; the boundary is the head's output
    assert slim.backbone.p4[1].cv1.conv.out_channels < model.backbone.p4[1].cv1.conv.out_channels
    assert slim.neck.bu5.cv2.conv.out_channels < model.neck.bu5.cv2.conv.out_channels
    assert slim.head.cls[2][1].conv.out_channels < model.head.cls[2][1].conv.out_channels
    assert slim.head.cls[2][2].out_channels == model.head.cls[2][2].out_channels
    assert "output of head, read by the model's forward, which could not be traced" in (
        result.graph.explain("head.box.0.2.weight:0")
    )
    with torch.no_grad():
        (found,) = slim(x)
        raw, raw_slim = Raw(model)(x), Raw(slim)(x)
    assert [t.shape for t in raw_slim] == [t.shape for t in raw]
    assert set(found) == {"boxes", "scores", "labels"}
    n = len(found["scores"])
    assert found["boxes"].shape == (n, 4) and found["labels"].shape == (n,)
    assert found["boxes"].dtype == torch.float32 and found["labels"].dtype == torch.int64
    report = sg.export_onnx(Raw(slim), (x,), tmp_path / "yolo.onnx")
    assert len(report.outputs) == 3  # one map per level; parity was checked (ParityError)
    assert report.max_rel_diff is not None and report.max_rel_diff <= 1e-4
