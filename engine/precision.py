"""Which float format the networks run in, per device.

``fp32`` is the reference: the golden-file and dlib parity tests hold in it. ``auto`` picks what the hardware runs
fastest where the loss does not show in the results: fp16 on a CUDA GPU (tensor cores) for both networks; on a
CPU with AMX or AVX-512 BF16 units, bf16 for the embedder only (oneDNN runs its convolutions about twice as fast;
descriptors move by about 0.015, against a same-person threshold of 0.6, see ``tests/test_precision.py``), while
the detector stays fp32 there: its box and landmark regressions lose whole pixels in bf16's 8-bit mantissa, and
faces near the score threshold come and go.
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


def resolve_precision(precision: str, device: str | torch.device, cpu_bf16: bool = True) -> torch.dtype:
    """The dtype to run a network in on ``device`` for ``precision`` (one of :data:`PRECISIONS`).

    ``cpu_bf16=False`` keeps ``auto`` at fp32 on CPUs (the detector, see above).

    An explicit half format the device cannot use well is refused rather than silently slowed down: fp16 is for
    GPUs, bf16 for CPUs with bf16 units or GPUs.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            return torch.float16
        return torch.bfloat16 if kind == "cpu" and cpu_bf16 and cpu_has_fast_bf16() else torch.float32
    if precision == "fp16" and kind != "cuda":
        raise ValueError("precision fp16 is for CUDA GPUs; on a CPU use bf16 (with AMX/AVX-512 BF16) or fp32")
    return _DTYPES[precision]
