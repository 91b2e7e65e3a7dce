"""Embedding: dlib's face recognition ResNet turns aligned 150×150 chips (``engine.faces.align``) into 128-d
descriptors (two faces of one person are under 0.6 apart), batched on the chips' device."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.faces.align import CPU_CHIP_BATCH, align_chips
from engine.faces.detect import Detections
from engine.inference.onnx_cache import embedder_forward, probe_input
from engine.inference.onnx_export import dlib_resnet_onnx
from engine.inference.precision import resolve_precision
from engine.inference.runtime import tune_allocator
from engine.models.dlib_resnet import load_dlib_resnet


class FaceEmbedder:
    """dlib's face recognition ResNet on a device: chips or (frames + detections) → 128-d descriptors."""

    name = "dlib"

    def __init__(
        self, weights: str | Path | None = None, device: str = "cpu", precision: str = "fp32", backend: str = "auto"
    ) -> None:
        """``precision``: see :mod:`engine.inference.precision` (``fp32``, the reference, unless asked otherwise);
        ``backend``: see :mod:`engine.inference.backends` (ONNX Runtime on a CPU when installed; torch on a GPU)."""
        if weights is None:
            from engine.inference.weights import resolve

            weights = resolve("dlib_resnet_v1")
        self.device = torch.device(device)
        self.dtype = resolve_precision(precision, self.device)
        if self.device.type == "cpu":
            tune_allocator()  # heavy CPU work ahead: keep large blocks for reuse (engine.inference.runtime)
        self.model = load_dlib_resnet(weights, self.device)
        mean = self.model.mean.clone()
        self.model.to(self.dtype).mean = mean  # the input normalisation stays float32 (see DlibResNet.forward)
        probe = probe_input((1, 3, 150, 150), 0.0, 255.0)
        self.backend, self._net = embedder_forward(
            self.model, backend, self.device, self.dtype, dlib_resnet_onnx, probe
        )

    @torch.inference_mode()
    def embed_chips(self, chips: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """Descriptors ``[F, 128]`` of float or uint8 chips, ``batch`` chips per network call (default: 64 on a GPU,
        :data:`CPU_CHIP_BATCH` on a CPU, where larger calls only outgrow the caches)."""
        batch = batch or (64 if self.device.type == "cuda" else CPU_CHIP_BATCH)
        out = [self._net(chips[i : i + batch].to(self.device)).float() for i in range(0, len(chips), batch)]
        return torch.cat(out) if out else torch.zeros((0, 128), device=self.device)

    def embed_faces(
        self, frames: torch.Tensor, det: Detections, chips: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Descriptors of faces whose aligned chips the caller already has (the faces stage makes them for the
        crops): dlib's network reads only the chips. With their magnitudes, which for this network say nothing of
        the face (1.26-1.47 for faces and false detections alike on the labelled clips)."""
        desc = self.embed_chips(chips)
        return desc, desc.norm(dim=1)

    @torch.inference_mode()
    def embed(self, frames: torch.Tensor, det: Detections) -> torch.Tensor:
        """Descriptors ``[F, 128]`` for the faces of ``det`` (aligned from ``frames`` on the same device)."""
        return self.embed_chips(align_chips(frames.to(self.device), det.to(self.device)))
