"""The monitor's face side: the faces of one video, their tracks, who of the watch list each track is (the same
decision as reference search, :func:`engine.apps.identify.identify`), and the JSON an alert is announced with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine import media
from engine.apps.identify import Identification, Rule, identify, track_distances
from engine.apps.people import People, distances, person_distances
from engine.config import Settings
from engine.faces.batching import FaceModels, analyze_batches
from engine.track import TrackerSettings, track_video
from engine.types import VideoFaces


def faces_in_video(path: Path, settings: Settings, models: FaceModels) -> VideoFaces:
    """The faces stage on the video's frames sampled every ``sample_interval`` seconds."""
    return analyze_batches(
        media.sample_frames(path, settings.sample_interval, settings.device, mode=settings.sampling), models
    )


@dataclass(frozen=True)
class Match:
    """A watched person's nearest face in one video: ``index`` is its row in the faces stage's output."""

    person: str
    index: int
    distance: float
    time_s: float
    box: list[float]
    confidence: float = 0.0
    track: int = -1


@dataclass(frozen=True)
class Sighting:
    """Who of the watch list is in one video: ``matches`` (one per person found: the nearest face of their nearest
    matched track; ``distance`` is that track's robust distance, ``confidence`` the decision's), ``nearest`` (each
    watched person's nearest robust track distance, found or not) and the decisions behind them."""

    matches: list[Match]
    nearest: dict[str, float]
    decisions: Identification | None


def watched_people(found: VideoFaces, people: People, rule: Rule, embedder: str) -> Sighting:
    """Track the video's faces (with the embedder's appearance gate) and decide per track who of ``people`` it is:
    a watched person is present when one of their tracks matches."""
    faces, names = found.faces, people.unique_names
    if len(found) == 0 or len(people) == 0:
        return Sighting([], {}, None)
    d = person_distances(faces.embedding, people)  # [F, P]
    # Tracked as a challenge run tracks a video: appearance gate and no track across a shot cut.
    tracker = TrackerSettings.for_embedder(embedder)
    track = track_video(faces, (), tracker, frames=found.frames, appearance=True).of_face
    robust = track_distances(d, track, rule.quantile)  # [T, P]
    decided = identify(robust, names, rule)
    matches = []
    for p, person in enumerate(names):
        hits = sorted(decided.matches(person), key=lambda m: m.distance)
        if not hits:
            continue
        best = hits[0]
        rows = (track == best.track).nonzero().flatten()
        index = int(rows[d[rows, p].argmin()])
        matches.append(
            Match(
                person=person, index=index, distance=best.distance, time_s=float(faces.pts_s[index]),
                box=[round(float(v), 1) for v in faces.boxes[index].tolist()], confidence=best.confidence,
                track=best.track,
            )
        )  # fmt: skip
    nearest = {person: float(robust[:, p].min()) for p, person in enumerate(names)}
    return Sighting(matches, nearest, decided)


def nearest_faces(found: VideoFaces, people: People) -> list[Match]:
    """Each watched person's nearest face in the video (none when the video has no face at all).

    A person with several reference rows is as near as their nearest row (Euclidean, the run's embedder). The
    monitor decides with :func:`watched_people`; this is the per-face view, for inspection.
    """
    if len(found) == 0 or len(people) == 0:
        return []
    d = distances(found.faces.embedding, people)  # [F, R]
    row_names = people.names
    out = []
    for person in people.unique_names:
        columns = torch.tensor([i for i, n in enumerate(row_names) if n == person], device=d.device)
        per_face = d.index_select(1, columns).min(dim=1).values
        index = int(per_face.argmin())
        out.append(
            Match(
                person=person,
                index=index,
                distance=float(per_face[index]),
                time_s=float(found.faces.pts_s[index]),
                box=[round(float(v), 1) for v in found.faces.boxes[index].tolist()],
            )
        )
    return out


def alert_payload(alert: dict[str, Any]) -> dict[str, Any]:
    """The JSON an alert is announced with (stdout and webhook), built from its ``monitor_alerts`` row so that a
    retried delivery sends exactly what was printed. ``distance`` is the matched track's robust (median) distance to
    the person's photo, ``score`` and ``confidence`` how sure the decision is, in [0, 1] (at least 0.5 for any
    alert; ``engine.apps.identify``); (``sha256``, ``person``) identifies the alert for receivers that dedupe."""
    return {
        "person": alert["person"],
        "video": alert["video_name"],
        "uri": alert["source_uri"],
        "sha256": alert["video_sha256"],
        "time_s": alert["time_s"],
        "distance": alert["distance"],
        "score": alert["score"],
        "confidence": alert["score"],
        "box": alert["box"],
        "thumbnail_key": alert["thumbnail_key"],
    }
