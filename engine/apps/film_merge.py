"""The labelling files of a film, from its shards: ``trajectories.jsonl``, ``features.jsonl``,
``scene_changes.json``, ``clusters.json``, ``label.json`` and, with a gallery, ``predictions.json``; then the same
results in the seed's layout, ``<movie_id>-data/`` (``engine.apps.film_facerec``). The gallery is an actor database
restricted to the film's cast, or a folder of photos (``engine.apps.film_actors``).

An unsharded run is one shard merged by the same code (``engine.apps.film``). Output formats are documented in
``docs/film.md`` ("Files") and kept stable; ``label.json`` carries ``format_version``.

Floors. Only trajectories that look like faces are clustered: the seed (``facerec``) kept detections scoring above
0.95 and trajectories with a face of at least 50 px (box short side). Here the detector keeps everything above its
own threshold (0.5, so the tracker sees every face it can follow) and the floors are applied once per trajectory,
on medians: a trajectory enters clustering when its median detector score reaches ``min_score`` and its median face
size (box short side, frame pixels) reaches ``min_face_px``. A median is not moved by one confident frame of a
glass or one blurred frame of a real face. A trajectory under a floor is still written (``trajectories.jsonl``,
``features.jsonl``), marked with why (``junk``), and listed in ``clusters.json`` under ``unclustered``; it is in no
cluster and takes no part in clustering (no similarity, no cannot-link).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from engine.apps.film_actors import load_film_gallery
from engine.apps.film_facerec import NO_MOVIE_ID, SeedFilm, resolve_movie_id, write_seed_layout
from engine.apps.film_shards import (
    FORMAT_VERSION,
    LabelError,
    crop_files,
    faces_by_track,
    frame_times,
    load_shards,
    owned_cuts,
    stitch,
)
from engine.apps.people import People, knn_vote
from engine.cluster import group_tracks, similar_pairs, track_sums
from engine.config.sections import CLUSTER_FLOOR_MARGIN
from engine.faces.batching import FaceModels
from engine.faces.embedders import embedder_spec
from engine.shots import shot_ids
from engine.types import Faces, Tracks

Log = Callable[[str], None]

#: The seed's floors (``LabelSettings.min_score`` / ``min_face_px``; shards written before them merge with these).
MIN_SCORE = 0.95
MIN_FACE_PX = 50.0


def _r(values: Sequence[float], digits: int) -> list[float]:
    return [round(float(v), digits) for v in values]


def trajectory_quality(faces: Faces, tracks: Tracks) -> tuple[torch.Tensor, torch.Tensor]:
    """Each trajectory's median detector score and median face size (box short side, frame pixels), ``[T]`` each,
    rounded as ``trajectories.jsonl`` writes them (the floors compare these, so the file explains every decision)."""
    side = (faces.boxes[:, 2:] - faces.boxes[:, :2]).min(dim=1).values.double()
    groups = faces_by_track(tracks)
    score = [round(float(faces.scores[i].double().quantile(0.5)), 4) for i in groups]
    size = [round(float(side[i].quantile(0.5)), 2) for i in groups]
    return torch.tensor(score, dtype=torch.float64), torch.tensor(size, dtype=torch.float64)


def junk_reasons(score: torch.Tensor, size: torch.Tensor, min_score: float, min_face_px: float) -> list[list[str]]:
    """Why each trajectory stays out of clustering: ``"score"`` (median score under ``min_score``), ``"size"``
    (median face size under ``min_face_px``); ``[]`` for a trajectory that is clustered."""
    return [
        [*(["score"] if s < min_score else []), *(["size"] if z < min_face_px else [])]
        for s, z in zip(score.tolist(), size.tolist(), strict=True)
    ]


def write_trajectories(
    out: Path, faces: Faces, tracks: Tracks, shot_of_face: torch.Tensor, means: torch.Tensor,
    quality: tuple[torch.Tensor, torch.Tensor], junk: list[list[str]],
) -> None:  # fmt: skip
    """``trajectories.jsonl`` (each trajectory's shot, span, quality, whether it is clustered, and detections) and
    ``features.jsonl`` (its mean and every face's descriptor), one line per trajectory."""
    embeddings = faces.embedding.float()
    score, size = quality
    with (out / "trajectories.jsonl").open("w") as ft, (out / "features.jsonl").open("w") as ff:
        for t, idx in enumerate(faces_by_track(tracks)):
            fr = faces.frame_index[idx]
            traj = dict(
                id=t,
                shot=int(shot_of_face[idx[0]]),
                start_frame=int(fr[0]),
                end_frame=int(fr[-1]),
                start_s=round(float(faces.pts_s[idx[0]]), 4),
                end_s=round(float(faces.pts_s[idx[-1]]), 4),
                median_score=float(score[t]),
                median_face_px=float(size[t]),
                clustered=not junk[t],
                junk=junk[t],
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
            features = dict(id=t, n_faces=len(idx), clustered=not junk[t], mean=_r(means[t], 6), embeddings=vectors)
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


def cluster_trajectories(
    faces: Faces, tracks: Tracks, threshold: float, keep: torch.Tensor | None = None, pair_threshold: float = -1.0
) -> torch.Tensor:
    """Every kept trajectory against every other (one film), never two trajectories on screen together: the
    challenge's linkage over their faces (``engine.cluster``: cosine of mean directions at least ``threshold``,
    faces' mean pairwise cosine at least ``pair_threshold``; every face of a kept trajectory votes 1, the others
    0). Cluster id per trajectory, -1 for those not kept (``keep``: bool ``[T]``, all by default); ids count up in
    order of each cluster's first trajectory, so leaving out no trajectory gives exactly the clusters of clustering
    them all."""
    n = tracks.count
    keep = torch.ones(n, dtype=torch.bool) if keep is None else keep
    if not bool(keep.any()):
        return torch.full((n,), -1, dtype=torch.long)
    unit = torch.nn.functional.normalize(faces.embedding.float(), dim=1)
    sums, mass = track_sums(tracks.of_face, unit, keep[tracks.of_face].float(), n)
    pairs = similar_pairs(sums, mass, min(threshold, pair_threshold) - CLUSTER_FLOOR_MARGIN)
    together: dict[int, set[int]] = {}
    for f, t in zip(faces.frame_index.tolist(), tracks.of_face.tolist(), strict=True):
        if keep[t]:
            together.setdefault(f, set()).add(t)
    conflicts = {(x, y) for g in together.values() if len(g) > 1 for x in g for y in g if x < y}
    return group_tracks(sums, mass, pairs, threshold, cannot_link=conflicts, pair_threshold=pair_threshold)


def write_clusters(
    out: Path, tracks: Tracks, cluster_of: torch.Tensor, shot_of_face: torch.Tensor, threshold: float,
    floors: dict[str, float], junk: list[list[str]],
) -> list[dict[str, Any]]:  # fmt: skip
    """``clusters.json``: each cluster's trajectories, face count and shots, then the trajectories left out of
    clustering and why; returns the clusters."""
    n_clusters = int(cluster_of.max()) + 1 if tracks.count else 0
    clusters = []
    for c in range(n_clusters):
        members = (cluster_of == c).nonzero().flatten().tolist()
        in_c = torch.isin(tracks.of_face, torch.tensor(members))
        clusters.append(
            dict(id=c, trajectories=members, n_faces=int(in_c.sum()), shots=sorted(set(shot_of_face[in_c].tolist())))
        )
    unclustered = [dict(id=t, junk=why) for t, why in enumerate(junk) if why]
    (out / "clusters.json").write_text(
        json.dumps(dict(threshold=threshold, floors=floors, clusters=clusters, unclustered=unclustered), indent=1)
    )
    return clusters


def write_predictions(
    out: Path, gallery: str | Path, people: People, embedder: str, faces: Faces, tracks: Tracks,
    clusters: list[dict], settings: dict[str, Any],
) -> int:  # fmt: skip
    """``predictions.json``: each cluster's top gallery people by kernel-weighted KNN over its faces (``top``), and
    the decision of ``engine.apps.identify`` (``identity``: the person, or ``None``, with how sure), the rule search
    and the monitor use: a cluster is a person when its median distance to them is under the embedder's threshold
    *and* clearly below the distances from that person's photos to the film's other clusters."""
    from engine.apps.identify import identify, rule_for
    from engine.apps.people import person_distances

    embeddings = faces.embedding.float()
    members = [torch.isin(tracks.of_face, torch.tensor(cl["trajectories"])) for cl in clusters]
    decided = None
    if clusters and len(people):
        d = person_distances(embeddings, people)  # [F, P]
        median = torch.stack([d[m].median(dim=0).values for m in members])
        decided = identify(median, people.unique_names, rule_for(embedder))
    predictions = []
    for c, m in enumerate(members):
        match = None if decided is None else decided.of_track(c)
        top = knn_vote(embeddings[m], people, settings["knn_k"], settings["top"])
        identity = None if match is None else {"person": match.person, **match.as_dict()}
        predictions.append(dict(cluster=c, top=top, identity=identity))
    (out / "predictions.json").write_text(
        json.dumps(dict(gallery=str(gallery), people=people.unique_names, k=settings["knn_k"],
                        clusters=predictions), indent=1)
    )  # fmt: skip
    return len(predictions)


def cluster_thresholds(settings: dict[str, Any], embedder: str) -> tuple[float, float]:
    """The run's clustering thresholds: its own threshold, else its embedder's grouping similarity for one person;
    and the embedder's face-pair threshold (``engine.cluster``)."""
    spec = embedder_spec(embedder)
    own = settings.get("cluster_threshold")
    return (spec.group_similarity if own is None else float(own)), spec.group_pair_similarity


def movie_id_of(metas: list[dict[str, Any]], given: int | None = None) -> int | None:
    """The film's movie id: ``given``, else the one its shards were labelled with, else its file name's (``None``:
    none of them)."""
    if given is None:
        ids = {m.get("movie_id") for m in metas}
        if len(ids) > 1:
            raise LabelError(f"the shards were labelled with movie ids {sorted(map(str, ids))}: give merge --movie-id")
        given = ids.pop()
    return resolve_movie_id(metas[0]["film"], given)


def merge(
    out: str | Path,
    gallery: str | Path | None = None,
    models: FaceModels | None = None,
    log: Log | None = None,
    movie_id: int | None = None,
) -> dict[str, Any]:
    """Stitch ``out/shards/*`` into the labelling files and the seed's ``<movie_id>-data/`` (``movie_id``: the
    shards' own, else the film name's); with a gallery, KNN predictions per cluster."""
    out = Path(out)
    metas, shards = load_shards(out)
    settings = metas[0]["settings"]
    movie = movie_id_of(metas, movie_id)
    if gallery is not None and models is None:
        raise LabelError("predictions need the face models")
    people = None if gallery is None else load_film_gallery(gallery, models, movie, out, log)
    faces, tracks = stitch(metas, shards)
    cut_frames, cut_scores = owned_cuts(metas, shards)
    shot_of_face = shot_ids(faces.frame_index, cut_frames)
    embeddings = faces.embedding.float()
    n = tracks.count
    means = torch.nn.functional.normalize(track_sums(tracks.of_face, embeddings, torch.ones(len(faces)), n)[0], dim=1)
    floors = dict(min_score=settings.get("min_score", MIN_SCORE), min_face_px=settings.get("min_face_px", MIN_FACE_PX))
    quality = trajectory_quality(faces, tracks)
    junk = junk_reasons(*quality, **floors)
    write_trajectories(out, faces, tracks, shot_of_face, means, quality, junk)
    write_scenes(out, metas, cut_frames, cut_scores, frame_times(metas, shards, cut_frames))
    embedder = settings["faces"].get("embedder", "dlib")
    threshold, pair_threshold = cluster_thresholds(settings, embedder)
    kept = torch.tensor([not j for j in junk], dtype=torch.bool)
    cluster_of = cluster_trajectories(faces, tracks, threshold, kept, pair_threshold)
    clusters = write_clusters(out, tracks, cluster_of, shot_of_face, threshold, floors, junk)
    summary: dict[str, Any] = dict(
        format_version=FORMAT_VERSION,
        film=metas[0]["film"],
        movie_id=movie,
        num_frames=metas[0]["num_frames"],
        fps=metas[0]["fps"],
        shards=len(metas),
        faces=len(faces),
        trajectories=n,
        junk=sum(1 for j in junk if j),
        clusters=len(clusters),
        cuts=len(cut_frames),
        settings=settings,
    )
    if people is not None:
        summary["predictions"] = write_predictions(out, gallery, people, embedder, faces, tracks, clusters, settings)
    seed = SeedFilm(movie, metas[0]["width"], metas[0]["height"], embedder, faces, tracks, cluster_of, cut_frames)
    if movie is None:
        summary["seed"] = None
        if log is not None:
            log(NO_MOVIE_ID.format(name=Path(metas[0]["film"]).name))
    else:
        summary["seed"] = write_seed_layout(out, seed, crop_files(out, metas, faces), people, settings["knn_k"], log)
    (out / "label.json").write_text(json.dumps(summary, indent=1))
    return summary
