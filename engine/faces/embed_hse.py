"""Embedding with the HSE face network (``engine.models.hse_mobilenet``): the detector's box widened by 10 % each
side, resized to 224×224, BGR minus the VGG means → 1024-d L2-normalised descriptors (compare by cosine, or by
Euclidean distance, which is a function of it). The default embedder (``engine.faces.embedders`` says why).

The crop equals OpenCV's ``cv2.resize(img[y1:y2, x1:x2], (224, 224), interpolation=INTER_LINEAR)`` of the widened
box rounded to whole pixels and clipped to the image (no antialiasing, edges of the crop replicated), computed in
batched torch on the frames' device.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from engine.faces.detect import Detections
from engine.inference.onnx_cache import embedder_forward, probe_input
from engine.inference.onnx_export import hse_mobilenet_onnx
from engine.inference.precision import resolve_precision
from engine.models.hse_mobilenet import DESCRIPTOR_DIM, INPUT_SIZE, load_hse_mobilenet

#: The network's input is BGR minus these means (Keras' VGG preprocessing, as the HSE network was trained).
VGG_BGR_MEAN = (103.939, 116.779, 123.68)
#: The detector's box is widened by this fraction of its width/height on each side.
BOX_MARGIN = 0.10


def crop_boxes(det: Detections, height: int, width: int, margin: float = BOX_MARGIN) -> torch.Tensor:
    """Integer crop boxes ``[F, 4]`` (x1, y1, x2, y2; x2/y2 exclusive): widened, rounded, clipped to the image."""
    b = det.boxes.to(torch.float32)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    box = torch.stack([b[:, 0] - margin * w, b[:, 1] - margin * h, b[:, 2] + margin * w, b[:, 3] + margin * h], 1)
    box = box.round()
    box[:, 0::2] = box[:, 0::2].clamp(0, width)
    box[:, 1::2] = box[:, 1::2].clamp(0, height)
    box[:, 2] = torch.maximum(box[:, 2], box[:, 0] + 1).clamp(max=width)  # at least one pixel
    box[:, 3] = torch.maximum(box[:, 3], box[:, 1] + 1).clamp(max=height)
    box[:, 0] = torch.minimum(box[:, 0], box[:, 2] - 1)
    box[:, 1] = torch.minimum(box[:, 1], box[:, 3] - 1)
    return box


def _sample_grid(box: torch.Tensor, height: int, width: int, size: int) -> torch.Tensor:
    """``grid_sample`` coordinates (align_corners=False) of OpenCV's INTER_LINEAR resize of each box to size²."""
    steps = (torch.arange(size, device=box.device, dtype=torch.float32) + 0.5) / size  # [S]

    def axis(lo: torch.Tensor, hi: torch.Tensor, extent: int) -> torch.Tensor:
        src = lo[:, None] + steps[None] * (hi - lo)[:, None] - 0.5  # pixel coordinates in the image
        src = torch.maximum(torch.minimum(src, hi[:, None] - 1), lo[:, None])  # replicate the crop's own edges
        return (2 * src + 1) / extent - 1

    gx, gy = axis(box[:, 0], box[:, 2], width), axis(box[:, 1], box[:, 3], height)
    return torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [F, S, S, 2]


def crop_faces(frames: torch.Tensor, det: Detections, size: int = INPUT_SIZE) -> torch.Tensor:
    """Float RGB crops ``[F, 3, size, size]`` (0..255) of the faces of ``det`` from uint8 RGB ``frames``
    ``[N, 3, H, W]``, on the frames' device, in one ``grid_sample`` call: the faces of each frame are laid side by
    side in one sampling grid per frame (frames with fewer faces padded), so the call reads only the frames that hold
    a face, once each, whatever the number of faces."""
    n_faces, (height, width) = len(det), frames.shape[-2:]
    if n_faces == 0:
        return torch.empty((0, 3, size, size), device=frames.device, dtype=torch.float32)
    det = det.to(frames.device)
    grid = _sample_grid(crop_boxes(det, height, width), height, width, size)  # [F, S, S, 2]
    used, slot = torch.unique(det.image, return_inverse=True)  # frames with a face; each face's frame among them
    order = torch.argsort(slot, stable=True)
    counts = torch.bincount(slot, minlength=len(used))
    rank = torch.empty_like(slot)
    rank[order] = torch.arange(n_faces, device=slot.device) - (torch.cumsum(counts, 0) - counts)[slot[order]]
    per_frame = int(counts.max())
    layout = grid.new_zeros((len(used), per_frame, size, size, 2))
    layout[slot, rank] = grid
    crops = F.grid_sample(
        frames[used].to(torch.float32), layout.view(len(used), per_frame * size, size, 2),
        mode="bilinear", padding_mode="border", align_corners=False,
    )  # fmt: skip
    return crops.view(len(used), 3, per_frame, size, size)[slot, :, rank]


