"""The timed parts of ``engine.tools.bench`` (its docstring says what each figure means): decode only, then the
detector, the embedder and every peer on the same sampled frames, each warmed up once first, untimed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import media
from engine.config import FaceSettings
from engine.faces.batching import FaceModels
from engine.faces.detect import Detections
from engine.faces.orientation import Orientation, OrientationPlan
from engine.faces.preprocess import resize_like_cv2

Log = Callable[[str], None]


class _Clock:
    """Sums wall seconds of timed blocks; on CUDA it synchronises at both ends so queued kernels are counted."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.seconds = 0.0

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextmanager
    def __call__(self) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds += time.perf_counter() - t0


def _scale(frames: torch.Tensor, settings: FaceSettings) -> float:
    """The pipeline's detection scale (``analyze_batches``): long side down to ``long_side``, never up."""
    h, w = int(frames.shape[-2]), int(frames.shape[-1])
    return 1.0 if settings.long_side == 0 else min(1.0, settings.long_side / max(h, w))


def _detect(models: FaceModels, frames: torch.Tensor, orientation: Orientation | None = None) -> Detections:
    """Detection exactly as the pipeline calls it: with the settings' rotated retries, decided per video by
    ``orientation`` (the video's state, carried from batch to batch; ``None``: a still frame, retried both ways)."""
    cfg = models.settings
    if not cfg.rotate:
        return models.detector.detect(frames, _scale(frames, cfg), cfg.threshold)
    plan = None if orientation is None else OrientationPlan([orientation], [len(frames)])
    return models.detector.detect_with_rotation(frames, _scale(frames, cfg), cfg.threshold, plan)


def _no_upright_face(det: Detections, n: int) -> int:
    """Frames of a batch of ``n`` where the upright pass found no face (what the old rule retried both ways)."""
    upright = torch.zeros(n, dtype=torch.bool, device=det.image.device)
    upright[det.image[det.rotation == 0]] = True
    return int((~upright).sum())


def _embed(models: FaceModels, frames: torch.Tensor, det: Detections) -> torch.Tensor:
    """Alignment + embedding exactly as the pipeline calls them."""
    return models.embedder.embed(frames, det)


def _naive(models: FaceModels, frames: torch.Tensor, orientation: Orientation | None = None) -> int:
    """Our detector + embedder one frame at a time in a Python loop; returns the faces found."""
    faces = 0
    for i in range(len(frames)):
        one = frames[i : i + 1]
        det = _detect(models, one, orientation)
        _embed(models, one, det)
        faces += len(det)
    return faces


def _peer_images(frames: torch.Tensor, settings: FaceSettings) -> list[np.ndarray]:
    """RGB ``H×W×3`` uint8 numpy frames at the engine's detection size, as face_recognition expects them."""
    scale = _scale(frames, settings)
    x = frames.cpu()
    if scale != 1.0:
        x = resize_like_cv2(x.to(torch.float32), scale).round().clamp(0, 255).to(torch.uint8)
    return [f.permute(1, 2, 0).contiguous().numpy() for f in x]


def _face_recognition(images: Sequence[np.ndarray]) -> int:
    """The seed projects' chain per frame: HOG locations, then 128-d encodings of those faces; returns the faces."""
    import face_recognition

    faces = 0
    for img in images:
        locations = face_recognition.face_locations(img, number_of_times_to_upsample=1, model="hog")
        face_recognition.face_encodings(img, known_face_locations=locations, num_jitters=1, model="small")
        faces += len(locations)
    return faces


def _touch(batch: media.FrameBatch) -> int:
    """Read one element of a decoded batch, so decoding is really done (and synchronised on CUDA), then count it."""
    if len(batch):
        batch.frames.reshape(-1)[-1].item()
    return len(batch)


def decode_only(
    videos: Sequence[Path], interval: float, device: str, log: Log, sampling: str = "exact"
) -> dict[str, Any]:
    """Decode-only throughput: every video's sampled frames decoded, touched and dropped (warm-up: the first video,
    untimed), sampled the way ``sampling`` says. Returns frames, seconds and frames per video."""
    for batch in media.sample_frames(videos[0], interval, device, mode=sampling):
        _touch(batch)
    clock = _Clock(device)
    per_video: dict[str, int] = {}
    for path in videos:
        with clock():
            per_video[path.name] = sum(_touch(b) for b in media.sample_frames(path, interval, device, mode=sampling))
    frames = sum(per_video.values())
    log(f"decode only ({sampling}): {frames} sampled frames from {len(videos)} videos in {clock.seconds:.2f}s")
    return {"frames": frames, "seconds": clock.seconds, "per_video": per_video}


@dataclass
class _ModelTimes:
    frames: int = 0
    faces: int = 0
    detect: float = 0.0
    embed: float = 0.0
    naive: float = 0.0
    naive_faces: int = 0
    face_recognition: float = 0.0
    face_recognition_faces: int = 0
    detector_frames: int = 0  # frames through the detector network in the detector-only stage (retries included)
    no_upright_face: int = 0  # frames where the upright pass found no face


def model_stages(
    videos: Sequence[Path], models: FaceModels, interval: float, peers: Sequence[str], log: Log
) -> dict[str, Any]:
    """Detector-only, embedder-only and every peer on the same sampled frames, re-decoded (untimed) one decode batch
    at a time. Each measured thing is warmed up once on the first batch of the first video."""
    device = str(models.detector.device)
    first = next(media.sample_frames(videos[0], interval, device), None)
    if first is not None and len(first):
        det = _detect(models, first.frames)
        _embed(models, first.frames, det)
        # The rotated retry has its own input shape: warm it even when every warm-up frame had a face.
        models.detector.detect(torch.rot90(first.frames[:1], 1, (2, 3)), _scale(first.frames, models.settings))
        _naive(models, first.frames[:1])
        if "face_recognition" in peers:
            _face_recognition(_peer_images(first.frames[:1], models.settings))
    t = _ModelTimes()
    clocks = {name: _Clock(device) for name in ("detect", "embed", "naive", "face_recognition")}
    for n, path in enumerate(videos, 1):
        orientation, naive_orientation = Orientation(), Orientation()  # each video's, as the pipeline keeps them
        for batch in media.sample_frames(path, interval, device):
            frames = batch.frames
            t.frames += len(batch)
            before = models.detector.frames_run
            with clocks["detect"]():
                det = _detect(models, frames, orientation)
            t.detector_frames += models.detector.frames_run - before
            t.no_upright_face += _no_upright_face(det, len(batch))
            with clocks["embed"]():
                _embed(models, frames, det)
            t.faces += len(det)
            with clocks["naive"]():
                t.naive_faces += _naive(models, frames, naive_orientation)
            if "face_recognition" in peers:
                images = _peer_images(frames, models.settings)
                with clocks["face_recognition"]():
                    t.face_recognition_faces += _face_recognition(images)
        log(f"models and peers: video {n}/{len(videos)} done ({t.frames} frames so far)")
    t.detect, t.embed = clocks["detect"].seconds, clocks["embed"].seconds
    t.naive, t.face_recognition = clocks["naive"].seconds, clocks["face_recognition"].seconds
    return dict(vars(t))
