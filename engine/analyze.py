"""One video's faces: sampled frames → detections (rotate-and-retry) → chips → descriptors, crops, hashes → tracks.

Everything between decode and the end of a batch stays on the run's device: detection, alignment, embedding,
JPEG encoding of the crops (nvJPEG on CUDA) and their PHash. Each batch then crosses to the host once, as the small
tensors the tables need; tracking (a few hundred boxes, sequential over frames) runs there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import decode
from .align import FaceEmbedder, align_chips
from .config import Challenge, ConfigError
from .dedup import phash
from .faces import FaceDetector
from .track import TrackerSettings, split_track, track_faces

ROTATIONS_TRIED = [0, 90, 270]
Timer = Callable[[str], AbstractContextManager[None]]


@dataclass(frozen=True)
class FaceSettings:
    """The challenge's ``[faces]`` table: detection size and score threshold, and whether frames are retried
    rotated. ``long_side`` resizes frames whose long side is larger (never upscales); 0 keeps the original size."""

    long_side: int = 640
    threshold: float = 0.5
    rotate: bool = True
    jpeg_quality: int = 90


def face_settings(challenge: Challenge) -> FaceSettings:
    """Read and validate ``[faces]``; errors name the key at fault."""
    table = challenge.raw.get("faces", {})
    where = f"challenge {challenge.name!r} [faces]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - {"long_side", "threshold", "rotate", "jpeg_quality"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    out = FaceSettings(**table)
    if not isinstance(out.long_side, int) or not (out.long_side == 0 or out.long_side >= 32):
        raise ConfigError(f"{where}: long_side must be 0 (original size) or an integer >= 32")
    if not isinstance(out.threshold, int | float) or not 0 < out.threshold < 1:
        raise ConfigError(f"{where}: threshold must be a number between 0 and 1")
    if not isinstance(out.jpeg_quality, int) or not 1 <= out.jpeg_quality <= 100:
        raise ConfigError(f"{where}: jpeg_quality must be an integer 1..100")
    return out


@dataclass
class FaceModels:
    """The detector and embedder of a run, loaded once on its device."""

    detector: FaceDetector
    embedder: FaceEmbedder
    settings: FaceSettings = field(default_factory=FaceSettings)

    @classmethod
    def load(cls, device: str, settings: FaceSettings | None = None) -> FaceModels:
        return cls(FaceDetector(device=device), FaceEmbedder(device=device), settings or FaceSettings())


@dataclass
class VideoFaces:
    """What the faces stage found in one video, on the host, ready for the tables.

    ``faces`` holds ``[F]``-long tensors: frame_index, face_index, pts_s, boxes ``[F, 4]``, scores, landmarks
    ``[F, 10]``, rotation, embedding ``[F, 128]``, phash (int64), track; ``crops`` the JPEG of each face's chip.
    """

    frames: list[dict[str, Any]] = field(default_factory=list)
    faces: dict[str, torch.Tensor] = field(default_factory=dict)
    crops: list[bytes] = field(default_factory=list)
    frame_jpegs: dict[int, bytes] = field(default_factory=dict)
    noface_frames: list[int] = field(default_factory=list)
    sampled: torch.Tensor | None = None  # all sampled frames (uint8, host) when asked for, e.g. to find a logo

    def __len__(self) -> int:
        return 0 if not self.faces else len(self.faces["frame_index"])

    @property
    def n_tracks(self) -> int:
        return 0 if len(self) == 0 else int(self.faces["track"].max()) + 1


def _rank_within(image: torch.Tensor) -> torch.Tensor:
    """Position of each face among the faces of its frame (faces come grouped by frame)."""
    if image.numel() == 0:
        return image.clone()
    change = torch.ones_like(image, dtype=torch.bool)
    change[1:] = image[1:] != image[:-1]
    starts = torch.arange(len(image), device=image.device)[change]
    first = starts[torch.cumsum(change.long(), 0) - 1]
    return torch.arange(len(image), device=image.device) - first


def analyze_batches(
    batches: Iterator[decode.FrameBatch],
    models: FaceModels,
    *,
    timer: Timer | None = None,
    keep_frames: bool = False,
    frame_jpegs: bool = False,
    crops: bool = True,
) -> VideoFaces:
    """The faces stage over one video's sampled frame batches; tracks come after (:func:`assign_tracks`).

    ``crops=False`` skips the JPEG crops and their PHash (film labelling needs descriptors, not images); the
    ``phash`` column is then absent.
    """
    timer = timer or (lambda _stage: nullcontext())
    cfg = models.settings
    out = VideoFaces()
    parts: dict[str, list[torch.Tensor]] = {}
    kept: list[torch.Tensor] = []
    while True:
        with timer("decode"):
            batch = next(batches, None)
        if batch is None:
            break
        frames = batch.frames
        h, w = int(frames.shape[-2]), int(frames.shape[-1])
        scale = 1.0 if cfg.long_side == 0 else min(1.0, cfg.long_side / max(h, w))
        with timer("detect"):
            find = models.detector.detect_with_rotation if cfg.rotate else models.detector.detect
            det = find(frames, scale, cfg.threshold)
        with timer("embed"):
            chips = align_chips(frames.to(models.embedder.device), det.to(models.embedder.device))
            embedding = models.embedder.embed_chips(chips)
        with timer("crops"):
            chips8 = chips.clamp(0, 255).to(torch.uint8)
            hashes = phash(chips8) if crops else None
            if crops:
                out.crops.extend(decode.encode_jpegs(chips8, cfg.jpeg_quality))
            if frame_jpegs:
                out.frame_jpegs.update(zip(batch.index.tolist(), decode.encode_jpegs(frames), strict=True))
        if keep_frames:
            kept.append(frames.cpu())
        # One trip to the host per batch.
        image = det.image.cpu()
        index, target, pts = batch.index.cpu(), batch.target_s.cpu(), batch.pts_s.cpu()
        out.frames += [
            dict(frame_index=k, target_s=t, pts_s=p, width=w, height=h)
            for k, t, p in zip(index.tolist(), target.tolist(), pts.tolist(), strict=True)
        ]
        out.noface_frames += index[torch.bincount(image, minlength=len(index)) == 0].tolist()
        for name, value in (
            ("frame_index", index[image]),
            ("face_index", _rank_within(image)),
            ("pts_s", pts[image]),
            ("boxes", det.boxes.cpu()),
            ("scores", det.scores.cpu()),
            ("landmarks", det.landmarks.cpu()),
            ("rotation", det.rotation.cpu()),
            ("embedding", embedding.float().cpu()),
            ("phash", None if hashes is None else hashes.cpu()),
        ):
            if value is not None:
                parts.setdefault(name, []).append(value)
    out.faces = {name: torch.cat(values) for name, values in parts.items()}
    if keep_frames and kept:
        out.sampled = torch.cat(kept)
    return out


def assign_tracks(
    result: VideoFaces,
    breaks: Sequence[tuple[int, float]] = (),
    settings: TrackerSettings | None = None,
) -> None:
    """Track ids for ``result``'s faces, then the manual breaks ``(track, at_s)`` of this video, in order."""
    if len(result) == 0:
        result.faces["track"] = torch.zeros(0, dtype=torch.long)
        return
    tracks = track_faces(result.faces["frame_index"], result.faces["boxes"], settings)
    for track, at_s in breaks:
        tracks = split_track(tracks, result.faces["pts_s"], track, at_s)
    result.faces["track"] = tracks


def analyze_video(path: str | Path, models: FaceModels, interval: float = 0.5, **kwargs: Any) -> VideoFaces:
    """Faces stage for a whole video file, tracks included (no manual breaks); for use from Python."""
    result = analyze_batches(decode.sample_frames(path, interval, str(models.detector.device)), models, **kwargs)
    assign_tracks(result)
    return result
