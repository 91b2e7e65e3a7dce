"""The engine's grouping at every threshold on every labelled set at once: where one setting meets the targets.

    .venv/bin/python -m benchmarks.identity.sweep [--embedder hse] [--lo 0.50 --hi 0.66 --step 0.01]

Needs the outputs of ``benchmarks.identity.bench`` (the extracted clips under ``runs/identity/<clip>/`` and the
challenge stores under ``runs/identity/challenges/``). For each clip, the grouping is recomputed exactly as a run of
that one video computes it (``peers.engine_grouping``); for each challenge, ``group_individuals`` runs again on the
faces the pipeline stored (the same call the pipeline's cross-video step makes), at each threshold. Each cell is
purity / clusters per person / B-cubed F1, starred where purity >= 0.95 and at most 1.2 clusters per person; the
last column counts the sets where both hold. It answers "is there a threshold that meets the targets on every
set?" directly, without choosing one per set with the labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.identity.bench import CLIPS, CLUSTERS_TARGET, PURITY_TARGET
from benchmarks.identity.peers import VIEWS, engine_grouping, load
from benchmarks.identity.score import Scores, read_labels, score

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "runs" / "identity"
LABELS = REPO / "benchmarks" / "identity"


def clip_scores(stem: str, embedder: str, thresholds: list[float], min_quality: float | None = None) -> list[Scores]:
    from engine.config import ClusterSettings

    labels, views = read_labels(str(LABELS / f"{stem}.labels.csv"))
    faces, desc = load(RUNS / stem, embedder)
    ids = [f["face_id"] for f in faces]
    title, exclude, junk = VIEWS[0]
    out = []
    for t in thresholds:
        individual = engine_grouping(RUNS / stem, faces, desc, embedder, ClusterSettings(t, min_quality=min_quality))[0]
        out.append(score(labels, dict(zip(ids, individual, strict=True)), views, exclude, junk))
    return out


def challenge_scores(
    stem: str, embedder: str, thresholds: list[float], min_quality: float | None = None
) -> list[Scores]:
    from benchmarks.identity.challenges import UNMATCHED, label_stored_faces
    from engine.config import ClusterSettings
    from engine.pipeline.individuals import group_individuals, stored_faces
    from engine.store import Database

    folder = RUNS / "challenges" / f"{stem}_seg2"
    url = f"sqlite:///{folder / f'engine_{embedder}.db'}"
    labelled = label_stored_faces(url, folder, LABELS / f"{stem}.labels.csv", LABELS / f"{stem}.faces.csv")
    label_of = {f.face_id: (f.label, f.view) for f in labelled if f.label != UNMATCHED}
    db = Database(url)
    rows = [r for r in db.challenge_faces(f"identity_{stem}") if r["embedding"] is not None]
    faces = stored_faces(rows)
    ids = [str(i) for i in faces.face_id.tolist()]
    keep = [i for i, fid in enumerate(faces.face_id.tolist()) if fid in label_of]
    labels = {ids[i]: label_of[int(ids[i])][0] for i in keep}
    views = {ids[i]: label_of[int(ids[i])][1] for i in keep}
    title, exclude, junk = VIEWS[0]
    out = []
    for t in thresholds:
        of_face = group_individuals(faces, ClusterSettings(t, min_quality=min_quality), embedder).of_face.tolist()
        clusters = {ids[i]: (("none", i) if of_face[i] < 0 else of_face[i]) for i in keep}
        out.append(score(labels, clusters, views, exclude, junk))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embedder", default="hse", choices=("hse", "dlib"))
    ap.add_argument("--lo", type=float, default=0.50)
    ap.add_argument("--hi", type=float, default=0.66)
    ap.add_argument("--step", type=float, default=0.01)
    ap.add_argument("--min-quality", type=float, default=None, help="the quality floor (default: the engine's)")
    a = ap.parse_args()
    thresholds = [round(float(t), 4) for t in np.arange(a.lo, a.hi + a.step / 2, a.step)]
    columns: list[tuple[str, list[Scores]]] = []
    for stem, _ in CLIPS:
        columns.append((f"clip {stem}", clip_scores(stem, a.embedder, thresholds, a.min_quality)))
        columns.append((f"challenge {stem}", challenge_scores(stem, a.embedder, thresholds, a.min_quality)))
    floor = "default" if a.min_quality is None else a.min_quality
    print(
        f"engine grouping, {a.embedder}, quality floor {floor}: purity / clusters per person / B-cubed F1"
        f" (* = purity >= {PURITY_TARGET} and <= {CLUSTERS_TARGET} clusters per person)\n"
    )
    print("| threshold | " + " | ".join(name for name, _ in columns) + " | sets meeting both |")
    print("|---:|" + "---|" * len(columns) + "---:|")
    for k, t in enumerate(thresholds):
        cells, ok = [], 0
        for _, scores in columns:
            s = scores[k]
            good = s.purity >= PURITY_TARGET and s.clusters_per_person <= CLUSTERS_TARGET
            ok += good
            cells.append(f"{s.purity:.3f} / {s.clusters_per_person:.2f} / {s.f1:.3f}{' *' if good else ''}")
        print(f"| {t:.2f} | " + " | ".join(cells) + f" | {ok} of {len(columns)} |")


if __name__ == "__main__":
    main()
