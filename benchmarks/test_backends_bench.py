"""CPU time of each network per backend and precision, and what bf16 does to the detector, on the bench corpus
(`make bench`; not part of `make test`).

Prints CPU-milliseconds (``time.process_time``, best of 3, one torch/ONNX Runtime thread) rather than wall time: on
a shared VM the CPU time a piece of work takes moves much less than its wall time, and one thread keeps the
comparison free of thread-scheduling noise. These are the figures behind ``engine.inference.backends`` and
``engine.inference.precision``'s defaults.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from engine import media
from engine.faces.align import align_chips
from engine.faces.detect import FaceDetector
from engine.faces.embed import FaceEmbedder

CORPUS = Path(__file__).resolve().parents[1] / "runs" / "bench-corpus" / "videos"
SHARED = Path(os.environ.get("ENGINE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def _frames() -> torch.Tensor:
    """The sampled frames of the first three bench-corpus videos (720×1280), or without it those of the shared
    clips that have the first one's size (one batch needs one size: the shared clips are 640×360 and 170×170)."""
    videos = sorted(CORPUS.glob("*.mp4"))[:3] or sorted(
        (SHARED / "videos").glob("*.mp4"), key=lambda p: p.name != "short_hamilton_clip.mp4"
    )
    chunks = [b.frames for v in videos for b in media.sample_frames(v, 0.5, "cpu")]
    return torch.cat([c for c in chunks if c.shape[1:] == chunks[0].shape[1:]])


def _cpu_ms(fn: Callable[[], object], n: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return 1000 * best / n


@pytest.mark.slow
def test_backends_and_precision_on_cpu() -> None:
    torch.set_num_threads(1)
    frames = _frames()
    scale = 640 / max(frames.shape[-2:])
    detectors = {
        "torch fp32": FaceDetector(backend="torch"),
        "onnxruntime fp32": FaceDetector(backend="onnxruntime"),
        "torch bf16": FaceDetector(precision="bf16"),
    }
    reference = detectors["torch fp32"].detect(frames, scale, 0.3)
    print(f"\n{len(frames)} frames at {tuple(frames.shape[-2:])}, detected at scale {scale:.3f}, 1 thread")
    for name, det in detectors.items():
        ms = _cpu_ms(lambda det=det: det.detect(frames, scale), len(frames))
        found = det.detect(frames, scale, 0.3)
        strong = reference.scores > 0.6
        iou = box_iou(reference.boxes[strong], found.boxes)
        match = iou.argmax(1)
        landmarks = (reference.landmarks[strong] - found.landmarks[match]).abs().max().item()
        scores = (reference.scores[strong] - found.scores[match]).abs().max().item()
        print(
            f"detector {name}: {ms:.1f} CPU-ms/frame; vs torch fp32 on {int(strong.sum())} faces scoring > 0.6: "
            f"max landmark difference {landmarks:.2f} px, max score difference {scores:.4f}, faces >= 0.5: "
            f"{int((found.scores >= 0.5).sum())} (torch fp32: {int((reference.scores >= 0.5).sum())})"
        )
    chips = align_chips(frames, reference)
    embedders = {
        "torch fp32": FaceEmbedder(backend="torch"),
        "onnxruntime fp32": FaceEmbedder(backend="onnxruntime"),
        "torch bf16": FaceEmbedder(precision="bf16"),
    }
    base = embedders["torch fp32"].embed_chips(chips)
    for name, emb in embedders.items():
        ms = _cpu_ms(lambda emb=emb: emb.embed_chips(chips), len(chips))
        moved = (emb.embed_chips(chips) - base).norm(dim=1).max().item()
        print(f"embedder {name}: {ms:.1f} CPU-ms/face over {len(chips)} faces; max L2 from torch fp32 {moved:.4f}")
    assert len(chips) > 0