class HSEEmbedder:
    """The HSE network on a device: frames + detections (or 224² RGB crops) → ``[F, 1024]`` unit descriptors."""

    name = "hse"

    def __init__(
        self,
        device: str = "cpu",
        precision: str = "fp32",
        weights: tuple[str | Path, str | Path] | None = None,
        backend: str = "auto",
    ) -> None:
        """``precision``: see :mod:`engine.inference.precision` (``fp32``, the reference, unless asked otherwise);
        ``weights``: (``faceres.json``, ``faceres.bin``), resolved through the weight manifest when not given;
        ``backend``: see :mod:`engine.inference.backends` (ONNX Runtime on a CPU when installed: 1.3-1.7x
        torch's speed for this network there; torch on a GPU)."""
        if weights is None:
            from engine.inference.weights import resolve

            weights = (resolve("hse_faceres_json"), resolve("hse_faceres_bin"))
        self.device = torch.device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.model = load_hse_mobilenet(weights[0], weights[1], self.device).to(self.dtype)
        self.mean = torch.tensor(VGG_BGR_MEAN, device=self.device).view(1, 3, 1, 1)
        probe = probe_input((1, 3, 224, 224), -124.0, 152.0)  # BGR minus the VGG means
        self.backend, self._net = embedder_forward(
            self.model, backend, self.device, self.dtype, hse_mobilenet_onnx, probe
        )

    @torch.inference_mode()
    def embed_crops(self, crops: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """Descriptors ``[F, 1024]`` of RGB crops ``[F, 3, 224, 224]`` (uint8 or float 0..255)."""
        return F.normalize(self.raw_crops(crops, batch), dim=1)

    @torch.inference_mode()
    def raw_crops(self, crops: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """The network's output ``[F, 1024]`` before L2 normalisation. Its length (the magnitude) says how well the
        network reads the face: visible faces measure 7.4 and up (1st percentile) on the labelled clips, hands,
        backgrounds and dark patches 2.3-7.8 (the feature-norm cue of MagFace and AdaFace; docs/identity.md)."""
        batch = batch or (64 if self.device.type == "cuda" else 16)
        out = []
        for i in range(0, len(crops), batch):
            x = crops[i : i + batch].to(self.device, torch.float32).flip(1) - self.mean  # RGB → BGR, minus means
            out.append(self._net(x.to(self.dtype)).float())
        return torch.cat(out) if out else torch.zeros((0, DESCRIPTOR_DIM), device=self.device)

    @torch.inference_mode()
    def embed_faces(
        self, frames: torch.Tensor, det: Detections, chips: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit descriptors ``[F, 1024]`` and magnitudes ``[F]`` of the faces of ``det`` in uint8 RGB ``frames``
        ``[N, 3, H, W]`` (the aligned ``chips`` are dlib's input, not this network's)."""
        raw = self.raw_crops(crop_faces(frames.to(self.device), det.to(self.device)))
        return F.normalize(raw, dim=1), raw.norm(dim=1)

    def embed(self, frames: torch.Tensor, det: Detections) -> torch.Tensor:
        """Descriptors ``[F, 1024]`` for the faces of ``det`` in uint8 RGB ``frames`` ``[N, 3, H, W]``."""
        return self.embed_faces(frames, det)[0]
