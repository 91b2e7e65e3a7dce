"""Faces of one clip, as the engine's faces stage finds them, written out for labelling and scoring.

    ENGINE_WEIGHTS_MIRROR=../shared/weights .venv/bin/python -m benchmarks.identity.extract \
        ../shared/data/multi_person/friends_poker.mp4 runs/identity/friends_poker

Writes to the output folder:

- ``faces.csv``: one row per detected face, ``face_id`` (``f{frame_index}_{face_index}``, stable for a given clip,
  interval and detector settings), ``frame_index``, ``face_index``, ``time_s``, ``x1, y1, x2, y2`` (frame pixels),
  ``score``, ``rotation``, then ``landmarks`` (10 numbers, space-separated), the quality columns of
  ``engine.types.QUALITY_COLUMNS`` (``engine.faces.quality``; ``magnitude`` is dlib's, the pass's embedder) and
  ``magnitude_hse`` (the HSE network's descriptor magnitude);
- ``frames.csv``: each sampled frame's ``frame_index``, ``pts_s`` and ``change`` (the content change since the
  previous sampled frame, from which the tracker finds shot cuts);
- ``crops/{face_id}.jpg``: the engine's aligned crop of each face (what the embedder saw);
- ``frames/{frame_index}.jpg``: each sampled frame, as decoded by the engine (for context crops in the sheets);
- ``descriptors.npy``: float32 ``[F, 128]`` dlib descriptors, row ``i`` is row ``i`` of ``faces.csv``;
- ``descriptors_hse.npy``: float32 ``[F, 1024]`` unit HSE descriptors (``engine.faces.embed_hse``) of the same faces,
  in the same order: the same sampled frames (kept from the same pass) and the engine's boxes;
- ``face_ids.json``: the face ids in that order; ``meta.json``: clip, interval, detector settings, engine device.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from engine.types import VideoFaces

DEFAULT_CLIP = "../shared/data/multi_person/friends_poker.mp4"
DEFAULT_OUT = "runs/identity/friends_poker"


def face_id(frame_index: int, face_index: int) -> str:
    return f"f{frame_index}_{face_index}"


def hse_descriptors(found: VideoFaces, device: str) -> tuple[np.ndarray, np.ndarray]:
    """HSE descriptors ``[F, 1024]`` of ``found.faces`` in their order, from the sampled frames kept by the same
    pass (``found.sampled``, one per ``found.frames`` row) and the engine's boxes, and their magnitudes ``[F]``."""
    import torch

    from engine.faces.detect import Detections
    from engine.faces.embed_hse import HSEEmbedder

    faces = found.faces
    if found.sampled is None or len(found.sampled) != len(found.frames.index):
        raise RuntimeError("the faces stage did not keep the sampled frames")
    row_of = {int(k): i for i, k in enumerate(found.frames.index.tolist())}
    image = torch.tensor([row_of[int(k)] for k in faces.frame_index.tolist()], dtype=torch.int64)
    det = Detections(image, faces.boxes.float(), faces.scores.float(), faces.landmarks.float(), faces.rotation)
    desc, magnitude = HSEEmbedder(device, "fp32").embed_faces(found.sampled, det)
    return desc.cpu().numpy(), magnitude.cpu().numpy()


def extract(clip: Path, out: Path, interval: float = 0.5, device: str = "cpu") -> int:
    """Run the faces stage on ``clip`` and write its faces to ``out``; returns the number of faces."""
    from engine.config import FaceSettings
    from engine.faces.batching import FaceModels, analyze_video
    from engine.types import QUALITY_COLUMNS

    models = FaceModels.load(device, FaceSettings(embedder="dlib"))
    found = analyze_video(clip, models, interval=interval, crops=True, frame_jpegs=True, keep_frames=True)
    faces = found.faces
    hse, hse_magnitude = hse_descriptors(found, device)
    out.mkdir(parents=True, exist_ok=True)
    (out / "crops").mkdir(exist_ok=True)
    ids: list[str] = []
    with open(out / "faces.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["face_id", "frame_index", "face_index", "time_s", "x1", "y1", "x2", "y2", "score", "rotation",
             "landmarks", *QUALITY_COLUMNS, "magnitude_hse"]
        )  # fmt: skip
        assert faces.quality is not None
        for i in range(len(faces)):
            fid = face_id(int(faces.frame_index[i]), int(faces.face_index[i]))
            ids.append(fid)
            box = [round(float(v), 1) for v in faces.boxes[i]]
            w.writerow(
                [fid, int(faces.frame_index[i]), int(faces.face_index[i]), round(float(faces.pts_s[i]), 3), *box,
                 round(float(faces.scores[i]), 4), int(faces.rotation[i]),
                 " ".join(f"{v:.2f}" for v in faces.landmarks[i].tolist()),
                 *(round(v, 4) for v in faces.quality[i].tolist()), round(float(hse_magnitude[i]), 4)]
            )  # fmt: skip
            (out / "crops" / f"{fid}.jpg").write_bytes(faces.crops[i])
    with open(out / "frames.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame_index", "pts_s", "change"])
        change = found.frames.change if found.frames.change is not None else [0.0] * len(found.frames)
        for k, p, c in zip(found.frames.index.tolist(), found.frames.pts_s.tolist(), list(change), strict=True):
            w.writerow([k, round(p, 4), round(float(c), 3)])
    (out / "frames").mkdir(exist_ok=True)
    for index, jpeg in found.frame_jpegs.items():  # the sampled frames exactly as the detector saw them
        (out / "frames" / f"{index}.jpg").write_bytes(jpeg)
    np.save(out / "descriptors.npy", faces.embedding.float().cpu().numpy())
    np.save(out / "descriptors_hse.npy", hse)
    (out / "face_ids.json").write_text(json.dumps(ids))
    meta = {
        "clip": str(clip),
        "interval_s": interval,
        "device": device,
        "face_settings": asdict(models.settings),
        "embedder": "dlib_resnet_v1",
        "embedder_hse": "hse_mobilenet faceres (fp32), descriptors_hse.npy",
        "faces": len(ids),
        "sampled_frames": int(len(found.frames)),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return len(ids)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", nargs="?", default=DEFAULT_CLIP)
    p.add_argument("out", nargs="?", default=DEFAULT_OUT)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    os.environ.setdefault("ENGINE_WEIGHTS_MIRROR", str(Path("../shared/weights").resolve()))
    n = extract(Path(a.clip), Path(a.out), a.interval, a.device)
    print(f"{n} faces → {a.out}")


if __name__ == "__main__":
    main()
