"""A small YOLO-style detector for the tests: CSP blocks, SPPF, a PAN neck with upsample
and concat, decoupled heads, and anchor-free decoding whose score threshold makes the
output shape depend on values (so ``torch.export`` cannot trace the whole model)."""

from __future__ import annotations

import torch
from torch import nn


class ConvBN(nn.Module):
    """Conv, BatchNorm, SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1, self.cv2 = ConvBN(c, c, 3), ConvBN(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class CSP(nn.Module):
    """Split a 1x1 conv's output in two, run bottlenecks on one half, concat all."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.c = c_out // 2
        self.cv1 = ConvBN(c_in, 2 * self.c)
        self.cv2 = ConvBN((2 + n) * self.c, c_out)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        c = c_in // 2
        self.cv1, self.cv2 = ConvBN(c_in, c), ConvBN(4 * c, c_out)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Backbone(nn.Module):
    def __init__(self, w: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvBN(3, w, 3, 2), ConvBN(w, 2 * w, 3, 2), CSP(2 * w, 2 * w))
        self.p3 = nn.Sequential(ConvBN(2 * w, 4 * w, 3, 2), CSP(4 * w, 4 * w, 2))
        self.p4 = nn.Sequential(ConvBN(4 * w, 8 * w, 3, 2), CSP(8 * w, 8 * w, 2))
        self.p5 = nn.Sequential(
            ConvBN(8 * w, 16 * w, 3, 2), CSP(16 * w, 16 * w), SPPF(16 * w, 16 * w)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        return p3, p4, self.p5(p4)


class PAN(nn.Module):
    """Top-down (upsample, concat) then bottom-up (strided conv, concat) fusion."""

    def __init__(self, w: int = 16) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td4 = CSP(24 * w, 8 * w, shortcut=False)
        self.td3 = CSP(12 * w, 4 * w, shortcut=False)
        self.down3 = ConvBN(4 * w, 4 * w, 3, 2)
        self.bu4 = CSP(12 * w, 8 * w, shortcut=False)
        self.down4 = ConvBN(8 * w, 8 * w, 3, 2)
        self.bu5 = CSP(24 * w, 16 * w, shortcut=False)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        p3, p4, p5 = feats
        t4 = self.td4(torch.cat([self.up(p5), p4], 1))
        n3 = self.td3(torch.cat([self.up(t4), p3], 1))
        n4 = self.bu4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        return [n3, n4, n5]


class DecoupledHead(nn.Module):
    """Per level, a box branch (left, top, right, bottom distances) and a class branch."""

    def __init__(self, channels: tuple[int, ...], classes: int = 8, w: int = 32) -> None:
        super().__init__()
        self.box = nn.ModuleList(
            nn.Sequential(ConvBN(c, w, 3), ConvBN(w, w, 3), nn.Conv2d(w, 4, 1)) for c in channels
        )
        self.cls = nn.ModuleList(
            nn.Sequential(ConvBN(c, w, 3), ConvBN(w, w, 3), nn.Conv2d(w, classes, 1))
            for c in channels
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.cat([b(x), c(x)], 1) for x, b, c in zip(feats, self.box, self.cls)]


class YOLO(nn.Module):
    """Returns, per image, the boxes (x1, y1, x2, y2), scores and labels above
    ``threshold``: how many depends on the values."""

    strides = (8, 16, 32)

    def __init__(self, w: int = 16, classes: int = 8, threshold: float = 0.5) -> None:
        super().__init__()
        self.backbone, self.neck = Backbone(w), PAN(w)
        self.head = DecoupledHead((4 * w, 8 * w, 16 * w), classes, 2 * w)
        self.threshold = threshold

    def raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone, neck and head: the outputs an exported model returns."""
        return self.head(self.neck(self.backbone(x)))

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return self.decode(self.head(self.neck(self.backbone(x))))

    def decode(self, maps: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        boxes, scores = [], []
        for m, stride in zip(maps, self.strides):
            n, _, h, w = m.shape
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            centres = (torch.stack([xs, ys], -1).reshape(-1, 2).to(m) + 0.5) * stride
            flat = m.flatten(2).transpose(1, 2)  # (n, h*w, 4 + classes)
            ltrb = nn.functional.softplus(flat[..., :4]) * stride
            boxes.append(torch.cat([centres - ltrb[..., :2], centres + ltrb[..., 2:]], -1))
            scores.append(flat[..., 4:].sigmoid())
        all_boxes, all_scores = torch.cat(boxes, 1), torch.cat(scores, 1)
        found = []
        for b, s in zip(all_boxes, all_scores):
            best, label = s.max(-1)
            keep = best > self.threshold  # data-dependent: how many boxes pass
            found.append({"boxes": b[keep], "scores": best[keep], "labels": label[keep]})
        return found


class Raw(nn.Module):
    """The detector without its decoding (what ONNX exports)."""

    def __init__(self, detector: YOLO) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.detector.raw(x))
