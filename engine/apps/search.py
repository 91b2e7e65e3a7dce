"""Reference-person search (the seed ``face-tracking``): every appearance of one person as a clip, plus metadata.

Per video, one pass (:func:`engine.apps.scan.scan_frames`) gives shot cuts on every frame and faces on a grid of
``interval`` seconds. Faces are tracked inside shots, and a track is the reference person when its median
distance to the reference photo's descriptor is under ``threshold`` (dlib's 0.6 by default). Matched samples
form one *appearance* while they stay in one shot and no more than ``max_gap_s`` apart; each appearance becomes
an MP4 clip re-encoded with its audio (the seed dropped audio), padded by half a sampling
interval on both sides but never across a cut.

The metadata JSON keeps the seed's shape (a list of clips, each with ``file_name``, ``timestamp_start``,
``timestamp_end`` and per-frame ``face_clips`` boxes ``x, y, w, h``) and adds what the seed lacked: the frame and
time of each box, its distance to the reference, per-clip scores and the shot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from engine.apps.people import DEFAULT_MATCH_DISTANCE, People, distances, reference_embedding
from engine.apps.scan import scan_frames, stride_for
from engine.shots import ShotSettings, shot_ids
from engine.config import FaceSettings, resolve_device
from engine.faces.batching import FaceModels
from engine.media import DecodeError, cut_clip
from engine.track import TrackerSettings, track_faces

Log = Callable[[str], None]


@dataclass(frozen=True)
class SearchSettings:
    """``interval``: seconds between searched frames (0.2 s: clip edges within 0.1 s). ``max_gap_s``: a clip ends
    when the person is missing longer than this (a turned head, a cutaway shorter than a shot)."""

    interval: float = 0.2
    threshold: float = DEFAULT_MATCH_DISTANCE
    max_gap_s: float = 1.0
    clips: bool = True
    faces: FaceSettings = field(default_factory=FaceSettings)
    shots: ShotSettings = field(default_factory=ShotSettings)


@dataclass(frozen=True)
class Reference:
    path: str
    embedding: torch.Tensor  # [128] on the models' device
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


def matched_faces(
    frame: torch.Tensor,
    boxes: torch.Tensor,
    embeddings: torch.Tensor,
    distance: torch.Tensor,
    cuts: torch.Tensor,
    stride: int,
    settings: SearchSettings,
) -> torch.Tensor:
    """Indices of the faces that are the reference person, at most one per frame, in frame order.

    Decided per *track*, not per face: faces are tracked inside shots (with the appearance gate), and a track is
    the person when its median distance to the reference is under the threshold. One blurred or turned face of
    the person is kept with its track; one lucky face of someone else (a single 0.59 in a track at 0.7) is not.
    """
    tracker = TrackerSettings(max_gap=2 * stride, one_face_rule=False)
    track = track_faces(frame, boxes, tracker, segment=shot_ids(frame, cuts), embeddings=embeddings)
    n = int(track.max()) + 1
    median = torch.stack([distance[track == t].median() for t in range(n)])
    keep = (median[track] <= settings.threshold).nonzero().flatten()
    # Two accepted faces in one frame (rare): the nearer one.
    order = keep[torch.argsort(frame[keep].double() * 1e3 + distance[keep].double(), stable=True)]
    first = torch.ones(len(order), dtype=torch.bool)
    first[1:] = frame[order][1:] != frame[order][:-1]
    return order[first]


def search_video(
    models: FaceModels, reference: Reference, settings: SearchSettings, out: str | Path, video: str | Path
) -> dict[str, Any]:
    """Find the reference person in one video; write its clips and ``<stem>.json`` under ``out``."""
    out, video = Path(out), Path(video)
    from engine.media import probe

    info = probe(video)
    fps = info.video.fps
    stride = stride_for(settings.interval, fps)
    scan = scan_frames(video, models, stride=stride, shot_settings=settings.shots, media=info)
    cuts = scan.cuts(settings.shots, 0, scan.stop)
    frame_pts = scan.pts_s
    cut_times = frame_pts[cuts].tolist()
    faces = scan.faces.faces
    sampled = int(((torch.arange(scan.first, scan.stop) % stride) == 0).sum())
    clips: list[dict[str, Any]] = []
    matched = 0
    if len(scan.faces):
        d = distances(faces.embedding, reference.as_people())[:, 0].cpu()
        frame = faces.frame_index
        best = matched_faces(frame, faces.boxes, faces.embedding, d, cuts, stride, settings)
        matched = len(best)
        times = faces.pts_s[best]
        shot = shot_ids(frame[best], cuts)
        half = settings.interval / 2
        for k, (a, b) in enumerate(appearances(times, shot, settings.max_gap_s)):
            rows = best[a : b + 1]
            s = int(shot[a])
            shot_start = cut_times[s - 1] if s > 0 else float(frame_pts[0])
            shot_end = cut_times[s] if s < len(cut_times) else info.video.end_s
            start = max(shot_start, float(times[a]) - half)
            end = min(shot_end, float(times[b]) + half + info.video.frame_duration_s)
            name = f"{video.stem}_{k:03d}.mp4"
            dist = d[rows]
            clip = dict(
                file_name=f"clips/{name}",
                timestamp_start=round(start, 4),
                timestamp_end=round(end, 4),
                shot=s,
                samples=len(rows),
                best_distance=round(float(dist.min()), 4),
                mean_distance=round(float(dist.mean()), 4),
                score=round(float(1 - dist.mean()), 4),
                face_clips=[
                    dict(
                        frame=int(f), time_s=round(float(t), 4), x=round(float(x1)), y=round(float(y1)),
                        w=round(float(x2 - x1)), h=round(float(y2 - y1)), distance=round(float(e), 4),
                    )
                    for f, t, (x1, y1, x2, y2), e in zip(
                        frame[rows], faces.pts_s[rows], faces.boxes[rows], dist, strict=True
                    )
                ],
            )  # fmt: skip
            if settings.clips:
                cut_clip(video, out / "clips" / name, start, end)
            clips.append(clip)
    meta = dict(
        video=str(video),
        reference=reference.path,
        threshold=settings.threshold,
        interval_s=settings.interval,
        frames_sampled=sampled,
        frames_matched=matched,
        has_audio=info.has_audio,
        scene_changes=[round(t, 4) for t in cut_times],
        clips=clips,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{video.stem}.json").write_text(json.dumps(meta, indent=1))
    return meta


def _setup(device: str, settings: SearchSettings, reference: str) -> tuple[FaceModels, Reference]:
    models = FaceModels.load(resolve_device(device, "worker"), settings.faces)
    return models, load_reference(reference, models)


def _work(settings: SearchSettings, out: str, state: tuple[FaceModels, Reference], video: str) -> dict[str, Any]:
    models, reference = state
    try:
        return search_video(models, reference, settings, out, video)
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
) -> list[dict[str, Any]]:
    """``search --reference IMAGE VIDEO...``: one metadata JSON per video, one clip per appearance.

    Each worker reads the reference before any video (a photo without a face fails at once, with
    ``PeopleError``). A video that cannot be decoded gets an ``error`` entry and the others go on.
    """
    settings = settings or SearchSettings()
    if executor is None:
        from engine.pipeline.executor import get_executor

        executor = get_executor("local")
    results = []
    for meta in executor.map(
        partial(_setup, device, settings, str(reference)),
        partial(_work, settings, str(out)),
        [str(v) for v in videos],
        gpu=True,
    ):
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
