"""The challenge-wide step: tracks of every stored video grouped into individuals, and their unique faces.

Reads the challenge's stored faces (those of the run's embedder only: descriptors of two networks are never
compared), computes :class:`engine.types.Individuals` on the run's device (``engine.cluster``: votes of the good
faces, track sums, candidate pairs, constrained linkage that never joins two tracks seen in one frame and
honours the challenge's manual merges; then PHash duplicates within each individual), and writes its rows in one
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.cluster import attach_tracks, group_tracks, similar_pairs, track_sums, voting_weights
from engine.config import ClusterSettings
from engine.config.sections import ManualMerge, video_matches
from engine.dedup import duplicates_to_remove, hex_to_hashes
from engine.faces.embedders import embedder_spec
from engine.faces.quality import QUALITY_FLOOR, vote_floors
from engine.pipeline.rows import individual_rows
from engine.store import Database
from engine.types import Individuals, StoredFaces

#: Stored faces from before quality was measured count as good enough to vote.
LEGACY_QUALITY = 1.0


def stored_faces(rows: list[dict[str, Any]]) -> StoredFaces:
    """The store's face rows (with a descriptor) as the typed contract of this step."""
    videos = sorted({r["video_sha256"] for r in rows})
    video_id = {v: i for i, v in enumerate(videos)}
    long = torch.int64
    quality = [LEGACY_QUALITY if r.get("quality") is None else r["quality"] for r in rows]
    magnitude = [float("nan") if r.get("magnitude") is None else r["magnitude"] for r in rows]
    file_names = {r["video_sha256"]: r.get("file_name") or "" for r in rows}
    return StoredFaces(
        face_id=torch.tensor([r["id"] for r in rows], dtype=long),
        video=torch.tensor([video_id[r["video_sha256"]] for r in rows], dtype=long),
        track=torch.tensor([r["track"] for r in rows], dtype=long),
        frame_index=torch.tensor([r["frame_index"] for r in rows], dtype=long),
        boxes=torch.tensor([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in rows], dtype=torch.float32),
        embedding=torch.from_numpy(np.stack([r["embedding"] for r in rows])),
        phash=hex_to_hashes([r["phash"] or "0" * 16 for r in rows]),
        has_phash=torch.tensor([bool(r["phash"]) for r in rows]),
        quality=torch.tensor(quality, dtype=torch.float32),
        magnitude=torch.tensor(magnitude, dtype=torch.float32),
        videos=videos,
        names=[file_names[v] for v in videos],
    )


#: Two boxes of one frame overlapping by more than this share of the smaller one are one head found twice (the
#: detector's NMS keeps such pairs when one box sits inside a much larger one), not two people.
SAME_HEAD_OVERLAP = 0.5


def frame_conflicts(faces: StoredFaces, face_track: torch.Tensor) -> set[tuple[int, int]]:
    """Pairs of tracks (indices) of one video seen in the same frame: two people, never one individual (unless
    their boxes are one head found twice: :data:`SAME_HEAD_OVERLAP`)."""
    in_frame: dict[tuple[int, int], list[int]] = {}
    for i, (v, k) in enumerate(zip(faces.video.tolist(), faces.frame_index.tolist(), strict=True)):
        in_frame.setdefault((v, k), []).append(i)
    out: set[tuple[int, int]] = set()
    for members in in_frame.values():
        if len(members) < 2:
            continue
        idx = torch.tensor(members)
        b = faces.boxes[idx]
        lo, hi = torch.maximum(b[:, None, :2], b[None, :, :2]), torch.minimum(b[:, None, 2:], b[None, :, 2:])
        inter = (hi - lo).clamp(min=0).prod(-1)
        area = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
        overlap = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-6)
        tracks = face_track[idx].tolist()
        for i, j in torch.triu_indices(len(members), len(members), 1).T.tolist():
            x, y = tracks[i], tracks[j]
            if x != y and overlap[i, j] <= SAME_HEAD_OVERLAP:
                out.add((min(x, y), max(x, y)))
    return out


