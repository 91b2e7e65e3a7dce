"""Alignment and embedding: RetinaFace's 5 landmarks → 150×150 chips in dlib's geometry → 128-d descriptors.

dlib's ``get_face_chip_details(shape, 150, 0.25)`` fits a similarity transform from a chip-pixel template to five
points of its own shape predictor (eye corners, nose base) and ``extract_image_chip`` samples it bilinearly, through
an image pyramid when the face is large. RetinaFace gives other points (eye centres, nose tip, mouth corners), so:

* **Template** (:data:`CHIP_TEMPLATE`): where RetinaFace's points fall, on average, inside the chip that dlib's own
  5-point alignment cuts. Measured on 517 faces of the shared *videos* (never the test photos) by
  ``benchmarks/test_chip_template.py``: for each face found by both, dlib's transform maps RetinaFace's landmarks into
  chip pixels, and the mean is the template. It sits within 3 px of the points derived from dlib's 68-point mean face
  (``docs/dlib_dnn_format.md`` §4.3) but follows RetinaFace's own annotation (a lower nose tip and mouth).
* **Weights** (:data:`TEMPLATE_WEIGHTS`): the same measurement gives each point's scatter around its mean; the eyes
  scatter 3–4 px, the nose tip 10 px (it moves with yaw), the mouth 5 px (expression). Weighting the least-squares fit
  by inverse variance is the maximum-likelihood similarity under that noise.
* **Sampling** copies dlib's extractor: side ``k = (150 s - 1) / 149`` about ``T(75, 75)``, a [1 4 6 4 1] pyramid
  (2× per level, with dlib's own level choice and its quarter-pixel level offsets) for faces more than ~2× the chip,
  bilinear sampling with black outside, and the truncation to 8 bits dlib applies at every step. With dlib's own
  landmarks this reproduces dlib's descriptors (``tests/test_embed.py``: median L2 under 0.005, all under 0.05).

Everything is batched on the frames' device: one ``affine_grid`` / ``grid_sample`` per pyramid level in use.
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
    (47.60, 46.08),
    (102.09, 45.69),
    (73.43, 79.59),
    (53.93, 108.09),
    (96.68, 107.53),
)
#: Inverse variance (1/px²) of each point around the template, from the same measurement.
TEMPLATE_WEIGHTS = (1 / 9.3, 1 / 14.2, 1 / 62.4, 1 / 27.0, 1 / 27.4)
#: dlib's own 5-point template (shape_predictor_5_face_landmarks order: image-right eye outer and inner corner,
#: image-left eye outer and inner corner, nose base) in chip pixels, ``100 p + 25`` of its normalised mean face.
DLIB_5POINT_TEMPLATE = (
    (110.95674596, 46.34981538),
    (89.60604764, 47.89674388),
    (37.05750621, 46.37274527),
    (58.40850614, 47.90642403),
    (74.01123136, 87.77975316),
)
_PYRAMID_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)


def similarity_transforms(
    landmarks: torch.Tensor, template: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted least-squares similarity transforms ``[F, 2, 3]`` mapping template points onto each face's points.

    ``landmarks`` is ``[F, 2P]`` (x, y pairs) in image pixels, ``template`` ``[P, 2]``, ``weights`` ``[P]`` (equal
    when omitted). Closed form of Umeyama's method without reflection, in float64.
    """
    dst = landmarks.reshape(len(landmarks), -1, 2).to(torch.float64)
    src = template.to(dst).expand_as(dst)
    w = torch.ones(dst.shape[1], dtype=dst.dtype, device=dst.device) if weights is None else weights.to(dst)
    w = (w / w.sum()).view(1, -1, 1)
    src_mean, dst_mean = (w * src).sum(1, keepdim=True), (w * dst).sum(1, keepdim=True)
    s, d = src - src_mean, dst - dst_mean
    norm = (w * s**2).sum((1, 2))
    a = (w * s * d).sum((1, 2)) / norm  # scale·cos
    b = (w[..., 0] * (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0])).sum(1) / norm  # scale·sin
    linear = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], 1)  # [F, 2, 2]
    shift = dst_mean.squeeze(1) - (linear @ src_mean.transpose(1, 2)).squeeze(2)
    return torch.cat([linear, shift[..., None]], dim=2)


