"""Videos' faces: sampled frames → detections (rotate-and-retry) → chips → descriptors, crops, hashes → tracks.

Everything between decode and the end of a batch stays on the run's device: detection, alignment, embedding,
JPEG encoding of the crops (nvJPEG on CUDA) and their PHash. Each batch then crosses to the host once, as the small
tensors the tables need; tracking (a few hundred boxes, sequential over frames) runs there. One piece of code,
``FaceBatcher``, does this for one video's batches (``analyze_batches``) and for a stream of videos whose frames are
packed into model batches together (the streaming pipeline).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from engine import media
from engine.config import FaceSettings
from engine.dedup import phash
from engine.faces.align import align_chips
from engine.faces.detect import FaceDetector
from engine.faces.embedders import Embedder, load_embedder
from engine.faces.orientation import Orientation, OrientationPlan
from engine.faces.picture import Box, Picture
from engine.faces.quality import quality_of
from engine.inference.weights import resolve as resolve_weights
from engine.shots import SAMPLED_SHOTS, ShotScorer
from engine.types import QUALITY_COLUMNS, Faces, Frames, VideoFaces

ROTATIONS_TRIED = [0, 90, 270]
Timer = Callable[[str], AbstractContextManager[None]]
K = TypeVar("K")


@dataclass
class FaceModels:
    """The detector and embedder of a run, loaded once on its device (the embedder named by ``settings.embedder``)."""

    detector: FaceDetector
    embedder: Embedder
    settings: FaceSettings = field(default_factory=FaceSettings)

    @classmethod
    def load(
        cls, device: str, settings: FaceSettings | None = None, precision: str = "auto", mirror: Path | None = None
    ) -> FaceModels:
        """Both networks on ``device``: fp16 on a GPU, fp32 on a CPU (through ONNX Runtime where installed) by
        default; see ``engine.inference.precision`` and ``engine.inference.backends``. Their weights are resolved
        with ``mirror`` (``Settings.weights_mirror``; ``None``: ``ENGINE_WEIGHTS_MIRROR``, see
        ``engine.inference.weights``)."""
        settings = settings or FaceSettings()
        return cls(
            FaceDetector(resolve_weights("retinaface_mnet025", mirror), device=device, precision=precision),
            load_embedder(settings.embedder, device, precision, mirror),
            settings,
        )


def _rank_within(image: torch.Tensor) -> torch.Tensor:
    """Position of each face among the faces of its frame (faces come grouped by frame)."""
    if image.numel() == 0:
        return image.clone()
    change = torch.ones_like(image, dtype=torch.bool)
    change[1:] = image[1:] != image[:-1]
    starts = torch.arange(len(image), device=image.device)[change]
    first = starts[torch.cumsum(change.long(), 0) - 1]
    return torch.arange(len(image), device=image.device) - first


def _no_timer(_stage: str) -> AbstractContextManager[None]:
    return nullcontext()


def _slice(batch: media.FrameBatch, lo: int, hi: int) -> media.FrameBatch:
    """Frames ``[lo, hi)`` of a batch (views, nothing copied)."""
    return media.FrameBatch(batch.frames[lo:hi], batch.index[lo:hi], batch.target_s[lo:hi], batch.pts_s[lo:hi])


@dataclass
class _Collected:
    """One video's results so far, on the host, while its frames go through the models (possibly packed with
    other videos' frames)."""

    frames: list[Frames] = field(default_factory=list)
    faces: list[Faces] = field(default_factory=list)
    noface: list[torch.Tensor] = field(default_factory=list)
    frame_jpegs: dict[int, bytes] = field(default_factory=dict)
    kept: list[torch.Tensor] = field(default_factory=list)
    #: Picture change between successive sampled frames, scored as the tracker's cut rule reads it.
    scorer: ShotScorer = field(default_factory=lambda: ShotScorer(SAMPLED_SHOTS))
    orientation: Orientation = field(default_factory=Orientation)  # which frames with no face are retried rotated
    picture: Picture = field(default_factory=Picture)  # the picture inside the video's black bars
    waiting: int = 0  # frames handed in, not through the models yet
    ended: bool = False

    def result(self) -> VideoFaces:
        out = VideoFaces(frame_jpegs=self.frame_jpegs)
        if self.frames:
            out.frames, out.faces = Frames.cat(self.frames), Faces.cat(self.faces)
            out.noface_frames = torch.cat(self.noface)
        if self.kept:
            out.sampled = torch.cat(self.kept)
        return out


