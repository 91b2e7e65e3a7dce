"""Detector frames/s at long side 640 and embedder faces/s, for batch sizes 1, 8, 32, next to face_recognition
(HOG + encodings) on the same frames and faces, measured in one run (`make bench`; not part of `make test`)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pytest
import torch

from engine import media
from engine.faces.detect import FaceDetector

SHARED = Path(os.environ.get("ENGINE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
N_FRAMES = 32
N_FACES = 64


def _frames() -> torch.Tensor:
    """32 real frames of the Hamilton clip (640×360: long side already 640), cycled if needed."""
    frames = torch.cat([b.frames for b in media.sample_frames(SHARED / "videos" / "short_hamilton_clip.mp4")])
    return frames[torch.arange(N_FRAMES) % len(frames)]


def _timed(fn, repeat: int = 2) -> float:  # noqa: ANN001
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.slow
def test_face_models_vs_face_recognition() -> None:
    frames = _frames()
    det = FaceDetector(device="cpu")
    print(
        f"\n[faces] {platform.node()} · {os.cpu_count()} cores · torch threads {torch.get_num_threads()} · "
        f"{N_FRAMES} frames 640x360"
    )
    ours = {}
    for bs in (1, 8, 32):

        def run(bs: int = bs) -> None:
            for i in range(0, N_FRAMES, bs):
                det.detect(frames[i : i + bs])

        ours[bs] = N_FRAMES / _timed(run)
        print(f"  engine RetinaFace mnet0.25 fp32, batch {bs:2d}: {ours[bs]:7.1f} frames/s")

    import face_recognition

    rgb = [f.permute(1, 2, 0).contiguous().numpy() for f in frames]

    def peer_detect() -> None:
        for img in rgb:
            face_recognition.face_locations(img, model="hog")

    def peer_full() -> None:
        for img in rgb:
            face_recognition.face_encodings(img, face_recognition.face_locations(img, model="hog"))

    peer_det = N_FRAMES / _timed(peer_detect, repeat=1)
    peer_all = N_FRAMES / _timed(peer_full, repeat=1)
    print(f"  face_recognition HOG detection:            {peer_det:7.1f} frames/s")
    print(f"  face_recognition HOG + encodings:          {peer_all:7.1f} frames/s")
    print(f"  ratio engine detector (batch 32) / HOG detection: {ours[32] / peer_det:.2f}x")
    assert all(v > 0 for v in ours.values())

    # Embedder: the faces our detector found in these frames (cycled to N_FACES), aligned + embedded per batch.
    from engine.faces.embed import FaceEmbedder

    emb = FaceEmbedder(device="cpu")
    found = det.detect(frames)
    faces = found.select(torch.arange(N_FACES) % len(found))
    embedded = {}
    for bs in (1, 8, 32):

        def run_embed(bs: int = bs) -> None:
            for i in range(0, N_FACES, bs):
                emb.embed(frames, faces.select(torch.arange(i, min(i + bs, N_FACES))))

        embedded[bs] = N_FACES / _timed(run_embed)
        print(f"  engine align + dlib ResNet port fp32, batch {bs:2d}: {embedded[bs]:7.1f} faces/s")
    boxes = faces.boxes.round().int().tolist()

    def peer_encode() -> None:  # same faces, locations given: dlib 5-point landmarks + dlib ResNet per face
        for (x1, y1, x2, y2), i in zip(boxes, faces.image.tolist(), strict=True):
            face_recognition.face_encodings(rgb[i], known_face_locations=[(y1, x2, y2, x1)])

    peer_emb = N_FACES / _timed(peer_encode, repeat=1)
    print(f"  face_recognition encodings (dlib, per face):   {peer_emb:7.1f} faces/s")
    print(f"  ratio engine embedder (batch 32) / face_recognition encodings: {embedded[32] / peer_emb:.2f}x")
    assert all(v > 0 for v in embedded.values())


@pytest.mark.slow
def test_golden_and_onnx_margins(tmp_path: Path) -> None:
    """Worst errors against the upstream golden file, and torch vs onnxruntime on the raw outputs."""
    import json

    import numpy as np
    import onnxruntime as ort

    from engine.inference.onnx_export import export_retinaface

    det = FaceDetector(device="cpu")
    golden = json.loads((SHARED / "reference" / "retinaface_mnet025_golden.json").read_text())["images"]
    worst = {"box": 0.0, "landmarks": 0.0, "score": 0.0}
    for key, ref in golden.items():
        name, _, mode = key.partition("@")
        found = det.detect_images([media.load_image(SHARED / "faces" / name)], 640 if mode else None)[0]
        for r in ref["detections"]:
            i = int((found.boxes - torch.tensor(r["box"])).abs().amax(1).argmin())
            worst["box"] = max(worst["box"], (found.boxes[i] - torch.tensor(r["box"])).abs().max().item())
            worst["landmarks"] = max(
                worst["landmarks"], (found.landmarks[i] - torch.tensor(r["landmarks"])).abs().max().item()
            )
            worst["score"] = max(worst["score"], abs(found.scores[i].item() - r["score"]))
    print(
        f"\n[golden] worst over {len(golden)} entries: box {worst['box']:.4f} px, landmarks "
        f"{worst['landmarks']:.4f} px, score {worst['score']:.1e}"
    )
    path = export_retinaface(det.model, tmp_path / "rf.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    gap = 0.0
    for shape in ((1, 3, 640, 640), (2, 3, 360, 640), (1, 3, 97, 131)):
        x = torch.randn(shape, generator=gen) * 60
        for o, r in zip(sess.run(None, {"input": x.numpy()}), det.raw(x), strict=True):
            gap = max(gap, float(np.abs(o - r.numpy()).max()))
    print(f"[onnx] max |onnxruntime - torch| on raw outputs: {gap:.1e}")
