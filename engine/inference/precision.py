"""Which float format the networks run in, per device.

``fp32`` is the reference: the golden-file and dlib parity tests hold in it, and on a CPU it is also what runs
fastest here, through ONNX Runtime (``engine.inference.backends``). ``auto`` is fp16 on a CUDA GPU (tensor cores) for
both
networks and fp32 elsewhere, so CPU results are the same on every machine. ``bf16`` is there for the embedder on
CPUs with AMX or AVX-512 BF16 units, where oneDNN runs it in 1.8 instead of 4.2 CPU-ms per face (ONNX Runtime,
fp32), measured on the project's Xeon by ``benchmarks/test_backends_bench.py``; descriptors then move by up to 0.034
(the same-person threshold is 0.6; ``tests/test_precision.py`` bounds it). The detector is not run in bf16 on CPUs:
its box and landmark regressions lose whole pixels (up to 21 px on landmarks on the bench corpus) and faces near
the threshold come and go.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matrix/vector units (AMX-BF16 or AVX-512 BF16) for oneDNN to use."""
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)
        if callable(check):
            try:
                if check():
                    return True
            except RuntimeError:
                pass
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: str | torch.device) -> torch.dtype:
    """The dtype to run a network in on ``device`` for ``precision`` (one of :data:`PRECISIONS`).

    An explicit half format the device cannot use is refused rather than silently emulated: fp16 is for GPUs.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    kind = torch.device(device).type
    if precision == "auto":
        return torch.float16 if kind == "cuda" else torch.float32
    if precision == "fp16" and kind != "cuda":
        raise ValueError("precision fp16 is for CUDA GPUs; on a CPU use fp32 (or bf16 for the embedder)")
    return _DTYPES[precision]
