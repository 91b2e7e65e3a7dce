"""The monitor's face side: the faces of one video, each watched person's nearest face among them, and the JSON an
alert is announced with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine import media
from engine.apps.people import People, distances
from engine.config import Settings
from engine.faces.batching import FaceModels, analyze_batches
from engine.types import VideoFaces


def faces_in_video(path: Path, settings: Settings, models: FaceModels) -> VideoFaces:
    """The faces stage on the video's frames sampled every ``sample_interval`` seconds."""
    return analyze_batches(media.sample_frames(path, settings.sample_interval, settings.device), models)


@dataclass(frozen=True)
class Match:
    """A watched person's nearest face in one video: ``index`` is its row in the faces stage's output."""

    person: str
    index: int
    distance: float
    time_s: float
    box: list[float]


def nearest_faces(found: VideoFaces, people: People) -> list[Match]:
    """Each watched person's nearest face in the video (none when the video has no face at all).

    A person with several reference rows is as near as their nearest row. The distance is dlib's Euclidean one.
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
    retried delivery sends exactly what was printed. ``score`` is ``1 - distance`` (1: the same descriptor; a match
    has at least ``1 - threshold``); (``sha256``, ``person``) identifies the alert for receivers that dedupe."""
    return {
        "person": alert["person"],
        "video": alert["video_name"],
        "uri": alert["source_uri"],
        "sha256": alert["video_sha256"],
        "time_s": alert["time_s"],
        "distance": alert["distance"],
        "score": alert["score"],
        "box": alert["box"],
        "thumbnail_key": alert["thumbnail_key"],
    }
