"""Process-wide settings for heavy runs on a CPU: the C allocator's reuse of large blocks.

torch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (128 KiB at start, raised
only as blocks are freed) with fresh ``mmap``s and gives them back on ``free``, so each new frame batch, activation
or chip tensor of a few MiB is paid again in page faults: on the VMs this project runs on a fault costs a few
microseconds, and converting one 720×1280 frame to float spent more time faulting than converting. Fixing the
threshold at its maximum (32 MiB) and raising the trim threshold keeps such blocks in the heap for reuse; the
memory kept is what the run's peak already needed, so the resident size stays flat across a run.

Only glibc is touched (other C libraries are left alone), and ``ENGINE_MALLOC_TUNE=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit systems
TRIM_THRESHOLD = 1 << 30
_done: bool | None = None


def tune_allocator() -> bool:
    """Keep large blocks in glibc's heap for reuse (once per process); ``True`` when the settings took effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("ENGINE_MALLOC_TUNE", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): nothing to tune
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
