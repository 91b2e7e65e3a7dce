"""The seed's layout of a labelled film, ``DATA_DIR/<movie_id>-data/``: what ``MoMaF/video-labeler`` loads.

The labeller (``back/main.py``, ``read_datadirs``) takes every ``*-data`` folder of its ``DATA_DIR``, the movie id
from the folder's name, and reads, as the seed ``facerec`` wrote them (``extract.py``, ``merge_shards.py``,
``cluster.py``, ``classify_knn.py``):

- ``trajectories.jsonl``: one line per trajectory, line ``i`` with ``"index": i``: ``start`` (first frame),
  ``len``, ``bbs`` (one int box ``[x1, y1, x2, y2]`` for *every* frame ``start .. start + len - 1``),
  ``detected`` (per frame: a real detection, or a box in between), ``w`` and ``h`` (the frame's size, which the
  boxes are clipped to), ``object_type`` ``"face"``, ``movie_id``. Here the boxes between two sampled detections
  are interpolated linearly; a trajectory starts and ends on a detection, as the seed's do.
- ``images/<movie_id>:<frame>:<x1>_<y1>_<x2>_<y2>.jpeg``: the crops (``engine.apps.film_crops``); the labeller shows
  a trajectory's boxes that have a crop, found by name from its ``bbs``, so every detection has one.
- ``clusters.json``: ``{"clusters": [cluster of trajectory i], "movie_id"}``, dense ids from 0, cluster 0 the one
  with the most trajectories (the seed's order; ties by first appearance). The labeller asserts one entry per
  trajectory, so only the clustered trajectories are written: those under the floors (``engine.apps.film_merge``)
  are left out, as the seed's merge left out its rejected ones, and the rest are renumbered in order.
- ``predictions.json``: ``{"movie_id", "predictions": {"<cluster>": {"<actor id>": p}}}``, one entry per cluster
  (the labeller asserts it; ``{}`` without a gallery), the people whose share of the cluster's KNN votes
  (``engine.apps.people.knn_vote``) is above 0.05 as in the seed, keyed by the gallery's names: the ``actors.csv``
  ids of an actor database (``engine.apps.film_actors``), which the labeller matches against its actor list.
- ``features.jsonl``: one line per face of the written trajectories (frame order), as ``extract.py`` wrote them:
  ``frame``, ``tag`` (the crop's name), ``embeddings`` ``{embedder: vector}``, ``box`` (int), ``keypoints`` (the
  five landmarks, named as MTCNN names them), ``w``, ``h``; the seed's scripts find a box's vector by
  ``(frame, box)``.
- ``scene_changes.json``: ``{"frame_indices": [first frame of every shot but the first], "movie_id"}``.

Line ``i`` of ``trajectories.jsonl`` is the ``i``-th clustered trajectory of the richer ``DATA_DIR/trajectories.jsonl``
(in id order). Every file is a pure function of the stitched faces, so any sharding writes the same bytes. The folder
is written beside as ``.<movie_id>-data.partial`` and renamed over the old one at the end.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.apps.boxes import frame_boxes
from engine.apps.film_crops import int_boxes
from engine.apps.film_shards import LabelError, faces_by_track
from engine.apps.people import People, knn_vote
from engine.types import Faces, Tracks

Log = Callable[[str], None]
#: The seed keeps a person in a cluster's predictions when their probability is above this (``save_p_higher``).
MIN_PREDICTION = 0.05
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
_COMPACT = dict(indent=None, separators=(",", ":"))


def movie_id_from_name(film: str | Path) -> int | None:
    """The seed's movie id of a film file: the digits before the name's first ``-`` (``12345-CoolMovieFilm.mp4``
    -> 12345), as ``extract.py`` reads it and the labeller finds a film in its ``FILMS_DIR``; else ``None``."""
    head = Path(film).stem.split("-")[0]
    return int(head) if re.fullmatch(r"[0-9]+", head) else None


def resolve_movie_id(film: str | Path, given: int | None) -> int | None:
    """``given``, else the film name's id, else ``None`` (then only our own files are written: see
    :data:`NO_MOVIE_ID`)."""
    movie_id = movie_id_from_name(film) if given is None else given
    if movie_id is not None and movie_id < 0:
        raise LabelError(f"the movie id must be 0 or more (got {movie_id})")
    return movie_id


#: What ``label`` says when a film has no movie id: the seed's folder is named after it, so it is not written.
NO_MOVIE_ID = (
    "{name}: no movie id, so the labeller's folder <id>-data/ was not written (name the file <id>-<title> as the seed"
    " does, 12345-CoolMovieFilm.mp4, or give --movie-id; `merge --movie-id ID` writes it from these shards)"
)


@dataclass
class SeedFilm:
    """What the seed layout is written from: the stitched faces and trajectories of one film and their clusters."""

    movie_id: int
    width: int  # the decoded frame's size: the boxes' range
    height: int
    embedder: str
    faces: Faces
    tracks: Tracks
    cluster_of: torch.Tensor  # int64 [T]: each trajectory's cluster, -1 when it is not clustered (floors)
    cuts: torch.Tensor  # int64 [C]: frames that start a shot

    @property
    def name(self) -> str:
        return f"{self.movie_id}-data"

    def tag(self, frame: int, box: list[int]) -> str:
        return f"{self.movie_id}:{frame}:" + "_".join(map(str, box))


def seed_boxes(frames: torch.Tensor, boxes: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, list[bool]]:
    """Int boxes ``[len, 4]`` for every frame from the first to the last of one trajectory's detections (frame
    order), linearly interpolated in between, and which frames hold a detection (whose box is exactly its own)."""
    span = torch.arange(int(frames[0]), int(frames[-1]) + 1)
    at = frames - frames[0]
    b = boxes.detach().cpu().double()
    whole = frame_boxes(frames.cpu(), b, int(frames[0]), int(frames[-1]))
    out = int_boxes(whole, width, height)
    out[at] = int_boxes(b, width, height)
    detected = torch.zeros(len(span), dtype=torch.bool)
    detected[at] = True
    return out, detected.tolist()


def seed_clusters(cluster_of: torch.Tensor) -> tuple[list[int], list[int]]:
    """The clustered trajectories (id order) and each one's seed cluster: dense, most trajectories first."""
    kept = (cluster_of >= 0).nonzero().flatten().tolist()
    ours = cluster_of[kept]
    sizes = torch.bincount(ours).tolist() if kept else []
    rank = {c: s for s, c in enumerate(sorted(range(len(sizes)), key=lambda c: (-sizes[c], c)))}
    return kept, [rank[c] for c in ours.tolist()]


