"""Reference-person search (the seed ``face-tracking``): every appearance of one person as a clip, plus metadata.

Per video, one pass (:func:`engine.apps.scan.scan_frames`) gives shot cuts on every frame and faces on a grid of
``interval`` seconds. Faces are tracked inside shots (with the embedder's appearance gate), and whether a track is
the reference person is decided per track by :func:`engine.apps.identify.identify`: its median distance to the
reference under the embedder's threshold *and* clearly below the reference's distances to the run's other tracks
(a look-alike is near the photo too, but no nearer than the crowd). Matched samples form one *appearance* while
they stay in one shot and no more than ``max_gap_s`` apart. An appearance spans whole frames (frame numbers, never
times), padded by half a sampling interval but never past its shot, so no clip shows a frame of another shot at
any frame rate. It becomes ``clips/<stem>/saved_file_N.mp4``: a face-crop clip like the seed's (``clip_kind``
``"face"``, the default) or the full frames re-encoded with their audio (``"frame"``).

Per video, ``<stem>-metadata.json`` is the seed's own format (a list of ``{file_name, face_clips, timestamp_start,
timestamp_end}``, one ``x, y, w, h`` box per frame of the clip), and the sidecar ``<stem>.json`` adds what the seed
lacked: the frame, time and track of each sampled box, its distance to the reference, scores, the shot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from engine.apps.boxes import frame_boxes, smooth
from engine.apps.identify import Identification, Rule, TrackMatch, identify, rule_for, track_distances
from engine.apps.people import People, distances, reference_embedding
from engine.apps.scan import Scan, frame_ticker, scan_frames, stride_for
from engine.config import FaceSettings, resolve_device
from engine.faces.batching import FaceModels
from engine.media import DecodeError, MediaInfo, cut_clip, encode_face_clip, probe
from engine.shots import PICTURE_SHOTS, ShotSettings, shot_ids
from engine.track import TrackerSettings, track_faces
from engine.types import Tick

Log = Callable[[str], None]

#: What a clip shows: the face, cropped and followed (the seed's), or the full frames with the audio.
CLIP_KINDS = ("face", "frame")


@dataclass(frozen=True)
class SearchSettings:
    """``interval``: seconds between searched frames (0.2 s: clip edges within 0.1 s). ``max_gap_s``: a clip ends
    when the person is missing longer than this (a turned head, a cutaway shorter than a shot). ``threshold``: the
    largest robust track distance that may match (``None``: the embedder's, :data:`engine.apps.identify.RULES`);
    ``faces.embedder`` chooses the descriptor network. ``clip_kind``: ``"face"`` (the seed's face-crop clips,
    ``face_size`` pixels square, no audio) or ``"frame"`` (full frames with audio)."""

    interval: float = 0.2
    threshold: float | None = None
    max_gap_s: float = 1.0
    clips: bool = True
    clip_kind: str = "face"
    face_size: int = 256
    faces: FaceSettings = field(default_factory=FaceSettings)
    shots: ShotSettings = PICTURE_SHOTS

    def __post_init__(self) -> None:
        if self.clip_kind not in CLIP_KINDS:
            raise ValueError(f"clip kind must be one of {', '.join(CLIP_KINDS)} (got {self.clip_kind!r})")

    @property
    def rule(self) -> Rule:
        return rule_for(self.faces.embedder, self.threshold)


@dataclass(frozen=True)
class Reference:
    path: str
    embedding: torch.Tensor  # [D] on the models' device
    box: list[float]

    def as_people(self) -> People:
        return People([Path(self.path).stem], [self.path], self.embedding[None])


def load_reference(path: str | Path, models: FaceModels) -> Reference:
    """The reference photo's largest face (``PeopleError`` when it has none)."""
    embedding, box = reference_embedding(path, models)
    return Reference(str(path), embedding, box)


def appearances(times: torch.Tensor, shots: torch.Tensor, max_gap_s: float) -> list[tuple[int, int]]:
    """``(first, last)`` index ranges of matched samples (sorted by time) forming one appearance each."""
    if len(times) == 0:
        return []
    brk = torch.ones(len(times), dtype=torch.bool)
    brk[1:] = (shots[1:] != shots[:-1]) | ((times[1:] - times[:-1]) > max_gap_s + 1e-6)
    starts = brk.nonzero().flatten().tolist()
    ends = [s - 1 for s in starts[1:]] + [len(times) - 1]
    return list(zip(starts, ends, strict=True))


@dataclass
class VideoScan:
    """One pass over a video (:func:`scan_video`): its probe, the face sampling stride, the scan and its shot cuts
    (frame numbers). Everything a search needs, for any number of references."""

    video: Path
    info: MediaInfo
    stride: int
    scan: Scan
    cuts: torch.Tensor


def scan_video(
    models: FaceModels, settings: SearchSettings, video: str | Path, on_frames: Callable[[int], None] | None = None
) -> VideoScan:
    """Decode ``video`` once: shot cuts on every frame, faces every ``settings.interval`` seconds."""
    video = Path(video)
    info = probe(video)
    stride = stride_for(settings.interval, info.video.fps)
    scan = scan_frames(video, models, stride=stride, shot_settings=settings.shots, media=info, on_frames=on_frames)
    return VideoScan(video, info, stride, scan, scan.cuts(settings.shots, 0, scan.stop))


def scan_tracks(vs: VideoScan, embedder: str) -> torch.Tensor:
    """Track ids ``[F]`` of the scan's faces: inside shots, with the embedder's appearance gate."""
    faces = vs.scan.faces.faces
    tracker = TrackerSettings.for_embedder(embedder, max_gap=2 * vs.stride, one_face_rule=False)
    segment = shot_ids(faces.frame_index, vs.cuts)
    return track_faces(faces.frame_index, faces.boxes, tracker, segment=segment, embeddings=faces.embedding)


@dataclass
class Found:
    """Where a reference is in a scan: every face's ``track`` and ``distance`` to the reference, the per-track
    decisions, and ``faces``: the matched faces' indices, at most one per frame, in frame order."""

    track: torch.Tensor  # int64 [F]
    distance: torch.Tensor  # float [F]
    decisions: Identification
    faces: torch.Tensor  # int64 [M]

    def decision(self, face: int) -> TrackMatch:
        return self.decisions.decisions[int(self.track[face])][0]


def find_reference(vs: VideoScan, reference: Reference, rule: Rule, embedder: str) -> Found:
    """Decide per track whether it is the reference person (:func:`engine.apps.identify.identify`), the run's
    tracks being the cohort; one lucky face of someone else does not make a match, one blurred face of the person
    does not break one."""
    faces = vs.scan.faces.faces
    if len(faces) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return Found(empty, torch.zeros(0), Identification([Path(reference.path).stem], []), empty)
    d = distances(faces.embedding, reference.as_people()).cpu()
    track = scan_tracks(vs, embedder)
    decided = identify(track_distances(d, track, rule.quantile), [Path(reference.path).stem], rule)
    ok = torch.tensor([row[0].match for row in decided.decisions])
    keep = ok[track].nonzero().flatten()
    frame, dist = faces.frame_index, d[:, 0]
    # Two accepted faces in one frame (rare): the nearer one.
    order = keep[torch.argsort(frame[keep].double() * 1e3 + dist[keep].double(), stable=True)]
    first = torch.ones(len(order), dtype=torch.bool)
    first[1:] = frame[order][1:] != frame[order][:-1]
    return Found(track, dist, decided, order[first])


@dataclass(frozen=True)
class Span:
    """One appearance's frames ``first .. last`` (frame numbers, both in ``shot``) and times: ``start`` the first
    frame's pts, ``end`` the pts of the frame after the last (the shot's cut when the clip runs to it), and
    ``cut_start`` (1 ms before the first frame: an encoder's frame grid stays aligned) / ``cut_end`` (half-way to
    the next frame), the times a cut of the file selects exactly these frames with (no rounding pulls in a
    neighbour)."""

    shot: int
    first: int
    last: int
    start: float
    end: float
    last_pts: float
    cut_start: float
    cut_end: float


def clip_span(vs: VideoScan, shot: int, first_sample: int, last_sample: int, pad: int) -> Span:
    """The frames of an appearance whose matched samples are frames ``first_sample .. last_sample`` in ``shot``:
    ``pad`` frames more on each side, but never outside the shot (so never across a cut, at any frame rate)."""
    scan = vs.scan
    bounds = [scan.first, *vs.cuts.tolist(), scan.stop]
    first = max(bounds[shot], first_sample - pad)
    last = min(bounds[shot + 1] - 1, last_sample + pad)
    pts = scan.pts_s.tolist()
    frame_s = vs.info.video.frame_duration_s

    def t(f: int) -> float:
        return pts[f - scan.first]

    before = t(first) - t(first - 1) if first > scan.first else frame_s
    end = t(last + 1) if last + 1 < scan.stop else max(vs.info.video.end_s, t(last) + frame_s)
    return Span(shot, first, last, t(first), end, t(last), t(first) - min(before / 2, 1e-3), (t(last) + end) / 2)


def clip_boxes(clip: dict[str, Any]) -> torch.Tensor:
    """A sidecar clip's box on every one of its frames, ``[x1, y1, x2, y2]`` float ``[N, 4]`` (see
    :func:`frame_boxes`)."""
    fc = clip["face_clips"]
    frames = torch.tensor([f["frame"] for f in fc])
    boxes = torch.tensor([[f["x"], f["y"], f["x"] + f["w"], f["y"] + f["h"]] for f in fc], dtype=torch.float64)
    return frame_boxes(frames, boxes, clip["first_frame"], clip["last_frame"])


def _clip(vs: VideoScan, found: Found, rows: torch.Tensor, span: Span, name: str) -> dict:
    """One clip's sidecar entry: where it is, the scores, the decision of its least certain track, the samples."""
    faces = vs.scan.faces.faces
    dist = found.distance[rows]
    weakest = min((found.decision(int(i)) for i in rows), key=lambda m: m.confidence)
    numbers = weakest.as_dict()
    return dict(
        file_name=name,
        timestamp_start=round(span.start, 4),
        timestamp_end=round(span.end, 4),
        first_frame=span.first,
        last_frame=span.last,
        last_frame_s=round(span.last_pts, 4),
        shot=span.shot,
        samples=len(rows),
        best_distance=round(float(dist.min()), 4),
        mean_distance=round(float(dist.mean()), 4),
        score=round(float(1 - dist.mean()), 4),
        confidence=numbers["confidence"],
        track_distance=numbers["distance"],
        cohort_median=numbers["cohort_median"],
        cohort_spread=numbers["cohort_spread"],
        z=numbers["z"],
        lead=numbers["lead"],
        margin=numbers["margin"],
        tracks=sorted({int(found.track[i]) for i in rows}),
        face_clips=[
            dict(
                frame=int(f), time_s=round(float(t), 4), x=round(float(x1)), y=round(float(y1)),
                w=round(float(x2 - x1)), h=round(float(y2 - y1)), distance=round(float(e), 4), track=int(k),
            )
            for f, t, (x1, y1, x2, y2), e, k in zip(
                faces.frame_index[rows], faces.pts_s[rows], faces.boxes[rows], dist, found.track[rows], strict=True
            )
        ],
    )  # fmt: skip


def write_clip(video: Path, dst: Path, clip: dict[str, Any], span: Span, settings: SearchSettings, stride: int) -> None:
    """Encode one clip of ``settings.clip_kind``: the face followed (crop steadied over one sampling interval) or
    the full frames with audio, cut half-way between frames so exactly ``span``'s frames are in it."""
    if settings.clip_kind == "face":
        boxes = smooth(clip_boxes(clip), stride | 1)
        encode_face_clip(video, dst, span.first, boxes, size=settings.face_size)
    else:
        cut_clip(video, dst, span.cut_start, span.cut_end)


def search_scan(vs: VideoScan, reference: Reference, settings: SearchSettings, out: str | Path) -> dict[str, Any]:
    """The reference person in one scanned video: the sidecar metadata (and, with ``settings.clips``, the clips
    under ``out``); nothing is written but the clips."""
    scan, info, out = vs.scan, vs.info, Path(out)
    embedder, rule = settings.faces.embedder, settings.rule
    found = find_reference(vs, reference, rule, embedder)
    faces = scan.faces.faces
    clips: list[dict[str, Any]] = []
    best = found.faces
    frames = faces.frame_index[best]
    shot = shot_ids(frames, vs.cuts)
    for k, (a, b) in enumerate(appearances(faces.pts_s[best], shot, settings.max_gap_s), start=1):
        span = clip_span(vs, int(shot[a]), int(frames[a]), int(frames[b]), vs.stride // 2)
        name = f"clips/{vs.video.stem}/saved_file_{k}.mp4"
        clips.append(_clip(vs, found, best[a : b + 1], span, name))
        if settings.clips:
            write_clip(vs.video, out / name, clips[-1], span, settings, vs.stride)
    return dict(
        video=str(vs.video),
        reference=reference.path,
        embedder=embedder,
        threshold=rule.threshold,
        interval_s=settings.interval,
        clip_kind=settings.clip_kind,
        frames_sampled=int(((torch.arange(scan.first, scan.stop) % vs.stride) == 0).sum()),
        frames_matched=len(best),
        tracks=len(found.decisions.decisions),
        has_audio=info.has_audio,
        scene_changes=[round(t, 4) for t in scan.pts_s[vs.cuts].tolist()],
        clips=clips,
    )


def seed_metadata(meta: dict[str, Any], out: str | Path, size: tuple[int, int] | None = None) -> list[dict]:
    """The seed ``face-tracking``'s metadata for a sidecar ``meta``: a list with, per clip and in the seed's key
    order, ``file_name`` (the clip's absolute path, as the seed wrote it), ``face_clips`` (one ``{x, y, w, h}`` of
    ints per frame of the clip, interpolated between the sampled boxes, clipped to the ``size = (width, height)``
    picture) and ``timestamp_start`` / ``timestamp_end`` (the pts of the clip's first and last frames)."""
    out = Path(out).resolve()
    entries = []
    for clip in meta["clips"]:
        boxes = clip_boxes(clip).round()
        if size is not None:
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, size[0])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, size[1])
        boxes = boxes.long().tolist()
        entries.append(
            dict(
                file_name=str(out / clip["file_name"]),
                face_clips=[dict(x=x1, y=y1, w=x2 - x1, h=y2 - y1) for x1, y1, x2, y2 in boxes],
                timestamp_start=clip["timestamp_start"],
                timestamp_end=clip["last_frame_s"],
            )
        )
    return entries


