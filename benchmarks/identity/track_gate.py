"""How pure the engine's tracks are on a labelled clip with and without the tracker's appearance gate.

    .venv/bin/python -m benchmarks.identity.track_gate [runs/identity/friends_poker] [labels.csv]

Reads what ``extract.py`` wrote (``faces.csv``, ``descriptors.npy``, ``descriptors_hse.npy``) and scores
``engine.track.track_faces`` as a run calls it today (boxes only, the selfie rule on), then with descriptors given
(``TrackerSettings.max_appearance_distance``: dlib at its default 0.6, HSE at cosine distance 0.3/0.35/0.4 as the
Euclidean distance on unit vectors ``sqrt(2 t)``); each track is one cluster, scored on the faces labelled with a
person (:mod:`benchmarks.identity.score`).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from benchmarks.identity.score import read_labels, score
from engine.track import TrackerSettings, track_faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="runs/identity/friends_poker")
    ap.add_argument("labels", nargs="?", default="benchmarks/identity/friends_poker.labels.csv")
    args = ap.parse_args()
    out = Path(args.out)
    rows = list(csv.DictReader((out / "faces.csv").open()))
    labels, views = read_labels(args.labels)
    frame = torch.tensor([int(r["frame_index"]) for r in rows])
    boxes = torch.tensor([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in rows])
    dlib = torch.from_numpy(np.load(out / "descriptors.npy")).float()
    hse = torch.from_numpy(np.load(out / "descriptors_hse.npy")).float()
    cases = [("boxes only, selfie rule (today)", {}, None), ("dlib gate 0.6", {}, dlib)]
    cases += [(f"hse gate cos {c}", {"max_appearance_distance": (2 * c) ** 0.5}, hse) for c in (0.3, 0.35, 0.4)]
    print(f"{'tracker':34s} tracks purity     P     R    F1")
    for name, kw, emb in cases:
        tracks = track_faces(frame, boxes, TrackerSettings(**kw), embeddings=emb)
        s = score(labels, {r["face_id"]: int(t) for r, t in zip(rows, tracks.tolist(), strict=True)}, views)
        print(f"{name:34s} {int(tracks.max()) + 1:6d} {s.purity:6.3f} {s.precision:5.3f} {s.recall:5.3f} {s.f1:5.3f}")


if __name__ == "__main__":
    main()
