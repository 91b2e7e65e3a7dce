"""HSE embedder: parity with the graph's reference outputs (tests/data/hse_reference.npz) and CPU time per face.

Usage: ``ENGINE_WEIGHTS_MIRROR=../shared/weights .venv/bin/python benchmarks/hse_parity_speed.py``. Prints the
largest absolute difference and the smallest cosine between the torch module and the reference descriptors, and
between ONNX Runtime's descriptors and torch's (the CPU default, ``engine.inference.backends``), then the median
wall time of ``HSEEmbedder.embed_crops`` per face for each backend at batch 1, at the reference's batch of 7 and at
the CPU batch of 16 (the reference crops repeated; after one untimed call), on this machine's CPU, in one run.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from engine.faces.embed_hse import HSEEmbedder
from engine.inference.backends import onnxruntime_available

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
    embedder = HSEEmbedder("cpu", "fp32", backend="torch")
    x = crops.to(torch.float32).flip(1) - embedder.mean  # the network input, as embed_crops builds it
    with torch.inference_mode():
        raw = embedder.model(x).double()
    want = torch.from_numpy(golden["descriptors"]).double()
    cos = torch.nn.functional.cosine_similarity(raw, want, dim=1)
    print(f"faces {len(crops)}: max |torch - reference| {float((raw - want).abs().max()):.2e}, "
          f"min cosine {float(cos.min()):.9f}")  # fmt: skip
    backends = {"torch": embedder}
    if onnxruntime_available():
        backends["onnxruntime"] = HSEEmbedder("cpu", "fp32", backend="onnxruntime")
        ort, eager = backends["onnxruntime"].embed_crops(crops), embedder.embed_crops(crops)
        print(f"max |onnxruntime - torch| (unit descriptors) {float((ort - eager).abs().max()):.2e}")
    print(f"torch threads {torch.get_num_threads()}")
    many = crops.repeat((16 + len(crops) - 1) // len(crops), 1, 1, 1)[:16]
    for batch in (1, len(crops), 16):
        times = {
            name: _median_ms(lambda e=e, b=batch: e.embed_crops(many[:b], batch=b)) / batch
            for name, e in backends.items()
        }
        line = ", ".join(f"{name} {ms:.1f}" for name, ms in times.items())
        ratio = times["torch"] / times["onnxruntime"] if "onnxruntime" in times else float("nan")
        print(f"batch {batch}: ms per face {line}; torch / onnxruntime {ratio:.2f}x")


if __name__ == "__main__":
    main()