class FaceBatcher(Generic[K]):
    """The faces stage over the frames of one video or of many, batched for the models.

    Frames are handed in as ``add(video, batch)`` and ``end(video)`` closes a video; each call returns the videos
    completed by it, ``(video, VideoFaces)`` in the order they ended, as soon as their last frame has been through
    the models. With ``batch_frames=None`` every batch handed in is one model batch, as it comes (one video's decode
    chunks: :func:`analyze_batches`). With ``batch_frames=N`` frames are run in model batches of N: with ``pack``,
    frames of consecutive videos share batches (a batch ends early only where the frame size changes, or at
    :meth:`finish`), so a stream of short videos still fills the detector and the embedder; without, each video's
    frames make their own batches, N at a time from its first frame, exactly as :func:`analyze_batches` over that
    video's decode chunks of N.

    Packing changes which frames (and faces) share a network call, and the networks' kernels sum in an order that
    can depend on that (on a CPU: descriptors move by ~3e-7, boxes by ~1e-4 px when a frame is alone in its call),
    so packed results equal one-video batches within float tolerance, not bit for bit; alignment, crops and PHash
    are per face and do not move at all.

    Everything between the frames and the end of a batch stays on the models' device: detection (rotated retries
    decided per video: ``engine.faces.orientation``),
    alignment, embedding, the crops' JPEG (nvJPEG on CUDA) and PHash. Each batch then crosses to the host once, as
    the small tensors the tables need, and is split between its videos with one slice per video, never per frame.
    """

    def __init__(
        self,
        models: FaceModels,
        *,
        batch_frames: int | None = None,
        pack: bool = True,
        timer: Timer | None = None,
        keep_frames: bool = False,
        frame_jpegs: bool = False,
        crops: bool = True,
    ) -> None:
        if batch_frames is not None and batch_frames < 1:
            raise ValueError(f"batch_frames must be at least 1 (got {batch_frames})")
        self.models = models
        self.batch_frames, self.pack = batch_frames, pack
        self.timer = timer or _no_timer
        self.keep_frames, self.frame_jpegs, self.crops = keep_frames, frame_jpegs, crops
        self._videos: dict[K, _Collected] = {}  # in the order videos were first seen
        self._pending: deque[tuple[K, media.FrameBatch, Box | None]] = deque()  # with the box to detect in
        self._pending_frames = 0

    def add(self, video: K, batch: media.FrameBatch) -> list[tuple[K, VideoFaces]]:
        """Hand in some of ``video``'s frames; runs the models on every batch that is full."""
        collected = self._videos.setdefault(video, _Collected())
        if collected.ended:
            raise ValueError(f"frames added to video {video!r} after its end")
        if len(batch) == 0:
            return []
        cfg = self.models.settings  # a crop gains only where the frame is scaled down for the detector
        scaled = cfg.long_side > 0 and max(batch.frames.shape[-2:]) > cfg.long_side
        box = collected.picture.update(batch.frames) if cfg.crop_bars and scaled else None
        if self._pending and (
            self._pending[0][1].frames.shape[-2:] != batch.frames.shape[-2:]  # a model batch holds one frame size
            or self._pending[0][2] != box  # ... and one picture box
            or (not self.pack and self._pending[0][0] != video)
        ):
            self._run_pending()
        collected.waiting += len(batch)
        self._pending.append((video, batch, box))
        self._pending_frames += len(batch)
        while self._pending and (self.batch_frames is None or self._pending_frames >= self.batch_frames):
            self._run_pending(self.batch_frames)
        return self._completed()

    def end(self, video: K) -> list[tuple[K, VideoFaces]]:
        """No more frames for ``video``: it completes once its frames still waiting have been through the models
        (at once without ``pack``: no other video's frames may join them)."""
        self._videos.setdefault(video, _Collected()).ended = True
        if not self.pack:
            while self._pending and self._pending[0][0] == video:
                self._run_pending(self.batch_frames)
        return self._completed()

    def drop(self, video: K) -> list[tuple[K, VideoFaces]]:
        """Forget ``video`` (its decoding failed): its frames not yet run are taken out, its results discarded."""
        self._pending = deque(p for p in self._pending if p[0] != video)
        self._pending_frames = sum(len(b) for _, b, _ in self._pending)
        self._videos.pop(video, None)
        return self._completed()

    def finish(self) -> list[tuple[K, VideoFaces]]:
        """Run the frames still waiting (the end of the stream); returns every video completed."""
        while self._pending:
            self._run_pending()
        return self._completed()

    def _completed(self) -> list[tuple[K, VideoFaces]]:
        done = [v for v, c in self._videos.items() if c.ended and c.waiting == 0]
        return [(v, self._videos.pop(v).result()) for v in done]

    def _run_pending(self, limit: int | None = None) -> None:
        """Run the first ``limit`` waiting frames (all when None) of one size as one model batch."""
        first, head, box = self._pending[0]
        size = head.frames.shape[-2:]
        pieces: list[tuple[K, media.FrameBatch]] = []
        n = 0
        while (
            self._pending
            and self._pending[0][1].frames.shape[-2:] == size
            and self._pending[0][2] == box
            and (self.pack or self._pending[0][0] == first)
            and (limit is None or n < limit)
        ):
            video, batch, _ = self._pending.popleft()
            if limit is not None and n + len(batch) > limit:
                batch, rest = _slice(batch, 0, limit - n), _slice(batch, limit - n, len(batch))
                self._pending.appendleft((video, rest, box))
            pieces.append((video, batch))
            n += len(batch)
        self._pending_frames -= n
        self._run(pieces, box)

    def _run(self, pieces: list[tuple[K, media.FrameBatch]], box: Box | None = None) -> None:
        timer, cfg, models = self.timer, self.models.settings, self.models
        if len(pieces) == 1:
            frames = pieces[0][1].frames
        else:  # one tensor; the pieces become views of it, so the decoder's tensors can go now
            frames = torch.cat([b.frames for _, b in pieces])
            ends = torch.tensor([len(b) for _, b in pieces]).cumsum(0).tolist()
            starts = [0, *ends[:-1]]
            pieces = [(v, replace(b, frames=frames[a:z])) for (v, b), a, z in zip(pieces, starts, ends, strict=True)]
        h, w = int(frames.shape[-2]), int(frames.shape[-1])
        seen = frames if box is None else box.crop(frames)  # the detector sees the picture inside the bars
        scale = 1.0 if cfg.long_side == 0 else min(1.0, cfg.long_side / max(seen.shape[-2:]))
        with timer("detect"):
            if cfg.rotate:  # each video's orientation decides which frames with no face are retried rotated
                plan = OrientationPlan([self._orientation(v) for v, _ in pieces], [len(b) for _, b in pieces])
                det = models.detector.detect_with_rotation(seen, scale, cfg.threshold, plan)
            else:
                det = models.detector.detect(seen, scale, cfg.threshold)
            det = det if box is None else det.shifted(box.left, box.top)  # back to the frame's pixels
        with timer("embed"):
            frames_e, det_e = frames.to(models.embedder.device), det.to(models.embedder.device)
            chips = align_chips(frames_e, det_e)
            embedding, magnitude = models.embedder.embed_faces(frames_e, det_e, chips)
            measured = quality_of(det_e, chips, magnitude)
            quality = torch.stack([getattr(measured, c).float() for c in QUALITY_COLUMNS], 1)
        crops: list[bytes] = []
        jpegs: list[bytes] = []
        with timer("crops"):
            chips8 = chips.clamp(0, 255).to(torch.uint8)
            hashes = phash(chips8) if self.crops else None
            if self.crops:
                crops = media.encode_jpegs(chips8, cfg.jpeg_quality)
            if self.frame_jpegs:
                jpegs = media.encode_jpegs(frames)
        # One trip to the host per model batch.
        image = det.image.cpu()
        lengths = [len(b) for _, b in pieces]
        index = torch.cat([b.index.cpu() for _, b in pieces])
        pts = torch.cat([b.pts_s.cpu() for _, b in pieces])
        faces = Faces(
            frame_index=index[image],
            face_index=_rank_within(image),
            pts_s=pts[image],
            boxes=det.boxes.cpu(),
            scores=det.scores.cpu(),
            landmarks=det.landmarks.cpu(),
            rotation=det.rotation.cpu(),
            embedding=embedding.float().cpu(),
            phash=None if hashes is None else hashes.cpu(),
            crops=crops,
            quality=quality.cpu(),
        )
        with timer("shots"):
            changes = [self._change(video, b.frames) for video, b in pieces]
        per_frame = torch.bincount(image, minlength=len(index))
        # Faces come grouped by frame, in frame order: each piece's faces are one slice.
        starts = [0, *torch.tensor(lengths).cumsum(0).tolist()]
        bounds = torch.searchsorted(image, torch.tensor(starts, dtype=image.dtype)).tolist()
        for j, (video, batch) in enumerate(pieces):
            collected = self._videos.get(video)
            if collected is None:  # dropped while its frames were in this batch
                continue
            f0, f1, lo, hi = bounds[j], bounds[j + 1], starts[j], starts[j + 1]
            collected.waiting -= len(batch)
            n = len(batch)
            collected.frames.append(
                Frames(
                    batch.index.cpu(),
                    batch.target_s.cpu(),
                    batch.pts_s.cpu(),
                    torch.full((n,), w, dtype=torch.int64),
                    torch.full((n,), h, dtype=torch.int64),
                    changes[j],
                )
            )
            collected.noface.append(index[lo:hi][per_frame[lo:hi] == 0])
            collected.faces.append(faces.select(slice(f0, f1)))
            if self.frame_jpegs:
                collected.frame_jpegs.update(zip(index[lo:hi].tolist(), jpegs[lo:hi], strict=True))
            if self.keep_frames:  # a copy when the batch is shared: a view would keep the other videos' frames
                collected.kept.append(batch.frames.to("cpu", copy=len(pieces) > 1))

    def _orientation(self, video: K) -> Orientation:
        """The video's orientation state (a throw-away one for a video dropped while its frames were pending)."""
        collected = self._videos.get(video)
        return collected.orientation if collected is not None else Orientation()

    def _change(self, video: K, frames: torch.Tensor) -> torch.Tensor:
        """Each frame's content change since the video's previous sampled frame (host float32 ``[N]``)."""
        collected = self._videos.get(video)
        if collected is None:
            return torch.zeros(len(frames))
        return collected.scorer.update(frames).cpu()


