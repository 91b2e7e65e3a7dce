"""Decode + 0.5 s sampling throughput on the shared videos (`make bench`; not part of `make test`)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pytest

from engine import media

SHARED = Path(os.environ.get("ENGINE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.mark.slow
def test_decode_sampling_throughput() -> None:
    videos = sorted((SHARED / "videos").glob("*.mp4"))
    assert videos, f"no videos in {SHARED / 'videos'}"
    frames = 0
    t0 = time.perf_counter()
    for path in videos:
        frames += sum(len(b) for b in media.sample_frames(path, 0.5, "cpu"))
    seconds = time.perf_counter() - t0
    print(
        f"\n[decode] {platform.node()} {os.cpu_count()} cores: {frames} sampled frames from {len(videos)} "
        f"videos in {seconds:.2f}s = {frames / seconds:.1f} sampled frames/s"
    )
    assert frames > 0