def track_pairs(
    links: tuple[ManualMerge, ...], faces: StoredFaces, keys: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The challenge's manual merges (or keep-aparts) as pairs of track indices (entries naming a track that is not
    stored are ignored: the video may not be part of this challenge's results yet)."""
    index = {k: i for i, k in enumerate(keys)}

    def find(video: str, track: int) -> int | None:
        for v, (sha, name) in enumerate(zip(faces.videos, faces.names, strict=True)):
            if video_matches(video, name, sha) and (v, track) in index:
                return index[(v, track)]
        return None

    pairs = [(find(*m.ends()[0]), find(*m.ends()[1])) for m in links]
    return [(a, b) for a, b in pairs if a is not None and b is not None]


@dataclass(frozen=True)
class Grouping:
    """The numbers a grouping ran with (recorded with the run's summary and shown in the report)."""

    embedder: str
    threshold: float
    floor: float
    min_quality: float
    pair_threshold: float
    #: Faces whose descriptor magnitude reaches ``confident_magnitude`` vote whatever their quality, faces under
    #: ``unreadable_magnitude`` never (``engine.faces.quality.vote_floors``; ``None``: the magnitude says nothing).
    confident_magnitude: float | None = None
    unreadable_magnitude: float | None = None


def grouping_for(embedder: str, clustering: ClusterSettings) -> Grouping:
    """The challenge's ``[clustering]`` values, with the embedder's and the quality module's defaults."""
    spec = embedder_spec(embedder)
    threshold = clustering.threshold_for(spec.group_similarity)
    pair_threshold = clustering.pair_threshold_for(spec.group_pair_similarity)
    min_quality = QUALITY_FLOOR if clustering.min_quality is None else clustering.min_quality
    floor = clustering.floor_for(pair_threshold)
    confident = spec.confident_magnitude if clustering.confident_magnitude is None else clustering.confident_magnitude
    unread = spec.unreadable_magnitude if clustering.unreadable_magnitude is None else clustering.unreadable_magnitude
    return Grouping(embedder, threshold, floor, min_quality, pair_threshold, confident, unread)


def group_individuals(
    faces: StoredFaces, clustering: ClusterSettings, embedder: str, device: str = "cpu"
) -> Individuals:
    """The individuals of a challenge's stored faces (see ``engine.cluster``), then PHash duplicates within each
    individual. A track with no voting face takes the individual its faces clearly match, without voting
    (``engine.cluster.attach_tracks``), or none: its faces get individual -1 and are never deduplicated."""
    g = grouping_for(embedder, clustering)
    track_key: dict[tuple[int, int], int] = {}
    pairs_vt = zip(faces.video.tolist(), faces.track.tolist(), strict=True)
    face_track = torch.tensor([track_key.setdefault(vt, len(track_key)) for vt in pairs_vt], dtype=torch.int64)
    keys = list(track_key)
    unit = torch.nn.functional.normalize(faces.embedding.to(device).float(), dim=1)
    on_device = face_track.to(device)
    floors = vote_floors(faces.magnitude, g.min_quality, g.confident_magnitude, g.unreadable_magnitude).to(device)
    votes = voting_weights(on_device, unit, faces.quality.to(device), floors)
    sums, mass = track_sums(on_device, unit, votes, len(keys))
    pairs = similar_pairs(sums, mass, g.floor)
    conflicts = frame_conflicts(faces, face_track) | set(track_pairs(clustering.keep_apart, faces, keys))
    must = track_pairs(clustering.manual_merges, faces, keys)
    individual = group_tracks(sums, mass, pairs, g.threshold, conflicts, must, g.pair_threshold)
    # A track is attached by the faces the embedder can read at all (a descriptor under its unreadable magnitude
    # says nothing of who it is, so it can no more link than vote).
    readable = torch.isfinite(floors).to(votes.dtype)
    face_sums, count = track_sums(on_device, unit, readable, len(keys))
    individual = attach_tracks(individual, sums, mass, face_sums, count, g.threshold, g.pair_threshold, conflicts)
    face_individual = individual[face_track]
    drop = duplicates_to_remove(faces.phash, groups=face_individual).cpu() | (face_individual < 0)
    names = [(faces.videos[v], t) for v, t in keys]
    return Individuals(names, individual, face_individual, drop, pairs.to("cpu"), votes.cpu() > 0)


def individuals_stage(
    db: Database, challenge: str, clustering: ClusterSettings, embedder: str, device: str = "cpu"
) -> tuple[int, int, int]:
    """Similarities, individuals and unique faces over every stored video of the challenge (one transaction).

    Returns (candidate track pairs, individuals, unique faces). Only faces of ``embedder`` (the run's) are
    grouped; rows stored before the embedder was recorded are dlib's.
    """
    rows = [
        r for r in db.challenge_faces(challenge)
        if r["embedding"] is not None and (r.get("embedder") or "dlib") == embedder
    ]  # fmt: skip
    if not rows:
        db.write_individuals(challenge, [], [], [])
        return 0, 0, 0
    faces = stored_faces(rows)
    individuals = group_individuals(faces, clustering, embedder, device)
    similarities, final, unique = individual_rows(faces, individuals)
    db.write_individuals(challenge, similarities, final, unique)
    return len(individuals.pairs.a), individuals.count, len(unique)