def analyze_batches(
    batches: Iterator[media.FrameBatch],
    models: FaceModels,
    *,
    timer: Timer | None = None,
    keep_frames: bool = False,
    frame_jpegs: bool = False,
    crops: bool = True,
) -> VideoFaces:
    """The faces stage over one video's sampled frame batches, each batch one model batch; tracks come after
    (:func:`assign_tracks`). The same code as the streaming pipeline's (:class:`FaceBatcher`), for one video.

    ``crops=False`` skips the JPEG crops and their PHash (film labelling needs descriptors, not images); the
    ``phash`` column is then absent.
    """
    timer = timer or _no_timer
    batcher: FaceBatcher[None] = FaceBatcher(
        models, timer=timer, keep_frames=keep_frames, frame_jpegs=frame_jpegs, crops=crops
    )
    while True:
        with timer("decode"):
            batch = next(batches, None)
        if batch is None:
            break
        batcher.add(None, batch)
    ((_, found),) = batcher.end(None)
    return found


def analyze_video(path: str | Path, models: FaceModels, interval: float = 0.5, **kwargs: Any) -> VideoFaces:
    """Faces stage for a whole video file; for use from Python (tracks: :func:`engine.track.track_video`)."""
    return analyze_batches(media.sample_frames(path, interval, str(models.detector.device)), models, **kwargs)
