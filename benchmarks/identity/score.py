"""Scores of a face clustering against identity labels made by eye: purity, clusters per person, B-cubed.

    .venv/bin/python -m benchmarks.identity.score benchmarks/identity/friends_poker.labels.csv clustering.csv

``labels.csv`` has ``face_id, time_s, label[, view]``; ``clustering.csv`` has ``face_id, cluster``. Definitions
(also in ``LABELS.md``):

- **Scored faces**: the faces whose label is a person, i.e. not ``unknown`` and not ``no_face``, and that the
  clustering assigns. Unknown and false detections are left out of every figure (they have no true person to be
  right or wrong about); how a method treats them is not measured here. ``exclude_views`` drops faces by their
  ``view`` column as well (e.g. ``partial``: faces cut by the frame edge or seen from behind).
- A face with no cluster (``None``, a negative id or a ``("none", ...)`` tuple: DBSCAN noise, or the engine's faces
  whose track had no face good enough to vote and was not attached to an individual) is *unassigned*: its own
  singleton cluster for purity and B-cubed (so it costs recall), not a cluster a person is split into for clusters
  per person; ``assigned`` is the share of scored faces that are in a cluster.
- **False detections** (optional view): each ``no_face`` face is scored as a class of its own, so a method that
  groups hands or plates with a person pays for it in precision and purity, and one that leaves them alone does not.
- **Purity**: each cluster counts its most frequent person; the sum over clusters divided by the scored faces.
- **Clusters per person** (``clusters_per_person``): for each person, the number of distinct clusters their
  assigned faces fall into (at least 1); the mean over persons (1.0 is ideal). ``clusters_90``: for each person,
  the fewest clusters that hold at least 90 % of their assigned faces (largest clusters first); the mean over
  persons (less sensitive to one stray face).
- **B-cubed** (Bagga & Baldwin 1998, as in Amigó et al. 2009): for each face, precision is the share of its cluster
  that is its person, recall the share of its person that is in its cluster; both averaged over the scored faces,
  F1 their harmonic mean.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

IGNORED = frozenset({"unknown", "no_face"})


@dataclass(frozen=True)
class Scores:
    faces: int
    persons: int
    clusters: int
    purity: float
    clusters_per_person: float
    clusters_90: float
    precision: float
    recall: float
    f1: float
    assigned: float = 1.0


def scored_pairs(
    labels: Mapping[str, str],
    clustering: Mapping[str, object],
    views: Mapping[str, str] | None = None,
    exclude_views: Iterable[str] = (),
    false_detections: bool = False,
) -> list[tuple[str, object]]:
    """``(person, cluster)`` of every scored face, in face-id order; unassigned faces get a singleton cluster. With
    ``false_detections``, each ``no_face`` face is scored too, as a class of its own: left alone it is right,
    grouped with a person it costs that group precision (a hand in someone's individual)."""
    drop = set(exclude_views)
    out = []
    for fid in sorted(labels):
        person = labels[fid]
        if false_detections and person == "no_face" and fid in clustering:
            person = f"no_face:{fid}"
        elif person in IGNORED or fid not in clustering or (views and views.get(fid) in drop):
            continue
        c = clustering[fid]
        if unassigned(c):
            c = ("singleton", fid)
        out.append((person, c))
    return out


def unassigned(cluster: object) -> bool:
    """No cluster: ``None``, a negative id, or a ``("none", ...)``/``("singleton", ...)`` tuple."""
    if isinstance(cluster, tuple):
        return bool(cluster) and cluster[0] in ("none", "singleton")
    return cluster is None or (isinstance(cluster, int | float) and cluster < 0)


def purity(pairs: list[tuple[str, object]]) -> float:
    by_cluster: dict[object, Counter] = {}
    for person, c in pairs:
        by_cluster.setdefault(c, Counter())[person] += 1
    return sum(cnt.most_common(1)[0][1] for cnt in by_cluster.values()) / len(pairs)


def clusters_per_person(pairs: list[tuple[str, object]], share: float | None = None) -> float:
    """Mean over persons of the distinct clusters their faces fall into; with ``share``, of the fewest clusters
    (largest first) holding at least that share of their faces."""
    by_person: dict[str, Counter] = {}
    for person, c in pairs:
        by_person.setdefault(person, Counter())
        if not unassigned(c):
            by_person[person][c] += 1
    counts = []
    for cnt in by_person.values():
        if share is None or not cnt:
            counts.append(max(1, len(cnt)))
            continue
        total, held, k = sum(cnt.values()), 0, 0
        for _, n in cnt.most_common():
            held, k = held + n, k + 1
            if held >= share * total - 1e-9:
                break
        counts.append(k)
    return sum(counts) / len(counts)


def bcubed(pairs: list[tuple[str, object]]) -> tuple[float, float, float]:
    """B-cubed precision, recall and F1."""
    cluster_size = Counter(c for _, c in pairs)
    person_size = Counter(p for p, _ in pairs)
    both = Counter(pairs)
    p = sum(both[(pp, c)] / cluster_size[c] for pp, c in pairs) / len(pairs)
    r = sum(both[(pp, c)] / person_size[pp] for pp, c in pairs) / len(pairs)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def score(
    labels: Mapping[str, str],
    clustering: Mapping[str, object],
    views: Mapping[str, str] | None = None,
    exclude_views: Iterable[str] = (),
    false_detections: bool = False,
) -> Scores:
    pairs = scored_pairs(labels, clustering, views, exclude_views, false_detections)
    if not pairs:
        nan = math.nan
        return Scores(0, 0, 0, nan, nan, nan, nan, nan, nan)
    p, r, f = bcubed(pairs)
    return Scores(
        faces=len(pairs), persons=len({x for x, _ in pairs}), clusters=len({c for _, c in pairs if not unassigned(c)}),
        purity=purity(pairs), clusters_per_person=clusters_per_person(pairs),
        clusters_90=clusters_per_person(pairs, 0.9), precision=p, recall=r, f1=f,
        assigned=sum(not unassigned(c) for _, c in pairs) / len(pairs),
    )  # fmt: skip


def read_labels(path: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(labels, views)`` by face id from a labels CSV."""
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return {r["face_id"]: r["label"] for r in rows}, {r["face_id"]: r.get("view") or "face" for r in rows}


def read_clustering(path: str) -> dict[str, object]:
    with open(path) as fh:
        return {r["face_id"]: (None if r["cluster"] == "" else r["cluster"]) for r in csv.DictReader(fh)}


HEADER = (
    f"{'method':<36} {'faces':>5} {'clust':>5} {'purity':>6} {'cl/pers':>7} {'cl90':>5} {'P':>5} {'R':>5} {'F1':>5}"
    f" {'assigned':>8}"
)


def row(name: str, s: Scores) -> str:
    return (
        f"{name:<36} {s.faces:>5} {s.clusters:>5} {s.purity:>6.3f} {s.clusters_per_person:>7.2f} "
        f"{s.clusters_90:>5.2f} {s.precision:>5.3f} {s.recall:>5.3f} {s.f1:>5.3f} {s.assigned:>8.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels")
    ap.add_argument("clustering", help="CSV with face_id, cluster")
    ap.add_argument("--exclude-view", action="append", default=[], help="drop faces with this view (e.g. partial)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    labels, views = read_labels(a.labels)
    s = score(labels, read_clustering(a.clustering), views, a.exclude_view)
    print(asdict(s) if a.json else f"{HEADER}\n{row(a.clustering, s)}")


if __name__ == "__main__":
    main()
