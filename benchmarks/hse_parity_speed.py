"""HSE embedder: parity with the graph's reference outputs (tests/data/hse_reference.npz) and CPU time per face.

Usage: ``ENGINE_WEIGHTS_MIRROR=../shared/weights .venv/bin/python benchmarks/hse_parity_speed.py``. Prints the
largest absolute difference and the smallest cosine between the torch module and the reference descriptors, then
the median wall time of ``HSEEmbedder.embed_crops`` per face at batch 1 and at the reference's batch of 7 (after one
untimed call), on this machine's CPU.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from engine.faces.embed_hse import HSEEmbedder

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "data" / "hse_reference.npz"


def _median_ms(fn, repeats: int = 7) -> float:  # noqa: ANN001
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    golden = np.load(GOLDEN)
    crops = torch.from_numpy(golden["crops"]).permute(0, 3, 1, 2)  # NHWC uint8 -> NCHW
    embedder = HSEEmbedder("cpu", "fp32")
    x = crops.to(torch.float32).flip(1) - embedder.mean  # the network input, as embed_crops builds it
    with torch.inference_mode():
        raw = embedder.model(x).double()
    want = torch.from_numpy(golden["descriptors"]).double()
    cos = torch.nn.functional.cosine_similarity(raw, want, dim=1)
    print(f"faces {len(crops)}: max |torch - reference| {float((raw - want).abs().max()):.2e}, "
          f"min cosine {float(cos.min()):.9f}")  # fmt: skip
    print(f"torch threads {torch.get_num_threads()}")
    for batch in (1, len(crops)):
        ms = _median_ms(lambda b=batch: embedder.embed_crops(crops[:b], batch=b))
        print(f"batch {batch}: {ms / batch:.1f} ms per face")


if __name__ == "__main__":
    main()