def _trajectory_lines(film: SeedFilm, groups: list[torch.Tensor], kept: list[int]) -> str:
    lines = []
    for index, t in enumerate(kept):
        idx = groups[t]
        bbs, detected = seed_boxes(film.faces.frame_index[idx].cpu(), film.faces.boxes[idx], film.width, film.height)
        line = dict(
            start=int(film.faces.frame_index[idx[0]]), len=len(bbs), bbs=bbs.tolist(), detected=detected,
            w=film.width, h=film.height, object_type="face", index=index, movie_id=film.movie_id,
        )  # fmt: skip
        lines.append(json.dumps(line, **_COMPACT) + "\n")
    return "".join(lines)


def _feature_lines(film: SeedFilm, faces: torch.Tensor) -> tuple[str, list[str]]:
    """``features.jsonl`` for the faces ``faces`` (indices, frame order) and each one's crop name."""
    f = film.faces
    boxes = int_boxes(f.boxes[faces], film.width, film.height).tolist()
    frames = f.frame_index[faces].tolist()
    marks = f.landmarks[faces].reshape(-1, 5, 2).tolist()
    vectors = f.embedding[faces].float().tolist()
    lines, tags = [], []
    for frame, box, mark, vector in zip(frames, boxes, marks, vectors, strict=True):
        tag = film.tag(frame, box)
        line = dict(
            frame=frame, tag=tag, embeddings={film.embedder: [round(v, 6) for v in vector]}, box=box,
            keypoints={k: [round(x), round(y)] for k, (x, y) in zip(KEYPOINTS, mark, strict=True)},
            w=film.width, h=film.height,
        )  # fmt: skip
        lines.append(json.dumps(line, **_COMPACT) + "\n")
        tags.append(tag)
    return "".join(lines), tags


def _copy_crops(images: Path, faces: torch.Tensor, tags: list[str], crops: list[Path] | None, log: Log | None) -> int:
    images.mkdir()
    if crops is None:
        if log:
            log(f"note   the shards hold no face crops: {images} is empty (label the film again to have them)")
        return 0
    for j, tag in zip(faces.tolist(), tags, strict=True):
        if not crops[j].is_file():
            raise LabelError(f"face crop {crops[j]} is missing: run that shard's `label --shard` job again")
        shutil.copyfile(crops[j], images / f"{tag}.jpeg")
    return len(tags)


def seed_predictions(
    film: SeedFilm, kept: list[int], seed_of: list[int], people: People | None, k: int
) -> dict[str, dict[str, float]]:
    """Per seed cluster (``"0"``, ``"1"``, ...): gallery name -> share of the KNN votes of its faces, above 0.05."""
    n = max(seed_of) + 1 if seed_of else 0
    out: dict[str, dict[str, float]] = {}
    for s in range(n):
        members = torch.tensor([t for t, c in zip(kept, seed_of, strict=True) if c == s])
        top = []
        if people is not None:
            faces = torch.isin(film.tracks.of_face, members)
            top = knn_vote(film.faces.embedding[faces].float(), people, k, len(people.unique_names))
        out[str(s)] = {p["name"]: p["probability"] for p in top if p["probability"] > MIN_PREDICTION}
    return out


def write_seed_layout(
    out: Path, film: SeedFilm, crops: list[Path] | None, people: People | None, knn_k: int, log: Log | None = None
) -> dict[str, Any]:
    """Write ``out/<movie_id>-data/`` (see the module); ``crops[i]``: face ``i``'s crop file in its shard (``None``:
    none made). Returns what it wrote."""
    kept, seed_of = seed_clusters(film.cluster_of)
    in_kept = torch.zeros(film.tracks.count, dtype=torch.bool)
    in_kept[kept] = True
    rows = in_kept[film.tracks.of_face.cpu()].nonzero().flatten()  # the faces written, in frame order
    tmp = out / f".{film.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "trajectories.jsonl").write_text(_trajectory_lines(film, faces_by_track(film.tracks), kept))
    features, tags = _feature_lines(film, rows)
    (tmp / "features.jsonl").write_text(features)
    n_images = _copy_crops(tmp / "images", rows, tags, crops, log)
    scenes = dict(frame_indices=sorted(film.cuts.tolist()), movie_id=film.movie_id)
    (tmp / "scene_changes.json").write_text(json.dumps(scenes, **_COMPACT) + "\n")
    (tmp / "clusters.json").write_text(json.dumps(dict(clusters=seed_of, movie_id=film.movie_id), **_COMPACT) + "\n")
    predictions = seed_predictions(film, kept, seed_of, people, knn_k)
    (tmp / "predictions.json").write_text(json.dumps(dict(movie_id=film.movie_id, predictions=predictions)))
    final = out / film.name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return dict(dir=film.name, movie_id=film.movie_id, trajectories=len(kept), clusters=len(predictions),
                faces=len(tags), images=n_images)  # fmt: skip
