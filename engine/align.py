"""Alignment and embedding: RetinaFace's 5 landmarks → 150×150 chips in dlib's geometry → 128-d descriptors.

The chip geometry is dlib's ``get_face_chip_details(shape, 150, 0.25)``: a similarity transform fitted (least
squares, Umeyama) from a template in chip pixels to the detected points, with normalised mean-face coordinates p
mapped to chip pixels by ``100 p + 25``. dlib fits eye corners and the nose base; RetinaFace gives eye centres, the
nose tip and the mouth corners, so the template here is derived from dlib's 68-point mean face (the same frame):
eye centre = mean of the six eye-contour points (36-41, 42-47), nose tip = point 30, mouth corners = 48 and 54
(see ``docs/dlib_dnn_format.md`` §4.3). Everything is batched on the frames' device with ``affine_grid`` /
``grid_sample`` (bilinear, black outside the frame, as dlib).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .faces import Detections
from .models.dlib_resnet import load_dlib_resnet

CHIP_SIZE = 150
#: RetinaFace's points (image-left eye, image-right eye, nose tip, left and right mouth corner) in chip pixels.
CHIP_TEMPLATE = (
    (47.55, 46.60),
    (100.48, 46.60),
    (74.01, 76.56),
    (50.41, 103.02),
    (97.61, 103.02),
)


def similarity_transforms(landmarks: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity transforms ``[F, 2, 3]`` mapping template (chip) points onto each face's points.

    ``landmarks`` is ``[F, 10]`` (x, y pairs) in image pixels. Closed form of Umeyama's method without reflection.
    """
    dst = landmarks.view(-1, 5, 2).to(torch.float64)
    src = template.to(dst).expand_as(dst)
    src_mean, dst_mean = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s, d = src - src_mean, dst - dst_mean
    norm = (s**2).sum((1, 2))
    a = (s * d).sum((1, 2)) / norm  # scale·cos
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1) / norm  # scale·sin
    linear = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], 1)  # [F, 2, 2]
    shift = dst_mean.squeeze(1) - (linear @ src_mean.transpose(1, 2)).squeeze(2)
    return torch.cat([linear, shift[..., None]], dim=2)


def align_chips(frames: torch.Tensor, det: Detections, size: int = CHIP_SIZE) -> torch.Tensor:
    """Float RGB chips ``[F, 3, size, size]`` (0..255) for every face of ``det`` in ``frames`` ``[N, 3, H, W]``."""
    if len(det) == 0:
        return torch.zeros((0, 3, size, size), device=frames.device)
    template = torch.tensor(CHIP_TEMPLATE, device=frames.device) * (size / CHIP_SIZE)
    chip_to_img = similarity_transforms(det.landmarks, template)  # pixel centres at integer coordinates
    h, w = frames.shape[-2:]
    # affine_grid works in [-1, 1] (align_corners=True: ±1 are the outer pixel centres), so the chip → image map
    # becomes theta = to_input_norm · chip_to_img · from_output_norm.
    dev, f64 = frames.device, torch.float64
    half = (size - 1) / 2
    from_out = torch.tensor([[half, 0, half], [0, half, half], [0, 0, 1]], dtype=f64, device=dev)
    to_in = torch.tensor([[2 / max(w - 1, 1), 0, -1], [0, 2 / max(h - 1, 1), -1], [0, 0, 1]], dtype=f64, device=dev)
    bottom = torch.tensor([[[0, 0, 1]]], dtype=f64, device=dev).expand(len(det), 1, 3)
    theta = (to_in @ torch.cat([chip_to_img, bottom], 1) @ from_out)[:, :2]
    grid = F.affine_grid(theta.to(torch.float32), [len(det), 3, size, size], align_corners=True)
    source = frames[det.image].to(torch.float32)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class FaceEmbedder:
    """dlib's face recognition ResNet on a device: chips or (frames + detections) → 128-d descriptors."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu") -> None:
        if weights is None:
            from .weights import resolve

            weights = resolve("dlib_resnet_v1")
        self.device = torch.device(device)
        self.model = load_dlib_resnet(weights, self.device)

    @torch.inference_mode()
    def embed_chips(self, chips: torch.Tensor, batch: int = 64) -> torch.Tensor:
        out = [self.model(chips[i : i + batch].to(self.device)) for i in range(0, len(chips), batch)]
        return torch.cat(out) if out else torch.zeros((0, 128), device=self.device)

    @torch.inference_mode()
    def embed(self, frames: torch.Tensor, det: Detections) -> torch.Tensor:
        """Descriptors ``[F, 128]`` for the faces of ``det`` (aligned from ``frames`` on the same device)."""
        return self.embed_chips(align_chips(frames.to(self.device), det.to(self.device)))
