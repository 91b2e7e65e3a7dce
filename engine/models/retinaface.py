"""RetinaFace with a MobileNet-0.25 backbone (Deng et al., "RetinaFace: Single-stage Dense Face Localisation in
the Wild", 2019), as a plain torch module.

Written here from the paper and from reading the public Pytorch_Retinaface layout, so that the MIT-licensed
``mobilenet0.25_Final.pth`` state dict loads with strict key matching: a MobileNetV1 (width 0.25) body whose three
stages feed a 3-level FPN, one SSH context module per level, and 1×1 heads giving, per anchor, 2 class logits,
4 box offsets and 10 landmark offsets. Only network definition and weight loading live here; priors, decoding and
NMS are in ``engine.faces.detect``, the input (BGR minus the training mean, ``BGR_MEAN``) in
``engine.faces.preprocess``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .fuse import fold_sequentials

#: Anchor configuration the weights were trained with.
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)


def _conv_bn(cin: int, cout: int, stride: int = 1, leaky: float | None = 0.0, k: int = 3) -> nn.Sequential:
    """Conv (no bias) → BN → optional LeakyReLU; ``leaky=None`` leaves the activation out."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(cin: int, cout: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """MobileNet depthwise-separable block: 3×3 depthwise + BN + act, 1×1 pointwise + BN + act."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class MobileNetV1x025(nn.Module):
    """The three feature stages of MobileNetV1 at width 0.25 (strides 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, 2, leaky=0.1),
            _conv_dw(8, 16, 1),
            _conv_dw(16, 32, 2),
            _conv_dw(32, 32, 1),
            _conv_dw(32, 64, 2),
            _conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2), *[_conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return c1, c2, self.stage3(c2)


class FPN(nn.Module):
    """Top-down feature pyramid: lateral 1×1 convs, nearest upsampling, 3×3 merge convs."""

    def __init__(self, in_channels: tuple[int, int, int] = (64, 128, 256), out: int = 64) -> None:
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.output1 = _conv_bn(in_channels[0], out, leaky=leaky, k=1)
        self.output2 = _conv_bn(in_channels[1], out, leaky=leaky, k=1)
        self.output3 = _conv_bn(in_channels[2], out, leaky=leaky, k=1)
        self.merge1 = _conv_bn(out, out, leaky=leaky)
        self.merge2 = _conv_bn(out, out, leaky=leaky)

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        p1, p2, p3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return [p1, p2, p3]


class SSH(nn.Module):
    """Single Stage Headless context module: parallel 3×3, 5×5 (two 3×3) and 7×7 (three 3×3) branches."""

    def __init__(self, cin: int = 64, cout: int = 64) -> None:
        super().__init__()
        leaky = 0.1 if cout <= 64 else 0.0
        self.conv3X3 = _conv_bn(cin, cout // 2, leaky=None)
        self.conv5X5_1 = _conv_bn(cin, cout // 4, leaky=leaky)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, leaky=None)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4, leaky=leaky)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, leaky=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5_1 = self.conv5X5_1(x)
        b7_2 = self.conv7X7_2(b5_1)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(b5_1), self.conv7x7_3(b7_2)], dim=1))


class _Head(nn.Module):
    """A 1×1 conv predicting ``per_anchor`` numbers for each of ``anchors`` anchors at every location."""

    def __init__(self, cin: int, anchors: int, per_anchor: int) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, anchors * per_anchor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [N, A*k, H, W] → [N, H*W*A, k]: row-major locations, anchors innermost (as the priors are laid out).
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    """Raw network: BGR-minus-mean NCHW float input → (box offsets, class logits, landmark offsets) per prior."""

    def __init__(self, anchors: int = 2, channels: int = 64) -> None:
        super().__init__()
        self.body = MobileNetV1x025()
        self.fpn = FPN((64, 128, 256), channels)
        self.ssh1, self.ssh2, self.ssh3 = SSH(channels, channels), SSH(channels, channels), SSH(channels, channels)
        self.ClassHead = nn.ModuleList(_Head(channels, anchors, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(channels, anchors, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(channels, anchors, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self.fpn(self.body(x))
        feats = [self.ssh1(levels[0]), self.ssh2(levels[1]), self.ssh3(levels[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return loc, conf, landms


def load_retinaface(path: str | Path, device: str | torch.device = "cpu", fold: bool = True) -> RetinaFace:
    """Build the network and load a Pytorch_Retinaface-layout state dict (a ``module.`` prefix is stripped).

    ``fold`` merges every batch norm into its convolution for inference (``engine.models.fuse``); the unfolded
    network (``fold=False``) is the one whose layers mirror the state dict's keys.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # The classifier of the ImageNet backbone (if present) is not part of the detector.
    state = {k: v for k, v in state.items() if not k.startswith(("body.fc", "body.avg"))}
    model = RetinaFace()
    model.load_state_dict(state, strict=True)
    model.eval()
    if fold:
        fold_sequentials(model)
    return model.to(device)
