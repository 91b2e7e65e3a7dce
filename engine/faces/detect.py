"""Face detection around the RetinaFace network: preprocessing, priors, decoding, NMS, rotate-and-retry.

Everything here is batched and device-agnostic: a batch of frames (uint8 RGB ``[N, 3, H, W]`` on any device)
becomes a ``Detections`` of flat tensors on the same device, with an ``image`` index per face. No per-frame Python
loop touches pixels; the only host sync is reading how many faces survived.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torchvision.ops import batched_nms

from engine.faces.preprocess import preprocess_torch
from engine.inference.backends import Forward, OrtForward, maybe_compiled, resolve_backend
from engine.inference.precision import resolve_precision
from engine.inference.runtime import tune_allocator
from engine.models.retinaface import MIN_SIZES, STEPS, VARIANCE, load_retinaface

#: Thresholds of the reference evaluation: candidates above CONF_CANDIDATE go to NMS; results keep SCORE_MIN.
CONF_CANDIDATE = 0.02
NMS_IOU = 0.4
PRE_NMS_TOP_K = 5000
POST_NMS_TOP_K = 750
#: Frames per network call on a CPU. oneDNN gains nothing from larger batches there, while their full-resolution
#: inputs and activations outgrow the caches and the C allocator's reuse threshold (each new block then costs page
#: faults); on a GPU the whole batch goes in one call.
CPU_MICRO_BATCH = 4
#: Largest batch a TensorRT detector engine is built for (larger batches run in torch).
TRT_MAX_BATCH = 256
#: Retry flags of a frame with no upright face (bits, per frame): retry it turned by 90°, by 270°, or both.
RETRY_90, RETRY_270 = 1, 2
RETRY_BOTH = RETRY_90 | RETRY_270


class RetryPlan(Protocol):
    """Which frames with no upright face are retried rotated (``engine.faces.orientation.OrientationPlan``)."""

    def first(self, missing: torch.Tensor) -> torch.Tensor:
        """Retry flags (int ``[N]``) for the batch's frames, given which have no upright face (bool ``[N]``)."""
        ...

    def then(self, missing: torch.Tensor, flags: torch.Tensor, found: Detections) -> torch.Tensor | None:
        """After the first flags ran and found ``found``: flags for frames not tried yet, or ``None``."""
        ...


@dataclass
class Detections:
    """Faces of a batch of images, flat: face i belongs to image ``image[i]``; pixels of the original images."""

    image: torch.Tensor  # int64 [F]
    boxes: torch.Tensor  # float32 [F, 4] x1, y1, x2, y2
    scores: torch.Tensor  # float32 [F]
    landmarks: torch.Tensor  # float32 [F, 10] x, y of: left eye, right eye, nose, left mouth, right mouth
    rotation: torch.Tensor  # int64 [F]: 0, or the retry rotation (90 / 270, counter-clockwise) that found it

    def __len__(self) -> int:
        return int(self.image.numel())

    def select(self, idx: torch.Tensor) -> Detections:
        """The faces picked by an index or boolean mask, fields kept in step."""
        return Detections(self.image[idx], self.boxes[idx], self.scores[idx], self.landmarks[idx], self.rotation[idx])

    def for_image(self, i: int) -> Detections:
        return self.select(self.image == i)

    def to(self, device: str | torch.device) -> Detections:
        return Detections(*(t.to(device) for t in (self.image, self.boxes, self.scores, self.landmarks, self.rotation)))

    @staticmethod
    def empty(device: str | torch.device = "cpu") -> Detections:
        z = torch.zeros
        return Detections(
            z(0, dtype=torch.int64, device=device),
            z(0, 4, device=device),
            z(0, device=device),
            z(0, 10, device=device),
            z(0, dtype=torch.int64, device=device),
        )

    def shifted(self, dx: int, dy: int) -> Detections:
        """The same faces with boxes and landmarks moved by ``(dx, dy)`` pixels (found in a crop of the frame)."""
        if dx == 0 and dy == 0:
            return self
        step = torch.tensor([dx, dy], dtype=self.boxes.dtype, device=self.boxes.device)
        return Detections(
            self.image, self.boxes + step.repeat(2), self.scores, self.landmarks + step.repeat(5), self.rotation
        )

    @staticmethod
    def cat(parts: Sequence[Detections]) -> Detections:
        return Detections(
            *(torch.cat([getattr(p, f) for p in parts]) for f in ("image", "boxes", "scores", "landmarks", "rotation"))
        )