def chip_transforms(
    landmarks: torch.Tensor,
    size: int = CHIP_SIZE,
    template: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dlib's chip → image maps ``[F, 2, 3]`` (chip pixel centres to image pixel centres) and pyramid levels ``[F]``.

    The similarity ``T`` fitted to the template has scale ``s`` (image px per chip px). dlib cuts a square of side
    ``size·s`` centred on ``T(size/2, size/2)`` and spreads the chip's pixel centres over it with step
    ``k = (size·s - 1) / (size - 1)``; it samples from the pyramid level where that square, halved by dlib's
    ``rect_down``, last stays larger than the chip. ``template`` (150-px chip units) and ``weights`` default to
    RetinaFace's; another point set (dlib's own 5 points, say) can be passed with its template.
    """
    if template is None:
        template, weights = torch.tensor(CHIP_TEMPLATE), torch.tensor(TEMPLATE_WEIGHTS)
    template = template.to(landmarks.device, torch.float64) * (size / CHIP_SIZE)
    fit = similarity_transforms(landmarks, template, weights)
    linear, shift = fit[:, :, :2], fit[:, :, 2]
    s = linear[:, :, 0].norm(dim=1)
    centre = linear @ torch.full((2,), size / 2, dtype=fit.dtype, device=fit.device) + shift
    k = (size * s - 1) / (size - 1)
    linear = linear * (k / s)[:, None, None]
    shift = centre - linear @ torch.full((2,), (size - 1) / 2, dtype=fit.dtype, device=fit.device)
    level = torch.zeros_like(s, dtype=torch.long)
    width = size * s  # inclusive width of the chip square in image pixels
    while True:
        down = (width - 1) / 2 + 1  # rect_down halves the extent and keeps the inclusive convention
        more = down > size
        if not bool(more.any()):
            break
        level += more.long()
        width = torch.where(more, down, width)
    return torch.cat([linear, shift[..., None]], dim=2), level


def pyramid_down(images: torch.Tensor) -> torch.Tensor:
    """One level of dlib's ``pyramid_down<2>``: separable [1 4 6 4 1]/16 blur, every other pixel, truncated to
    integers as dlib does on 8-bit images. Output pixel ``j`` is centred on input pixel ``2j``."""
    c = images.shape[1]
    taps = torch.tensor(_PYRAMID_TAPS, dtype=images.dtype, device=images.device) / 16
    x = F.pad(images, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, 5).expand(c, 1, 1, 5), stride=(1, 2), groups=c)
    x = F.conv2d(x, taps.view(1, 1, 5, 1).expand(c, 1, 5, 1), stride=(2, 1), groups=c)
    return torch.floor(x + 1e-3)


def _sample(images: torch.Tensor, chip_to_img: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear chips from ``images`` ``[F, 3, H, W]`` (one per face) through ``[F, 2, 3]`` pixel-centre maps."""
    h, w = images.shape[-2:]
    # affine_grid works in [-1, 1] (align_corners=True: ±1 are the outer pixel centres), so the chip → image map
    # becomes theta = to_input_norm · chip_to_img · from_output_norm.
    dev, f64 = images.device, torch.float64
    half = (size - 1) / 2
    from_out = torch.tensor([[half, 0, half], [0, half, half], [0, 0, 1]], dtype=f64, device=dev)
    to_in = torch.tensor([[2 / max(w - 1, 1), 0, -1], [0, 2 / max(h - 1, 1), -1], [0, 0, 1]], dtype=f64, device=dev)
    bottom = torch.tensor([[[0, 0, 1]]], dtype=f64, device=dev).expand(len(images), 1, 3)
    theta = (to_in @ torch.cat([chip_to_img, bottom], 1) @ from_out)[:, :2]
    grid = F.affine_grid(theta.to(torch.float32), [len(images), 3, size, size], align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def align_chips(
    frames: torch.Tensor,
    det: Detections,
    size: int = CHIP_SIZE,
    template: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Float RGB chips ``[F, 3, size, size]`` (whole numbers 0..255) for every face of ``det`` in ``frames``.

    ``frames`` is ``[N, 3, H, W]`` (uint8 or float, 0..255). Faces are grouped by pyramid level; only frames that
    hold a large face are blurred down, and only as far as their largest face needs. ``template`` / ``weights``:
    see :func:`chip_transforms`.
    """
    chips = torch.zeros((len(det), 3, size, size), device=frames.device)
    if len(det) == 0:
        return chips
    chip_to_img, level = chip_transforms(det.landmarks, size, template, weights)
    images = frames.to(torch.float32)
    row = torch.arange(len(frames), device=frames.device)  # frame index → row of ``images`` (-1: dropped)
    for lvl in range(int(level.max()) + 1):
        if lvl > 0:
            # Blur down one level only the frames that still hold a face at this level or deeper.
            keep = torch.unique(det.image[level >= lvl])
            images = pyramid_down(images[row[keep]])
            row = torch.full_like(row, -1)
            row[keep] = torch.arange(len(keep), device=row.device)
        faces = (level == lvl).nonzero().flatten()
        if len(faces) == 0:
            continue
        # dlib's rect_down maps p → p/2 - (1.25, 0.75) per level while the filter centres output j on input 2j + 2;
        # together the chip at level l looks (2^l - 1)/2 px left of and below where a pure halving would.
        offset = (2**lvl - 1) / 2
        at_level = chip_to_img[faces].clone()
        at_level[:, :, 2] += torch.tensor([-offset, offset], dtype=at_level.dtype, device=at_level.device)
        at_level /= 2**lvl
        chips[faces] = _sample(images[row[det.image[faces]]], at_level, size)
    return torch.floor(chips + 1e-3)


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
