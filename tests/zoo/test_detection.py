"""Detectors torch.export cannot trace whole (data-dependent decoding) slim part by part.

A YOLO-style detector written for the tests (tests/yolo.py) and torchvision's detection
models: the traced parts (backbone, neck, heads) are pruned, the untraced boundary
freezes, and the slim detector returns well-formed detections.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

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


# torchvision's detectors tested here: one of each architecture (the rest of
# torchvision.models.list_models(module=detection) by tests/benchmarks/detection_table.py).
TORCHVISION = [
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "ssdlite320_mobilenet_v3_large",
    "retinanet_resnet50_fpn",
    "fcos_resnet50_fpn",
    "maskrcnn_resnet50_fpn",
    "keypointrcnn_resnet50_fpn",
]
EXTRA = {  # what each model returns beyond boxes, labels and scores: (key, dtype, dims)
    "maskrcnn_resnet50_fpn": [("masks", torch.float32, 4)],
    "keypointrcnn_resnet50_fpn": [
        ("keypoints", torch.float32, 3),
        ("keypoints_scores", torch.float32, 2),
    ],
}


def build_detector(name: str) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A torchvision detector with random weights, small images (min_size=128) and every
    score threshold 0, so that random weights still give detections to check."""
    thresh = "box_score_thresh" if "rcnn" in name else "score_thresh"
    options: dict = {thresh: 0.0, "weights": None, "weights_backbone": None}
    if not name.startswith("ssd"):  # SSD's transform has a fixed size
        options.update(min_size=128, max_size=128, detections_per_img=20)
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, **options).eval()
    return model, [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1))]


class Features(torch.nn.Module):
    """A torchvision detector's backbone and head (no transform, no decoding)."""

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = list(self.detector.backbone(x).values())
        return tuple(self.detector.head(features).values())


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_detector_slims(name: str, tmp_path) -> None:
    model, images = build_detector(name)
    result = sg.slim(model, (images,), ratio=0.5)
    slim = result.model.eval()
    batch = model.transform(images)[0].tensors
    macs = sg.count_macs(slim.backbone, (batch,)) / sg.count_macs(model.backbone, (batch,))
    assert macs <= 0.35, f"backbone MACs ratio {macs:.3f}"
    before = dict(model.named_parameters())
    heads = [n for n, p in slim.named_parameters() if "head" in n and p.shape != before[n].shape]
    assert heads, "no head layer was cut"
    # the boundary is named: the untraced module and why it could not be traced
    reasons = {why for g in result.graph.groups for why in g.frozen.values()}
    assert any(
        r.endswith("which could not be traced (data-dependent control flow)") for r in reasons
    )
    with torch.no_grad():
        (found,) = slim(images)
    n = len(found["scores"])
    assert n > 0
    assert found["boxes"].shape == (n, 4) and found["boxes"].dtype == torch.float32
    assert found["labels"].shape == (n,) and found["labels"].dtype == torch.int64
    assert found["scores"].dtype == torch.float32
    for key, dtype, dims in EXTRA.get(name, []):
        assert found[key].dtype == dtype and found[key].ndim == dims and len(found[key]) == n
    if name.startswith("ssdlite"):  # the exported part: backbone and head, with parity
        report = sg.export_onnx(Features(slim), (batch,), tmp_path / "ssdlite.onnx")
        assert len(report.outputs) == 2
        assert report.max_rel_diff is not None and report.max_rel_diff <= 1e-4
