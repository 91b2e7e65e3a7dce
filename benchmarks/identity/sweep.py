"""The engine's grouping at every threshold on every labelled set at once: where one setting meets the targets.

    .venv/bin/python -m benchmarks.identity.sweep [--embedder hse] [--vary threshold|pair|quality] [--lo 0.58 --hi 0.70]

Needs the outputs of ``benchmarks.identity.bench`` (the extracted clips under ``runs/identity/<clip>/`` and the
challenge stores under ``runs/identity/challenges/``). For each clip, the grouping is recomputed exactly as a run of
that one video computes it (``peers.engine_grouping``); for each challenge, ``group_individuals`` runs again on the
faces the pipeline stored (the same call the pipeline's cross-video step makes), at each value. A last set pools
the three challenges into one (about 45 people from three unrelated sources, as one larger challenge would hold
them): a grouping that merges across sources there holds several people in one individual. ``--vary`` picks the
value swept: ``threshold`` (the cosine of two groups' mean directions), ``pair`` (their faces' mean pairwise
cosine) or ``quality`` (the floor under which a face does not vote); the others stay at their defaults. Each
cell is purity / clusters per person / B-cubed F1, starred where purity >= 0.95 and at most 1.2 clusters per
person; the last column counts the sets where both hold. It answers "is there a setting that meets the targets
on every set?" directly, without choosing one per set with the labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.identity.bench import CLIPS, CLUSTERS_TARGET, PURITY_TARGET
from benchmarks.identity.peers import VIEWS, engine_grouping, load
from benchmarks.identity.score import IGNORED, Scores, read_labels, score
from engine.faces.embedders import embedder_spec
from engine.faces.quality import QUALITY_FLOOR

if TYPE_CHECKING:
    from engine.config import ClusterSettings
    from engine.types import StoredFaces

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "runs" / "identity"
LABELS = REPO / "benchmarks" / "identity"
#: ``--vary`` choices and the ``ClusterSettings`` field each sweeps.
SWEPT = {
    "threshold": "threshold", "pair": "pair_threshold", "quality": "min_quality", "magnitude": "confident_magnitude",
    "unreadable": "unreadable_magnitude",
}  # fmt: skip


def clip_scores(stem: str, embedder: str, settings: list[ClusterSettings]) -> list[Scores]:
    labels, views = read_labels(str(LABELS / f"{stem}.labels.csv"))
    faces, desc = load(RUNS / stem, embedder)
    ids = [f["face_id"] for f in faces]
    title, exclude, junk = VIEWS[0]
    out = []
    for setting in settings:
        individual = engine_grouping(RUNS / stem, faces, desc, embedder, setting)[0]
        out.append(score(labels, dict(zip(ids, individual, strict=True)), views, exclude, junk))
    return out


def challenge_faces(stem: str, embedder: str) -> tuple[StoredFaces, dict[int, str], dict[int, str]]:
    """A challenge's stored faces (with a descriptor) and the label and view of each labelled one, by face index."""
    from benchmarks.identity.challenges import UNMATCHED, label_stored_faces
    from engine.pipeline.individuals import stored_faces
    from engine.store import Database

    folder = RUNS / "challenges" / f"{stem}_seg2"
    url = f"sqlite:///{folder / f'engine_{embedder}.db'}"
    labelled = label_stored_faces(url, folder, LABELS / f"{stem}.labels.csv", LABELS / f"{stem}.faces.csv")
    label_of = {f.face_id: (f.label, f.view) for f in labelled if f.label != UNMATCHED}
    db = Database(url)
    rows = [r for r in db.challenge_faces(f"identity_{stem}") if r["embedding"] is not None]
    db.dispose()
    faces = stored_faces(rows)
    fids = faces.face_id.tolist()
    labels = {i: label_of[f][0] for i, f in enumerate(fids) if f in label_of}
    views = {i: label_of[f][1] for i, f in enumerate(fids) if f in label_of}
    return faces, labels, views


def pooled(
    sets: list[tuple[StoredFaces, dict[int, str], dict[int, str]]], names: list[str]
) -> tuple[StoredFaces, dict[int, str], dict[int, str]]:
    """Several challenges' faces as one challenge (videos kept apart, labels prefixed with their set's name)."""
    import torch

    from engine.types import StoredFaces

    parts, labels, views, start = [], {}, {}, 0
    for (faces, lab, view), name in zip(sets, names, strict=True):
        parts.append(faces)
        labels.update({start + i: v if v in IGNORED else f"{name}:{v}" for i, v in lab.items()})
        views.update({start + i: v for i, v in view.items()})
        start += len(faces.face_id)
    videos = [v for f in parts for v in f.videos]
    offsets = torch.cumsum(torch.tensor([0] + [len(f.videos) for f in parts[:-1]]), 0)
    joined = StoredFaces(
        face_id=torch.arange(start), video=torch.cat([f.video + int(o) for f, o in zip(parts, offsets, strict=True)]),
        track=torch.cat([f.track for f in parts]), frame_index=torch.cat([f.frame_index for f in parts]),
        boxes=torch.cat([f.boxes for f in parts]), embedding=torch.cat([f.embedding.float() for f in parts]),
        phash=torch.cat([f.phash for f in parts]), has_phash=torch.cat([f.has_phash for f in parts]),
        quality=torch.cat([f.quality for f in parts]), magnitude=torch.cat([f.magnitude for f in parts]),
        videos=videos, names=[n for f in parts for n in f.names],
    )  # fmt: skip
    return joined, labels, views


