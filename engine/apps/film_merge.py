"""The labelling files of a film, from its shards: ``trajectories.jsonl``, ``features.jsonl``,
``scene_changes.json``, ``clusters.json``, ``label.json`` and, with a gallery, ``predictions.json``.

An unsharded run is one shard merged by the same code (``engine.apps.film``). Output formats are documented in
``docs/film.md`` ("Files") and kept stable; ``label.json`` carries ``format_version``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from engine.apps.film_shards import FORMAT_VERSION, LabelError, frame_times, load_shards, owned_cuts, stitch
from engine.apps.people import PeopleError, knn_vote, load_gallery
from engine.apps.shots import shot_ids
from engine.cluster import group_tracks, similar_pairs, track_means
from engine.faces.batching import FaceModels
from engine.types import Faces, Tracks

Log = Callable[[str], None]


def _r(values: Sequence[float], digits: int) -> list[float]:
    return [round(float(v), digits) for v in values]


def write_trajectories(
    out: Path, faces: Faces, tracks: Tracks, shot_of_face: torch.Tensor, means: torch.Tensor
) -> None:
    """``trajectories.jsonl`` (each trajectory's shot, span and detections) and ``features.jsonl`` (its mean and
    every face's descriptor), one line per trajectory."""
    traj_of, embeddings = tracks.of_face, faces.embedding.float()
    with (out / "trajectories.jsonl").open("w") as ft, (out / "features.jsonl").open("w") as ff:
        # Faces grouped by trajectory once (stable: frame order inside each), not one scan per trajectory.
        by_traj = torch.argsort(traj_of, stable=True).split(torch.bincount(traj_of, minlength=tracks.count).tolist())
        for t, idx in enumerate(by_traj):
            fr = faces.frame_index[idx]
            traj = dict(
                id=t,
                shot=int(shot_of_face[idx[0]]),
                start_frame=int(fr[0]),
                end_frame=int(fr[-1]),
                start_s=round(float(faces.pts_s[idx[0]]), 4),
                end_s=round(float(faces.pts_s[idx[-1]]), 4),
                detections=[
                    dict(frame=int(f), time_s=round(float(p), 4), box=_r(b, 2), score=round(float(s), 4),
                         landmarks=_r(m, 2))
                    for f, p, b, s, m in zip(
                        fr, faces.pts_s[idx], faces.boxes[idx], faces.scores[idx], faces.landmarks[idx],
                        strict=True,
                    )
                ],
            )  # fmt: skip
            ft.write(json.dumps(traj) + "\n")
            vectors = [_r(e, 6) for e in embeddings[idx]]
            features = dict(id=t, n_faces=len(idx), mean=_r(means[t], 6), embeddings=vectors)
            ff.write(json.dumps(features) + "\n")


def write_scenes(
    out: Path, metas: list[dict[str, Any]], cut_frames: torch.Tensor, cut_scores: torch.Tensor, cut_times: list[float]
) -> None:
    """``scene_changes.json``: the cuts (frame, time, score) and the shots between them."""
    num_frames = metas[0]["num_frames"]
    bounds = [0, *cut_frames.tolist(), num_frames]
    starts = [metas[0]["video_start_s"], *cut_times]
    shots = [
        dict(id=k, start_frame=bounds[k], end_frame=bounds[k + 1] - 1, start_s=round(starts[k], 4))
        for k in range(len(bounds) - 1)
    ]
    scene = dict(
        fps=metas[0]["fps"],
        num_frames=num_frames,
        cuts=[
            dict(frame=int(f), time_s=round(t, 4), score=round(float(s), 3))
            for f, t, s in zip(cut_frames, cut_times, cut_scores, strict=True)
        ],
        shots=shots,
        settings=metas[0]["settings"]["shots"],
    )
    (out / "scene_changes.json").write_text(json.dumps(scene, indent=1))


def cluster_trajectories(faces: Faces, tracks: Tracks, means: torch.Tensor, threshold: float) -> torch.Tensor:
    """Every trajectory against every other (one film), never two trajectories on screen together."""
    if tracks.count == 0:
        return torch.zeros(0, dtype=torch.long)
    pairs = similar_pairs(means, torch.arange(tracks.count))
    together: dict[int, set[int]] = {}
    for f, t in zip(faces.frame_index.tolist(), tracks.of_face.tolist(), strict=True):
        together.setdefault(f, set()).add(t)
    conflicts = {(x, y) for g in together.values() if len(g) > 1 for x in g for y in g if x < y}
    return group_tracks(tracks.count, pairs, threshold, cannot_link=conflicts)


def write_clusters(
    out: Path, tracks: Tracks, cluster_of: torch.Tensor, shot_of_face: torch.Tensor, threshold: float
) -> list[dict[str, Any]]:
    """``clusters.json``: each cluster's trajectories, face count and shots; returns the clusters."""
    n_clusters = int(cluster_of.max()) + 1 if tracks.count else 0
    clusters = []
    for c in range(n_clusters):
        members = (cluster_of == c).nonzero().flatten().tolist()
        in_c = torch.isin(tracks.of_face, torch.tensor(members))
        clusters.append(
            dict(id=c, trajectories=members, n_faces=int(in_c.sum()), shots=sorted(set(shot_of_face[in_c].tolist())))
        )
    (out / "clusters.json").write_text(json.dumps(dict(threshold=threshold, clusters=clusters), indent=1))
    return clusters


def write_predictions(
    out: Path, gallery: str | Path, models: FaceModels, faces: Faces, tracks: Tracks, clusters: list[dict],
    settings: dict[str, Any], log: Log | None,
) -> int:  # fmt: skip
    """``predictions.json``: each cluster's top gallery people by kernel-weighted KNN over its faces."""
    try:
        people = load_gallery(gallery, models, log)
    except PeopleError as exc:
        raise LabelError(str(exc)) from exc
    embeddings = faces.embedding.float()
    predictions = [
        dict(
            cluster=c,
            top=knn_vote(embeddings[torch.isin(tracks.of_face, torch.tensor(cl["trajectories"]))], people,
                         settings["knn_k"], settings["top"]),
        )
        for c, cl in enumerate(clusters)
    ]  # fmt: skip
    (out / "predictions.json").write_text(
        json.dumps(dict(gallery=str(gallery), people=people.unique_names, k=settings["knn_k"],
                        clusters=predictions), indent=1)
    )  # fmt: skip
    return len(predictions)


def merge(
    out: str | Path,
    gallery: str | Path | None = None,
    models: FaceModels | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Stitch ``out/shards/*`` into the labelling files; with a gallery, KNN predictions per cluster."""
    out = Path(out)
    metas, shards = load_shards(out)
    settings = metas[0]["settings"]
    faces, tracks = stitch(metas, shards)
    cut_frames, cut_scores = owned_cuts(metas, shards)
    shot_of_face = shot_ids(faces.frame_index, cut_frames)
    embeddings = faces.embedding.float()
    n = tracks.count
    means = torch.nn.functional.normalize(track_means(tracks.of_face, embeddings, n), dim=1) if n else embeddings
    write_trajectories(out, faces, tracks, shot_of_face, means)
    write_scenes(out, metas, cut_frames, cut_scores, frame_times(metas, shards, cut_frames))
    threshold = settings["cluster_threshold"]
    clusters = write_clusters(out, tracks, cluster_trajectories(faces, tracks, means, threshold), shot_of_face,
                              threshold)  # fmt: skip
    summary: dict[str, Any] = dict(
        format_version=FORMAT_VERSION,
        film=metas[0]["film"],
        num_frames=metas[0]["num_frames"],
        fps=metas[0]["fps"],
        shards=len(metas),
        faces=len(faces),
        trajectories=n,
        clusters=len(clusters),
        cuts=len(cut_frames),
        settings=settings,
    )
    if gallery is not None:
        if models is None:
            raise LabelError("predictions need the face models")
        summary["predictions"] = write_predictions(out, gallery, models, faces, tracks, clusters, settings, log)
    (out / "label.json").write_text(json.dumps(summary, indent=1))
    return summary
