"""The challenge-wide step: tracks of every stored video grouped into individuals, and their unique faces.

Reads the challenge's stored faces, computes :class:`engine.types.Individuals` on the run's device (track means,
sparse cross-video similarities, average-linkage grouping that never joins two tracks seen in one frame, PHash
duplicates within each individual), and writes its rows in one transaction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.cluster import group_tracks, similar_pairs, track_means
from engine.config import ClusterSettings
from engine.dedup import duplicates_to_remove, hex_to_hashes
from engine.pipeline.rows import individual_rows
from engine.store import Database
from engine.types import Individuals, StoredFaces


def stored_faces(rows: list[dict[str, Any]]) -> StoredFaces:
    """The store's face rows (with a descriptor) as the typed contract of this step."""
    videos = sorted({r["video_sha256"] for r in rows})
    video_id = {v: i for i, v in enumerate(videos)}
    long = torch.int64
    return StoredFaces(
        face_id=torch.tensor([r["id"] for r in rows], dtype=long),
        video=torch.tensor([video_id[r["video_sha256"]] for r in rows], dtype=long),
        track=torch.tensor([r["track"] for r in rows], dtype=long),
        frame_index=torch.tensor([r["frame_index"] for r in rows], dtype=long),
        embedding=torch.from_numpy(np.stack([r["embedding"] for r in rows])),
        phash=hex_to_hashes([r["phash"] or "0" * 16 for r in rows]),
        has_phash=torch.tensor([bool(r["phash"]) for r in rows]),
        videos=videos,
    )


def frame_conflicts(faces: StoredFaces, face_track: torch.Tensor) -> set[tuple[int, int]]:
    """Pairs of tracks (indices) of one video seen in the same frame: two people, never one individual."""
    in_frame: dict[tuple[int, int], set[int]] = {}
    for v, k, t in zip(faces.video.tolist(), faces.frame_index.tolist(), face_track.tolist(), strict=True):
        in_frame.setdefault((v, k), set()).add(t)
    return {(x, y) for group in in_frame.values() if len(group) > 1 for x in group for y in group if x < y}


def group_individuals(faces: StoredFaces, clustering: ClusterSettings, device: str = "cpu") -> Individuals:
    """The individuals of a challenge's stored faces: track means, sparse cross-video pairs, constrained average
    linkage, then PHash duplicates within each individual."""
    track_key: dict[tuple[int, int], int] = {}
    pairs_vt = zip(faces.video.tolist(), faces.track.tolist(), strict=True)
    face_track = torch.tensor([track_key.setdefault(vt, len(track_key)) for vt in pairs_vt], dtype=torch.int64)
    keys = list(track_key)
    means = track_means(face_track.to(device), faces.embedding.to(device), len(keys))
    track_video = torch.tensor([v for v, _ in keys], device=device)
    pairs = similar_pairs(means, track_video, clustering.floor)
    conflicts = frame_conflicts(faces, face_track)
    individual = group_tracks(len(keys), pairs, clustering.threshold, clustering.floor, conflicts)
    face_individual = individual[face_track]
    drop = duplicates_to_remove(faces.phash, groups=face_individual).cpu()
    names = [(faces.videos[v], t) for v, t in keys]
    return Individuals(names, individual, face_individual, drop, pairs)


def individuals_stage(
    db: Database, challenge: str, clustering: ClusterSettings, device: str = "cpu"
) -> tuple[int, int, int]:
    """Similarities, individuals and unique faces over every stored video of the challenge (one transaction).

    Returns (similar track pairs, individuals, unique faces). Two tracks of one video that share a frame are two
    people and never grouped; duplicates are looked for within each individual (imagededup's PHash rule, in time
    order), so two different people can never remove each other's crops.
    """
    rows = [r for r in db.challenge_faces(challenge) if r["embedding"] is not None]
    if not rows:
        db.write_individuals(challenge, [], [], [])
        return 0, 0, 0
    faces = stored_faces(rows)
    individuals = group_individuals(faces, clustering, device)
    similarities, final, unique = individual_rows(faces, individuals)
    db.write_individuals(challenge, similarities, final, unique)
    return len(similarities), individuals.count, len(unique)