@functools.lru_cache(maxsize=64)
def _priors_cpu(height: int, width: int) -> torch.Tensor:
    rows = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy, cx = torch.meshgrid(
            (torch.arange(fh) + 0.5) * step / height, (torch.arange(fw) + 0.5) * step / width, indexing="ij"
        )
        per_size = [
            torch.stack([cx, cy, torch.full_like(cx, s / width), torch.full_like(cy, s / height)], -1) for s in sizes
        ]
        rows.append(torch.stack(per_size, dim=2).reshape(-1, 4))  # locations row-major, anchors innermost
    return torch.cat(rows).to(torch.float32)


def priors(height: int, width: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Anchor boxes ``[P, 4]`` (cx, cy, w, h, relative to the input size) for an input of ``height×width``."""
    return _priors_cpu(height, width).to(device)


def decode_boxes(loc: torch.Tensor, pri: torch.Tensor) -> torch.Tensor:
    """Offsets ``[..., P, 4]`` → relative x1, y1, x2, y2 (SSD-style encoding with the trained variances)."""
    centers = pri[..., :2] + loc[..., :2] * VARIANCE[0] * pri[..., 2:]
    sizes = pri[..., 2:] * torch.exp(loc[..., 2:] * VARIANCE[1])
    return torch.cat([centers - sizes / 2, centers + sizes / 2], dim=-1)


def decode_landmarks(pre: torch.Tensor, pri: torch.Tensor) -> torch.Tensor:
    """Offsets ``[..., P, 10]`` → relative landmark coordinates."""
    pts = pre.unflatten(-1, (5, 2))
    return (pri[..., None, :2] + pts * VARIANCE[0] * pri[..., None, 2:]).flatten(-2)


def preprocess(frames: torch.Tensor, scale: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 RGB ``[N, 3, H, W]`` → the network's input: resized, BGR, minus the training mean.

    On CUDA this is one fused Triton kernel (``kernels.preprocess``, equal to ``preprocess_torch`` bit for bit)
    when Triton is there and ``ENGINE_KERNELS`` is not ``0``; everywhere else it is ``preprocess_torch``
    (``engine.faces.preprocess``).
    """
    if frames.device.type == "cuda" and _fused_preprocess_ok(frames, dtype):
        from kernels.preprocess import preprocess as fused_preprocess

        return fused_preprocess(frames, scale, dtype)
    return preprocess_torch(frames, scale, dtype)


def _fused_preprocess_ok(frames: torch.Tensor, dtype: torch.dtype) -> bool:
    """The kernel takes uint8 RGB batches and float outputs; anything else (or ENGINE_KERNELS=0) stays plain torch."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3 or frames.numel() == 0:
        return False
    if dtype not in (torch.float32, torch.float16):
        return False
    try:
        import kernels
        from kernels import preprocess as fused
    except ImportError:
        return False
    return kernels.enabled() and fused.available(frames.device)


def postprocess(
    loc: torch.Tensor,
    conf: torch.Tensor,
    landms: torch.Tensor,
    height: int,
    width: int,
    scale: float = 1.0,
    threshold: float = 0.5,
) -> Detections:
    """Raw outputs of a batch → detections in original pixels (divided by ``scale``), NMS per image."""
    device = loc.device
    n, num_priors = conf.shape[:2]
    pri = priors(height, width, device)
    scores = torch.softmax(conf.float(), dim=-1)[..., 1]  # [N, P]
    k = min(PRE_NMS_TOP_K, num_priors)
    top_scores, top_idx = scores.topk(k, dim=1)  # sorted, per image
    keep = top_scores > CONF_CANDIDATE
    img_idx = torch.arange(n, device=device)[:, None].expand(n, k)[keep]
    prior_idx = top_idx[keep]
    cand_scores = top_scores[keep]
    size = torch.tensor([width, height], device=device, dtype=torch.float32)
    boxes = decode_boxes(loc[img_idx, prior_idx].float(), pri[prior_idx]) * size.repeat(2)
    lms = decode_landmarks(landms[img_idx, prior_idx].float(), pri[prior_idx]) * size.repeat(5)
    kept = batched_nms(boxes, cand_scores, img_idx, NMS_IOU)  # sorted by decreasing score
    # At most POST_NMS_TOP_K per image, then the caller's score threshold.
    img_k = img_idx[kept]
    order = torch.argsort(img_k, stable=True)
    kept, img_k = kept[order], img_k[order]
    first = torch.searchsorted(img_k, img_k, right=False)
    rank = torch.arange(len(img_k), device=device) - first
    kept = kept[(rank < POST_NMS_TOP_K) & (cand_scores[kept] >= threshold)]
    return Detections(
        img_idx[kept],
        boxes[kept] / scale,
        cand_scores[kept],
        lms[kept] / scale,
        torch.zeros(len(kept), dtype=torch.int64, device=device),
    )


class FaceDetector:
    """RetinaFace MobileNet-0.25 on a device, batched over frames of one size (or padded mixed sizes)."""

    def __init__(
        self, weights: str | Path | None = None, device: str = "cpu", precision: str = "fp32", backend: str = "auto"
    ) -> None:
        """``precision``: see :mod:`engine.inference.precision` (``fp32``, the reference, unless asked otherwise);
        ``backend``: see :mod:`engine.inference.backends` (ONNX Runtime on a CPU, TensorRT on CUDA when installed)."""
        if weights is None:
            from engine.inference.weights import resolve

            weights = resolve("retinaface_mnet025")
        self.device = torch.device(device)
        self.dtype = resolve_precision(precision, self.device)
        if self.device.type == "cpu":
            tune_allocator()  # heavy CPU work ahead: keep large blocks for reuse (engine.inference.runtime)
        self.model = load_retinaface(weights, self.device).to(self.dtype).to(memory_format=torch.channels_last)
        self.backend = resolve_backend(backend, self.device, self.dtype)
        self._ort: OrtForward | None = None
        if self.backend == "onnxruntime":
            from engine.inference.onnx_cache import cached_ort_forward, probe_input
            from engine.inference.onnx_export import retinaface_onnx

            probe = probe_input((1, 3, 64, 96), -128.0, 152.0)  # BGR minus the means
            self._ort = cached_ort_forward(self.model, retinaface_onnx, probe)
        self._plans: dict[tuple[int, int], Forward | None] = {}
        self._torch = maybe_compiled(self.model, self.device)
        #: Frames run through the network since loading (rotated retries included): the bench's detector passes.
        self.frames_run = 0

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The network on a preprocessed batch, through the chosen backend. TensorRT engines are built once per
        input size and cached on disk (``engine.inference.tensorrt``); a size whose engine cannot be had runs in
        torch."""
        if self._ort is not None:
            return self._ort(x)
        if self.backend == "tensorrt" and x.shape[0] <= TRT_MAX_BATCH:
            size = (int(x.shape[-2]), int(x.shape[-1]))
            if size not in self._plans:
                from engine.inference.tensorrt import detector_forward
                from engine.inference.weights import weights_dir

                self._plans[size] = detector_forward(self.model, self.device, *size, TRT_MAX_BATCH, weights_dir())
            plan = self._plans[size]
            if plan is not None:
                return plan(x)
        return self._torch(x)

    @torch.inference_mode()
    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw outputs for a preprocessed input batch."""
        return self.model(x.to(self.device, self.dtype))

    @torch.inference_mode()
    def detect(self, frames: torch.Tensor, scale: float = 1.0, threshold: float = 0.5) -> Detections:
        """Faces in a batch of same-size uint8 RGB frames ``[N, 3, H, W]``, resized by ``scale`` first."""
        n = frames.shape[0]
        if n == 0:
            return Detections.empty(self.device)
        self.frames_run += n
        step = n if self.device.type == "cuda" else CPU_MICRO_BATCH
        outs, size = [], (0, 0)
        for i in range(0, n, step):
            x = preprocess(frames[i : i + step].to(self.device), scale, self.dtype)
            outs.append(self._forward(x))
            size = (x.shape[-2], x.shape[-1])
        loc, conf, landms = (torch.cat(parts) for parts in zip(*outs, strict=True))
        return postprocess(loc, conf, landms, size[0], size[1], scale, threshold)

    def detect_images(
        self, images: Sequence[torch.Tensor], long_side: int | None = None, threshold: float = 0.5
    ) -> list[Detections]:
        """Images of any sizes, one by one at their own scale (exact reference geometry, no padding)."""
        out = []
        for img in images:
            scale = 1.0 if long_side is None else long_side / max(img.shape[-2:])
            out.append(self.detect(img[None], scale, threshold))
        return out

    def detect_with_rotation(
        self, frames: torch.Tensor, scale: float = 1.0, threshold: float = 0.5, plan: RetryPlan | None = None
    ) -> Detections:
        """Detect; frames with no face are retried rotated by 90° and 270° (landscape recordings), keeping the
        rotation whose best face scores highest, with boxes mapped back to the unrotated frame.

        Without ``plan`` every frame with no upright face is retried both ways (three network passes for it).
        A ``plan`` (``engine.faces.orientation``: one orientation per video) says which of them to retry at which
        rotation, in up to two rounds: its ``first`` flags (``RETRY_90`` / ``RETRY_270`` bits per frame) run
        first, then ``then`` sees what they found and may flag more of the frames left untried."""
        found = self.detect(frames, scale, threshold)
        has_face = torch.zeros(frames.shape[0], dtype=torch.bool, device=self.device)
        has_face[found.image] = True
        missing = ~has_face
        flags = missing.long() * RETRY_BOTH if plan is None else plan.first(missing).to(self.device) * missing
        parts = [found]
        if bool(flags.any()):
            parts.append(self._retry(frames, flags, scale, threshold))
        if plan is not None:
            tried = parts[-1] if len(parts) > 1 else Detections.empty(self.device)
            more = plan.then(missing, flags, tried)
            if more is not None:
                more = more.to(self.device) * (missing & (flags == 0))
                if bool(more.any()):
                    parts.append(self._retry(frames, more, scale, threshold))
        if len(parts) == 1:
            return found
        merged = Detections.cat(parts)
        order = torch.argsort(merged.image, stable=True)
        return merged.select(order)

    def _retry(self, frames: torch.Tensor, flags: torch.Tensor, scale: float, threshold: float) -> Detections:
        """The flagged frames detected turned by 90° (bit ``RETRY_90``) and 270° (``RETRY_270``), boxes mapped back;
        a frame tried both ways keeps the rotation whose best face scores highest."""
        h, w = frames.shape[-2:]
        tries = []
        for k, degrees, bit in ((1, 90, RETRY_90), (-1, 270, RETRY_270)):
            idx = ((flags & bit) != 0).nonzero().flatten()
            if idx.numel() == 0:
                continue
            det = self.detect(torch.rot90(frames.to(self.device)[idx], k=k, dims=(2, 3)), scale, threshold)
            det.boxes, det.landmarks = unrotate(det.boxes, det.landmarks, k, h, w)
            det.rotation = torch.full_like(det.image, degrees)
            det.image = idx[det.image]
            tries.append(det)
        both = Detections.cat(tries) if tries else Detections.empty(self.device)
        if len(both):
            # Per frame, keep only the rotation whose best face scores highest.
            n = frames.shape[0]
            best = {
                deg: torch.full((n,), -1.0, device=self.device).scatter_reduce(
                    0, both.image[both.rotation == deg], both.scores[both.rotation == deg], "amax"
                )
                for deg in (90, 270)
            }
            winner = torch.where(best[270] > best[90], 270, 90)
            both = both.select(both.rotation == winner[both.image])
        return both


def unrotate(boxes: torch.Tensor, landmarks: torch.Tensor, k: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Map boxes/landmarks found in ``torch.rot90(frame, k)`` (frame ``h×w``) back to the frame's pixels."""

    def back(xy: torch.Tensor) -> torch.Tensor:
        x, y = xy[..., 0], xy[..., 1]
        # rot90 k=1 (counter-clockwise): (x, y) → (y, w - x); k=-1 (clockwise): (x, y) → (h - y, x).
        return torch.stack([w - y, x], -1) if k == 1 else torch.stack([y, h - x], -1)

    corners = back(boxes.view(-1, 2, 2))
    new_boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=-1)
    return new_boxes, back(landmarks.view(-1, 5, 2)).reshape(-1, 10)


def detections_to_json(det: Detections) -> list[dict]:
    """One image's detections as plain JSON-able dicts (rounded to what the reference file holds)."""
    rows = []
    for box, score, lm, rot in zip(
        det.boxes.tolist(), det.scores.tolist(), det.landmarks.tolist(), det.rotation.tolist(), strict=True
    ):
        row = {"box": [round(v, 3) for v in box], "score": round(score, 5), "landmarks": [round(v, 3) for v in lm]}
        if rot:
            row["rotation"] = rot
        rows.append(row)
    return rows
