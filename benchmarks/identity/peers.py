"""The engine's grouping and simple peers on the same descriptors, scored against the labels made by eye.

    .venv/bin/python -m benchmarks.identity.peers runs/identity/friends_poker \
        benchmarks/identity/friends_poker.labels.csv [--embedder dlib|hse|both]

Reads what ``extract.py`` wrote (``faces.csv``; ``descriptors.npy``: dlib's 128-d descriptors;
``descriptors_hse.npy``: HSE's 1024-d unit descriptors of the same faces) and prints, per embedder, one row of
:mod:`benchmarks.identity.score` figures per method, on the faces labelled with a person (all of them, then without
the ``partial`` ones).

dlib (Euclidean distances, dlib's own scale):

- ``dlib chinese_whispers t``: ``dlib.chinese_whispers_clustering`` at Euclidean distance ``t`` (0.45, 0.5);
- ``DBSCAN eps=0.5 min=3``: DBSCAN on Euclidean distances (scikit-learn's when installed, else the small numpy one
  below; the same algorithm), eps 0.5 (between dlib's 0.45 recipe and its 0.6 same-person distance), 3 samples to
  make a core point; noise faces are singletons;

HSE (cosine distance ``1 - cos``; on unit vectors Euclidean distance is ``sqrt(2 (1 - cos))``, so both peers run at
that Euclidean equivalent): HSE has no published same-person distance for this network, so its thresholds are **a
fixed sweep, not tuned on the labels**: cosine distances ``HSE_SWEEP`` (0.25, 0.3, 0.35, 0.4), all below a
label-free anchor, the smallest cosine distance between two faces of one frame (two faces on screen at once are two
people; the script prints it). Every sweep row is shown; the best of them is an optimistic figure (picking it would
use the labels).

Both embedders:

- ``engine (default, cos c)``: the engine's grouping exactly as a challenge run of this one clip computes it
  (:func:`engine_grouping`): the tracker with the embedder's appearance gate and the shot cuts found in the sampled
  frames, then ``engine.pipeline.individuals.group_individuals`` (votes of the faces over the quality floor,
  constrained centroid linkage at the embedder's ``group_similarity`` ``c``); each face gets its track's individual,
  or none when its track had no face good enough to vote and matched no individual clearly (scored as unassigned,
  see ``score.py``).
  ``engine tracks only`` scores the tracks alone; ``engine @ cos t`` the same grouping at other thresholds, to show
  where the default sits (it was chosen from these rows on every labelled clip, see RESULTS.md).

``--write DIR`` also writes each method's ``face_id, cluster`` CSV there.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.identity.score import HEADER, Scores, read_labels, row, score

if TYPE_CHECKING:
    from engine.config import ClusterSettings


#: HSE cosine distances swept by the peers (see the module docstring: fixed, not tuned on the labels).
HSE_SWEEP = (0.25, 0.3, 0.35, 0.4)
#: Average-linkage cosines at which the engine's grouping is also shown (its default is each embedder's
#: ``group_similarity``, chosen from these rows on every labelled clip: see RESULTS.md).
SWEEP = {"hse": (0.5, 0.55, 0.6, 0.625, 0.65, 0.675, 0.7), "dlib": (0.88, 0.9, 0.92, 0.93, 0.94, 0.95, 0.96)}
DESCRIPTORS = {"dlib": "descriptors.npy", "hse": "descriptors_hse.npy"}


def load(out: Path, embedder: str = "dlib") -> tuple[list[dict], np.ndarray]:
    with open(out / "faces.csv") as fh:
        faces = list(csv.DictReader(fh))
    desc = np.load(out / DESCRIPTORS[embedder]).astype(np.float64)
    if len(faces) != len(desc):
        raise SystemExit(f"{out}: {len(faces)} faces but {len(desc)} descriptors")
    return faces, desc


def chinese_whispers(desc: np.ndarray, threshold: float) -> list[int]:
    import dlib

    return list(dlib.chinese_whispers_clustering([dlib.vector(v.tolist()) for v in desc], threshold))


def dbscan(desc: np.ndarray, eps: float, min_samples: int) -> list[int]:
    """DBSCAN labels (-1: noise) on Euclidean distances; a point counts itself among its neighbours."""
    try:
        from sklearn.cluster import DBSCAN
    except ImportError:
        pass
    else:
        return DBSCAN(eps=eps, min_samples=min_samples).fit(desc).labels_.tolist()
    d = np.linalg.norm(desc[:, None] - desc[None], axis=2)
    neighbours = [np.flatnonzero(r <= eps) for r in d]
    core = np.array([len(n) >= min_samples for n in neighbours])
    labels = np.full(len(desc), -1)
    cluster = 0
    for i in range(len(desc)):
        if labels[i] != -1 or not core[i]:
            continue
        labels[i], stack = cluster, [i]
        while stack:
            j = stack.pop()
            if not core[j]:
                continue
            for k in neighbours[j]:
                if labels[k] == -1:
                    labels[k] = cluster
                    stack.append(k)
        cluster += 1
    return labels.tolist()


def engine_grouping(
    out: Path, faces: list[dict], desc: np.ndarray, embedder: str, settings: ClusterSettings | None = None
) -> tuple[list, list[int]]:
    """(individual, track) of each face exactly as a challenge run of this one clip computes them: the tracker
    with the embedder's appearance gate and the shot cuts of ``frames.csv``, then
    ``engine.pipeline.individuals.group_individuals`` with the faces' quality. A face with no individual (its
    track had no face good enough to vote and was not attached) is its own singleton ``("none", i)``."""
    import torch

    from engine.config import ClusterSettings
    from engine.pipeline.individuals import group_individuals
    from engine.track import TrackerSettings, track_video
    from engine.types import QUALITY_COLUMNS, Faces, Frames, StoredFaces

    n = len(faces)
    long = torch.int64
    found = Faces(
        frame_index=torch.tensor([int(f["frame_index"]) for f in faces], dtype=long),
        face_index=torch.tensor([int(f["face_index"]) for f in faces], dtype=long),
        pts_s=torch.tensor([float(f["time_s"]) for f in faces], dtype=torch.float64),
        boxes=torch.tensor([[float(f[k]) for k in ("x1", "y1", "x2", "y2")] for f in faces], dtype=torch.float32),
        scores=torch.tensor([float(f["score"]) for f in faces], dtype=torch.float32),
        landmarks=torch.tensor([[float(v) for v in f["landmarks"].split()] for f in faces]).reshape(n, 10),
        rotation=torch.tensor([int(f["rotation"]) for f in faces], dtype=long),
        embedding=torch.from_numpy(desc.astype(np.float32)),
        quality=torch.tensor([[float(f.get(c) or "nan") for c in QUALITY_COLUMNS] for f in faces]).reshape(n, -1),
    )
    with open(out / "frames.csv") as fh:
        rows = list(csv.DictReader(fh))
    frames = Frames(
        torch.tensor([int(r["frame_index"]) for r in rows]), torch.zeros(len(rows), dtype=torch.float64),
        torch.tensor([float(r["pts_s"]) for r in rows], dtype=torch.float64), torch.zeros(len(rows), dtype=long),
        torch.zeros(len(rows), dtype=long), torch.tensor([float(r["change"]) for r in rows]),
    )  # fmt: skip
    tracks = track_video(found, (), TrackerSettings.for_embedder(embedder), frames=frames, appearance=True).of_face
    column = "magnitude_hse" if embedder == "hse" else "magnitude"  # faces.csv's own magnitude is dlib's
    magnitude = torch.tensor([float(f.get(column) or "nan") for f in faces], dtype=torch.float32)
    stored = StoredFaces(
        face_id=torch.arange(n), video=torch.zeros(n, dtype=long), track=tracks.to(long),
        frame_index=found.frame_index, boxes=found.boxes, embedding=found.embedding, phash=torch.zeros(n, dtype=long),
        has_phash=torch.zeros(n, dtype=torch.bool), quality=found.overall_quality,
        magnitude=magnitude, videos=[out.name], names=[out.name],
    )  # fmt: skip
    individuals = group_individuals(stored, settings or ClusterSettings(), embedder)
    individual = [("none", i) if v < 0 else v for i, v in enumerate(individuals.of_face.tolist())]
    return individual, tracks.tolist()


def same_frame_min(faces: list[dict], unit: np.ndarray) -> float:
    """The smallest cosine distance between two faces of one frame (two people by construction: no labels used)."""
    frame = np.array([int(f["frame_index"]) for f in faces])
    d = 1 - unit @ unit.T
    pair = (frame[:, None] == frame[None]) & np.triu(np.ones(d.shape, dtype=bool), 1)
    return float(d[pair].min()) if pair.any() else float("nan")


def methods(out: Path, faces: list[dict], desc: np.ndarray, embedder: str = "dlib") -> dict[str, list]:
    from engine.config import ClusterSettings
    from engine.faces.embedders import embedder_spec

    result: dict[str, list] = {}
    if embedder == "dlib":
        for t in (0.45, 0.5):
            result[f"dlib chinese_whispers {t}"] = chinese_whispers(desc, t)
        result["DBSCAN eps=0.5 min=3"] = dbscan(desc, 0.5, 3)
    else:
        unit = desc / np.linalg.norm(desc, axis=1, keepdims=True)
        for t in HSE_SWEEP:
            result[f"chinese_whispers cos dist {t}"] = chinese_whispers(unit, float(np.sqrt(2 * t)))
        for t in HSE_SWEEP:
            result[f"DBSCAN cos dist {t} min=3"] = dbscan(unit, float(np.sqrt(2 * t)), 3)
    default = embedder_spec(embedder).group_similarity
    individual, track = engine_grouping(out, faces, desc, embedder)
    result[f"engine (default, cos {default:.2f})"] = individual
    result["engine tracks only"] = track
    for t in SWEEP[embedder]:
        if abs(t - default) > 1e-9:
            result[f"engine @ cos {t:.2f}"] = engine_grouping(out, faces, desc, embedder, ClusterSettings(t))[0]
    return result


def titles(embedder: str) -> str:
    from engine.faces.embedders import embedder_spec

    default = embedder_spec(embedder).group_similarity
    if embedder == "dlib":
        return f"dlib 128-d (peers: Euclidean distance; engine: cosine of mean directions, default {default})"
    sweep = ", ".join(str(t) for t in HSE_SWEEP)
    return (
        f"HSE 1024-d (cosine distance): peers at a FIXED SWEEP of cosine distances {sweep}, not tuned on the labels"
        f" (best row = optimistic); engine: cosine of mean directions, default {default}"
    )


#: The ways every table is scored: (title, views excluded, false detections scored as classes of their own).
VIEWS = (
    ("all faces labelled with a person", (), False),
    ("without partial faces", ("partial",), False),
    ("persons and false detections (each no_face its own class)", (), True),
)


def clip_results(out: Path, labels_csv: Path, embedder: str) -> tuple[dict[str, dict[str, Scores]], dict]:
    """Per scoring view, every method's :class:`Scores` on one extracted clip, and the methods' clusterings."""
    labels, views = read_labels(str(labels_csv))
    faces, desc = load(out, embedder)
    ids = [f["face_id"] for f in faces]
    missing = sorted(set(ids) - set(labels))
    if missing:
        raise SystemExit(f"{len(missing)} faces have no label (first: {missing[:5]}): were they extracted anew?")
    results = methods(out, faces, desc, embedder)
    table = {
        title: {name: score(labels, dict(zip(ids, c, strict=True)), views, ex, junk) for name, c in results.items()}
        for title, ex, junk in VIEWS
    }
    return table, {"ids": ids, "results": results, "faces": faces, "desc": desc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="runs/identity/friends_poker")
    ap.add_argument("labels", nargs="?", default="benchmarks/identity/friends_poker.labels.csv")
    ap.add_argument("--embedder", choices=("dlib", "hse", "both"), default="both")
    ap.add_argument("--write", type=Path, help="folder for each method's face_id,cluster CSV")
    a = ap.parse_args()
    for embedder in ("dlib", "hse") if a.embedder == "both" else (a.embedder,):
        table, extra = clip_results(Path(a.out), Path(a.labels), embedder)
        unit = extra["desc"] / np.linalg.norm(extra["desc"], axis=1, keepdims=True)
        print(f"\n=== {titles(embedder)}")
        print(f"label-free anchor: smallest cosine distance between two faces of one frame = "
              f"{same_frame_min(extra['faces'], unit):.3f}")  # fmt: skip
        for title, scores in table.items():
            print(f"\n{title}\n{HEADER}")
            for name, s in scores.items():
                print(row(name, s))
        if a.write:
            a.write.mkdir(parents=True, exist_ok=True)
            for name, clusters in extra["results"].items():
                slug = "".join(c if c.isalnum() or c == "." else "_" for c in f"{embedder} {name}").strip("_")
                with open(a.write / f"{slug}.csv", "w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(["face_id", "cluster"])
                    w.writerows(zip(extra["ids"], clusters, strict=True))


if __name__ == "__main__":
    main()
