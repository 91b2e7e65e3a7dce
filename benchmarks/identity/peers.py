"""The engine's grouping and simple peers on the same descriptors, scored against the labels made by eye.

    .venv/bin/python -m benchmarks.identity.peers runs/identity/friends_poker \
        benchmarks/identity/friends_poker.labels.csv

Reads what ``extract.py`` wrote (``faces.csv``, ``descriptors.npy``: dlib's 128-d descriptors) and prints one row
of :mod:`benchmarks.identity.score` figures per method, on the faces labelled with a person (all of them, then
without the ``partial`` ones):

- ``dlib chinese_whispers t``: ``dlib.chinese_whispers_clustering`` at Euclidean distance ``t`` (0.45, 0.5);
- ``DBSCAN eps=0.5 min=3``: DBSCAN on Euclidean distances (scikit-learn's when installed, else the small numpy one
  below; the same algorithm), eps 0.5 (between dlib's 0.45 recipe and its 0.6 same-person distance), 3 samples to
  make a core point; noise faces are singletons;
- ``engine``: the engine's grouping as a run does it for one video today: ``engine.track.track_video`` on the faces
  (frame index and boxes), then ``engine.pipeline.individuals.group_individuals`` with the default
  ``ClusterSettings`` (track means, constrained average linkage at cosine ``CLUSTER_THRESHOLD``); each face gets its
  track's individual. ``engine tracks`` scores the tracks alone (each track its own cluster).

``--write DIR`` also writes each method's ``face_id, cluster`` CSV there.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from benchmarks.identity.score import HEADER, read_labels, row, score


def load(out: Path) -> tuple[list[dict], np.ndarray]:
    with open(out / "faces.csv") as fh:
        faces = list(csv.DictReader(fh))
    desc = np.load(out / "descriptors.npy").astype(np.float64)
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


def engine_grouping(faces: list[dict], desc: np.ndarray) -> tuple[list[int], list[int]]:
    """(individual, track) of each face, as ``run`` groups one video's faces today."""
    import torch

    from engine.config import ClusterSettings
    from engine.pipeline.individuals import group_individuals
    from engine.track import track_video
    from engine.types import Faces, StoredFaces

    n = len(faces)
    long = torch.int64
    found = Faces(
        frame_index=torch.tensor([int(f["frame_index"]) for f in faces], dtype=long),
        face_index=torch.tensor([int(f["face_index"]) for f in faces], dtype=long),
        pts_s=torch.tensor([float(f["time_s"]) for f in faces], dtype=torch.float64),
        boxes=torch.tensor([[float(f[k]) for k in ("x1", "y1", "x2", "y2")] for f in faces], dtype=torch.float32),
        scores=torch.tensor([float(f["score"]) for f in faces], dtype=torch.float32),
        landmarks=torch.zeros(n, 10),
        rotation=torch.tensor([int(f["rotation"]) for f in faces], dtype=long),
        embedding=torch.from_numpy(desc.astype(np.float32)),
    )
    tracks = track_video(found).of_face
    stored = StoredFaces(
        face_id=torch.arange(n), video=torch.zeros(n, dtype=long), track=tracks.to(long),
        frame_index=found.frame_index, embedding=found.embedding, phash=torch.zeros(n, dtype=long),
        has_phash=torch.zeros(n, dtype=torch.bool), videos=["friends_poker"],
    )  # fmt: skip
    individuals = group_individuals(stored, ClusterSettings())
    return individuals.of_face.tolist(), tracks.tolist()


def methods(faces: list[dict], desc: np.ndarray) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for t in (0.45, 0.5):
        out[f"dlib chinese_whispers {t}"] = chinese_whispers(desc, t)
    out["DBSCAN eps=0.5 min=3"] = dbscan(desc, 0.5, 3)
    individual, track = engine_grouping(faces, desc)
    out["engine (tracks + group_individuals)"] = individual
    out["engine tracks only"] = track
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="runs/identity/friends_poker")
    ap.add_argument("labels", nargs="?", default="benchmarks/identity/friends_poker.labels.csv")
    ap.add_argument("--write", type=Path, help="folder for each method's face_id,cluster CSV")
    a = ap.parse_args()
    faces, desc = load(Path(a.out))
    labels, views = read_labels(a.labels)
    ids = [f["face_id"] for f in faces]
    missing = sorted(set(ids) - set(labels))
    if missing:
        raise SystemExit(f"{len(missing)} faces have no label (first: {missing[:5]}): were they extracted anew?")
    results = methods(faces, desc)
    for title, exclude in (("all faces labelled with a person", ()), ("without partial faces", ("partial",))):
        print(f"\n{title}\n{HEADER}")
        for name, clusters in results.items():
            print(row(name, score(labels, dict(zip(ids, clusters, strict=True)), views, exclude)))
    if a.write:
        a.write.mkdir(parents=True, exist_ok=True)
        for name, clusters in results.items():
            slug = "".join(c if c.isalnum() or c == "." else "_" for c in name).strip("_")
            with open(a.write / f"{slug}.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["face_id", "cluster"])
                w.writerows(zip(ids, clusters, strict=True))


if __name__ == "__main__":
    main()
