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
from engine.types import Individuals


def frame_conflicts(rows: list[dict[str, Any]], face_track: torch.Tensor) -> set[tuple[int, int]]:
    """Pairs of tracks (indices) of one video seen in the same frame: two people, never one individual."""
    in_frame: dict[tuple[str, int], set[int]] = {}
    for r, t in zip(rows, face_track.tolist(), strict=True):
        in_frame.setdefault((r["video_sha256"], r["frame_index"]), set()).add(t)
    return {(x, y) for group in in_frame.values() if len(group) > 1 for x in group for y in group if x < y}


def group_individuals(
    rows: list[dict[str, Any]], clustering: ClusterSettings, device: str = "cpu"
) -> tuple[list[tuple[str, int]], Individuals]:
    """The (video, track) of each track index, and the individuals of stored faces ``rows`` (each with
    ``video_sha256``, ``track``, ``frame_index``, ``embedding``, ``phash``)."""
    videos = sorted({r["video_sha256"] for r in rows})
    video_id = {v: i for i, v in enumerate(videos)}
    track_key: dict[tuple[str, int], int] = {}
    face_track = torch.tensor([track_key.setdefault((r["video_sha256"], r["track"]), len(track_key)) for r in rows])
    keys = list(track_key)
    embeddings = torch.from_numpy(np.stack([r["embedding"] for r in rows])).to(device)
    means = track_means(face_track.to(device), embeddings, len(keys))
    track_video = torch.tensor([video_id[v] for v, _ in keys], device=device)
    pairs = similar_pairs(means, track_video, clustering.floor)
    conflicts = frame_conflicts(rows, face_track)
    individual = group_tracks(len(keys), pairs, clustering.threshold, clustering.floor, conflicts)
    face_individual = individual[face_track]
    hashes = hex_to_hashes([r["phash"] or "0" * 16 for r in rows])
    drop = duplicates_to_remove(hashes, groups=face_individual).cpu()
    return keys, Individuals(individual, face_individual, drop, pairs)


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
    keys, individuals = group_individuals(rows, clustering, device)
    similarities, final, unique = individual_rows(rows, keys, individuals)
    db.write_individuals(challenge, similarities, final, unique)
    return len(similarities), individuals.count, len(unique)