def stored_scores(
    embedder: str, faces: StoredFaces, labels: dict[int, str], views: dict[int, str], settings: list[ClusterSettings]
) -> list[Scores]:
    """Scores of ``group_individuals`` on stored faces at each setting."""
    from engine.pipeline.individuals import group_individuals

    title, exclude, junk = VIEWS[0]
    out = []
    for setting in settings:
        of_face = group_individuals(faces, setting, embedder).of_face.tolist()
        clusters = {str(i): (("none", i) if of_face[i] < 0 else of_face[i]) for i in labels}
        out.append(score({str(i): v for i, v in labels.items()}, clusters, {str(i): v for i, v in views.items()},
                         exclude, junk))  # fmt: skip
    return out


def main() -> None:
    from engine.config import ClusterSettings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embedder", default="hse", choices=("hse", "dlib"))
    ap.add_argument("--vary", default="threshold", choices=tuple(SWEPT), help="the value swept")
    ap.add_argument("--lo", type=float, default=0.58)
    ap.add_argument("--hi", type=float, default=0.70)
    ap.add_argument("--step", type=float, default=0.01)
    ap.add_argument("--min-quality", type=float, default=None, help="the quality floor (default: the engine's)")
    ap.add_argument(
        "--hold", action="append", default=[], metavar="NAME=VALUE",
        help=f"hold another value at VALUE instead of its default (NAME one of {', '.join(SWEPT)}; repeatable)",
    )  # fmt: skip
    a = ap.parse_args()
    values = [round(float(t), 4) for t in np.arange(a.lo, a.hi + a.step / 2, a.step)]
    key = SWEPT[a.vary]
    fixed = {} if key == "min_quality" else {"min_quality": a.min_quality}
    for item in a.hold:
        name, _, value = item.partition("=")
        if name not in SWEPT or SWEPT[name] == key or not value:
            ap.error(f"--hold {item!r}: expected NAME=VALUE, NAME one of {', '.join(SWEPT)} other than --vary")
        fixed[SWEPT[name]] = float(value)
    settings = [ClusterSettings(**{key: v}, **fixed) for v in values]
    columns: list[tuple[str, list[Scores]]] = []
    challenges = []
    for stem, _ in CLIPS:
        columns.append((f"clip {stem}", clip_scores(stem, a.embedder, settings)))
        challenges.append(challenge_faces(stem, a.embedder))
        columns.append((f"challenge {stem}", stored_scores(a.embedder, *challenges[-1], settings)))
    pool = pooled(challenges, [stem for stem, _ in CLIPS])
    columns.append(("the three challenges pooled", stored_scores(a.embedder, *pool, settings)))
    spec = embedder_spec(a.embedder)
    held = {
        "threshold": f"threshold {spec.group_similarity}",
        "pair_threshold": f"pair threshold {spec.group_pair_similarity}",
        "min_quality": f"quality floor {QUALITY_FLOOR if a.min_quality is None else a.min_quality}",
        "confident_magnitude": f"confident magnitude {spec.confident_magnitude}",
        "unreadable_magnitude": f"unreadable magnitude {spec.unreadable_magnitude}",
    }
    held.update({k: f"{k.replace('_', ' ')} {v} (held)" for k, v in fixed.items() if k != "min_quality"})
    other = ", ".join(v for k, v in held.items() if k != key)
    print(
        f"engine grouping, {a.embedder}, {a.vary} swept, {other}: purity / clusters per person"
        f" / B-cubed F1 (* = purity >= {PURITY_TARGET} and <= {CLUSTERS_TARGET} clusters per person)\n"
    )
    print(f"| {a.vary} | " + " | ".join(name for name, _ in columns) + " | sets meeting both |")
    print("|---:|" + "---|" * len(columns) + "---:|")
    for k, t in enumerate(values):
        cells, ok = [], 0
        for _, scores in columns:
            s = scores[k]
            good = s.purity >= PURITY_TARGET and s.clusters_per_person <= CLUSTERS_TARGET
            ok += good
            cells.append(f"{s.purity:.3f} / {s.clusters_per_person:.2f} / {s.f1:.3f}{' *' if good else ''}")
        print(f"| {t:.2f} | " + " | ".join(cells) + f" | {ok} of {len(columns)} |")


if __name__ == "__main__":
    main()