def search_video(
    models: FaceModels,
    reference: Reference,
    settings: SearchSettings,
    out: str | Path,
    video: str | Path,
    on_frames: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Find the reference person in one video; write its clips, ``<stem>-metadata.json`` (the seed's format) and
    the sidecar ``<stem>.json`` under ``out``."""
    out, stem = Path(out), Path(video).stem
    vs = scan_video(models, settings, video, on_frames)
    meta = search_scan(vs, reference, settings, out)
    out.mkdir(parents=True, exist_ok=True)
    seed = seed_metadata(meta, out, (vs.info.video.width, vs.info.video.height))
    (out / f"{stem}-metadata.json").write_text(json.dumps(seed, indent=4))
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=1))
    return meta


def _setup(device: str, settings: SearchSettings, reference: str) -> tuple[FaceModels, Reference]:
    models = FaceModels.load(resolve_device(device, "worker"), settings.faces)
    return models, load_reference(reference, models)


def _work(
    settings: SearchSettings,
    out: str,
    state: tuple[FaceModels, Reference],
    video: str,
    on_frames: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    models, reference = state
    try:
        return search_video(models, reference, settings, out, video, on_frames)
    except DecodeError as exc:
        return dict(video=video, error=str(exc), clips=[])


def search(
    reference: str | Path,
    videos: Sequence[str | Path],
    out: str | Path,
    *,
    settings: SearchSettings | None = None,
    device: str = "cpu",
    executor: Any = None,
    log: Log = print,
    progress: Tick | None = None,
) -> list[dict[str, Any]]:
    """``search --reference IMAGE VIDEO...``: one metadata JSON per video, one clip per appearance (``progress``:
    videos done and, in this process, frames decoded).

    Each worker reads the reference before any video (a photo without a face fails at once, with
    ``PeopleError``). A video that cannot be decoded gets an ``error`` entry and the others go on.
    """
    settings = settings or SearchSettings()
    if executor is None:
        from engine.pipeline.executor import get_executor

        executor = get_executor("local")
    results = []
    if progress is not None:
        progress("videos", 0, len(videos))  # the bar shows from the start
    for meta in executor.map(
        partial(_setup, device, settings, str(reference)),
        partial(_work, settings, str(out), on_frames=frame_ticker(progress, executor, None)),
        [str(v) for v in videos],
        gpu=True,
    ):
        if progress is not None:
            progress("videos", 1, len(videos))
        if "error" in meta:
            log(f"error  {meta['video']}: {meta['error']}")
        else:
            log(
                f"{Path(meta['video']).name}: found in {meta['frames_matched']} of {meta['frames_sampled']} sampled "
                f"frames, {len(meta['clips'])} clip(s)"
            )
        results.append(meta)
    order = {str(v): i for i, v in enumerate(videos)}
    return sorted(results, key=lambda m: order.get(m["video"], 0))
