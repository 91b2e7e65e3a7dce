"""How ``engine.faces.quality`` ranks the labelled faces of a clip: per view class, and against ``QUALITY_FLOOR``.

    ENGINE_WEIGHTS_MIRROR=../shared/weights .venv/bin/python -m benchmarks.identity.quality_check

Runs the engine's faces stage on the clip (the settings of ``extract.py``: a frame every 0.5 s, default
``FaceSettings``, CPU) for the landmarks, which ``faces.csv`` lacks, cuts the chips again from the same sampled
frames, checks that the faces are those of ``faces.csv`` in the same order, and prints each view class's quality
distribution, the faces below the floor per class and per label, and every face's cues (``--faces``). ``--cache``
keeps the faces stage's output in an ``.npz`` so that later runs (a new ramp, say) take a second.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from engine.faces.quality import QUALITY_FLOOR, face_quality

DEFAULT_CLIP = "../shared/data/multi_person/friends_poker.mp4"
DEFAULT_RUN = "runs/identity/friends_poker"
DEFAULT_LABELS = "benchmarks/identity/friends_poker.labels.csv"


def faces_of_clip(clip: Path, interval: float) -> dict[str, np.ndarray]:
    """The faces stage's faces of ``clip``: ids, scores, landmarks and their chips (uint8), as numpy arrays."""
    from engine.faces.align import align_chips
    from engine.faces.batching import FaceModels, analyze_video
    from engine.faces.detect import Detections

    found = analyze_video(clip, FaceModels.load("cpu"), interval=interval, crops=False, keep_frames=True)
    faces = found.faces
    if found.sampled is None:
        raise RuntimeError("the faces stage did not keep the sampled frames")
    row_of = {int(k): i for i, k in enumerate(found.frames.index.tolist())}
    image = torch.tensor([row_of[int(k)] for k in faces.frame_index.tolist()], dtype=torch.int64)
    det = Detections(image, faces.boxes.float(), faces.scores.float(), faces.landmarks.float(), faces.rotation)
    chips = align_chips(found.sampled, det)
    ids = [f"f{a}_{b}" for a, b in zip(faces.frame_index.tolist(), faces.face_index.tolist(), strict=True)]
    return {
        "ids": np.array(ids),
        "scores": faces.scores.numpy(),
        "landmarks": faces.landmarks.numpy(),
        "chips": chips.to(torch.uint8).numpy(),
    }


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return " ".join(f"{v:.2f}" for v in q)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default=DEFAULT_CLIP)
    ap.add_argument("--run", default=DEFAULT_RUN, help="extract.py's output folder (for faces.csv)")
    ap.add_argument("--labels", default=DEFAULT_LABELS)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--cache", help="npz of the faces stage's output: read if it exists, else written")
    ap.add_argument("--floor", type=float, default=QUALITY_FLOOR)
    ap.add_argument("--faces", action="store_true", help="print every face's cues")
    args = ap.parse_args()
    os.environ.setdefault("ENGINE_WEIGHTS_MIRROR", "../shared/weights")

    if args.cache and Path(args.cache).exists():
        data = dict(np.load(args.cache))
    else:
        data = faces_of_clip(Path(args.clip), args.interval)
        if args.cache:
            np.savez_compressed(args.cache, **data)
    ids = [str(i) for i in data["ids"]]
    with open(Path(args.run) / "faces.csv") as fh:
        expected = [r["face_id"] for r in csv.DictReader(fh)]
    if ids != expected:
        raise SystemExit("the faces stage found other faces than faces.csv: different settings or engine")
    with open(args.labels) as fh:
        labels = {r["face_id"]: r for r in csv.DictReader(fh)}

    q = face_quality(
        torch.from_numpy(data["scores"]), torch.from_numpy(data["landmarks"]), torch.from_numpy(data["chips"]).float()
    )
    quality = q.quality.tolist()
    by_view: dict[str, list[float]] = defaultdict(list)
    by_label: dict[str, list[float]] = defaultdict(list)
    for fid, v in zip(ids, quality, strict=True):
        by_view[labels[fid]["view"]].append(v)
        by_label[labels[fid]["label"]].append(v)

    print(f"{len(ids)} faces, floor {args.floor}")
    print(f"{'class':10s} {'faces':>5s} {'below':>5s}  quality min / 25 % / median / 75 % / max")
    for name, groups in (("view", by_view), ("label", by_label)):
        print(f"-- by {name}")
        for key in sorted(groups):
            vals = groups[key]
            below = sum(v < args.floor for v in vals)
            print(f"{key:10s} {len(vals):5d} {below:5d}  {summary(vals)}")
    low = [i for i, fid in enumerate(ids) if labels[fid]["view"] == "face" and quality[i] < args.floor]
    yaws = sorted(abs(float(q.yaw[i])) for i in low)
    if yaws:
        print(f"'face' faces below the floor: {len(low)}, |yaw| {yaws[0]:.0f}..{yaws[-1]:.0f} degrees")
    if args.faces:
        print("\nface_id  label    view     quality score  iod  size sharp   yaw pitch  roll  expo  clip")
        cues = torch.stack(
            [
                q.quality,
                q.score,
                q.interocular_px,
                q.size_px,
                q.sharpness,
                q.yaw,
                q.pitch,
                q.roll,
                q.exposure,
                q.clipped,
            ],
            1,
        ).tolist()
        for i in sorted(range(len(ids)), key=lambda i: quality[i]):
            lab = labels[ids[i]]
            qq, s, iod, size, sh, yaw, pitch, roll, ex, cl = cues[i]
            print(
                f"{ids[i]:8s} {lab['label']:8s} {lab['view']:8s} {qq:6.2f} {s:6.3f} {iod:4.0f} {size:5.0f} {sh:5.3f} "
                f"{yaw:+5.0f} {pitch:+5.0f} {roll:+5.0f} {ex:5.2f} {cl:5.2f}"
            )


if __name__ == "__main__":
    main()
