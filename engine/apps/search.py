"""Reference-person search (the seed ``face-tracking``): every appearance of one person as a clip, plus metadata.

Per video, one pass (:func:`engine.apps.scan.scan_frames`) gives shot cuts on every frame and faces on a grid of
``interval`` seconds. Faces are tracked inside shots (with the embedder's appearance gate), and whether a track is
the reference person is decided per track by :func:`engine.apps.identify.identify`: its median distance to the
reference under the embedder's threshold *and* clearly below the reference's distances to the run's other tracks
(a look-alike is near the photo too, but no nearer than the crowd). Matched samples form one *appearance* while
they stay in one shot and no more than ``max_gap_s`` apart; each appearance becomes an MP4 clip re-encoded with its
audio (the seed dropped audio), padded by half a sampling interval on both sides but never across a cut.

The metadata JSON keeps the seed's shape (a list of clips, each with ``file_name``, ``timestamp_start``,
``timestamp_end`` and per-frame ``face_clips`` boxes ``x, y, w, h``) and adds what the seed lacked: the frame, time
and track of each box, its distance to the reference, per-clip scores, how sure the match is and the shot.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from engine.apps.identify import Identification, Rule, TrackMatch, identify, rule_for, track_distances
from engine.apps.people import People, distances, reference_embedding
from engine.apps.scan import Scan, scan_frames, stride_for
from engine.config import FaceSettings, resolve_device
from engine.faces.batching import FaceModels
from engine.media import DecodeError, MediaInfo, cut_clip, probe
from engine.shots import ShotSettings, shot_ids
from engine.track import TrackerSettings, track_faces

Log = Callable[[str], None]


@dataclass(frozen=True)
class SearchSettings:
    """``interval``: seconds between searched frames (0.2 s: clip edges within 0.1 s). ``max_gap_s``: a clip ends
    when the person is missing longer than this (a turned head, a cutaway shorter than a shot). ``threshold``: the
    largest robust track distance that may match (``None``: the embedder's, :data:`engine.apps.identify.RULES`);
    ``faces.embedder`` chooses the descriptor network."""

    interval: float = 0.2
    threshold: float | None = None
    max_gap_s: float = 1.0
    clips: bool = True
    faces: FaceSettings = field(default_factory=FaceSettings)
    shots: ShotSettings = field(default_factory=ShotSettings)

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


def scan_video(models: FaceModels, settings: SearchSettings, video: str | Path) -> VideoScan:
    """Decode ``video`` once: shot cuts on every frame, faces every ``settings.interval`` seconds."""
    video = Path(video)
    info = probe(video)
    stride = stride_for(settings.interval, info.video.fps)
    scan = scan_frames(video, models, stride=stride, shot_settings=settings.shots, media=info)
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


def _clip(vs: VideoScan, found: Found, rows: torch.Tensor, shot: int, span: tuple[float, float], name: str) -> dict:
    """One clip's metadata: the seed's keys, the scores, and the decision of its least certain track."""
    faces = vs.scan.faces.faces
    dist = found.distance[rows]
    weakest = min((found.decision(int(i)) for i in rows), key=lambda m: m.confidence)
    numbers = weakest.as_dict()
    return dict(
        file_name=f"clips/{name}",
        timestamp_start=round(span[0], 4),
        timestamp_end=round(span[1], 4),
        shot=shot,
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


def search_scan(vs: VideoScan, reference: Reference, settings: SearchSettings, out: str | Path) -> dict[str, Any]:
    """The reference person in one scanned video: the metadata (and, with ``settings.clips``, the clips under
    ``out``); nothing is written but the clips."""
    scan, info, out = vs.scan, vs.info, Path(out)
    embedder, rule = settings.faces.embedder, settings.rule
    cut_times = scan.pts_s[vs.cuts].tolist()
    found = find_reference(vs, reference, rule, embedder)
    faces = scan.faces.faces
    clips: list[dict[str, Any]] = []
    best = found.faces
    times = faces.pts_s[best]
    shot = shot_ids(faces.frame_index[best], vs.cuts)
    half = settings.interval / 2
    for k, (a, b) in enumerate(appearances(times, shot, settings.max_gap_s)):
        s = int(shot[a])
        shot_start = cut_times[s - 1] if s > 0 else float(scan.pts_s[0])
        shot_end = cut_times[s] if s < len(cut_times) else info.video.end_s
        start = max(shot_start, float(times[a]) - half)
        end = min(shot_end, float(times[b]) + half + info.video.frame_duration_s)
        name = f"{vs.video.stem}_{k:03d}.mp4"
        clips.append(_clip(vs, found, best[a : b + 1], s, (start, end), name))
        if settings.clips:
            cut_clip(vs.video, out / "clips" / name, start, end)
    return dict(
        video=str(vs.video),
        reference=reference.path,
        embedder=embedder,
        threshold=rule.threshold,
        interval_s=settings.interval,
        frames_sampled=int(((torch.arange(scan.first, scan.stop) % vs.stride) == 0).sum()),
        frames_matched=len(best),
        tracks=len(found.decisions.decisions),
        has_audio=info.has_audio,
        scene_changes=[round(t, 4) for t in cut_times],
        clips=clips,
    )


def search_video(
    models: FaceModels, reference: Reference, settings: SearchSettings, out: str | Path, video: str | Path
) -> dict[str, Any]:
    """Find the reference person in one video; write its clips and ``<stem>.json`` under ``out``."""
    out = Path(out)
    meta = search_scan(scan_video(models, settings, video), reference, settings, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{Path(video).stem}.json").write_text(json.dumps(meta, indent=1))
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
