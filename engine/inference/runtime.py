"""Process-wide settings for heavy runs: the C allocator's reuse of large blocks, and its arenas when streaming.

torch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (128 KiB at start, raised
only as blocks are freed) with fresh ``mmap``s and gives them back on ``free``, so each new frame batch, activation
or chip tensor of a few MiB is paid again in page faults: on the VMs this project runs on a fault costs a few
microseconds, a cost paid for every megabyte of every new tensor. Fixing the
threshold at its maximum (32 MiB) and raising the trim threshold keeps such blocks in the heap for reuse; the
memory kept is what the run's peak already needed, so the resident size stays flat across a run.

Only glibc is touched (other C libraries are left alone), and ``ENGINE_MALLOC_TUNE=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

from engine.config import environment

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's ``mallopt`` parameter for the most arenas it creates (by default up to eight per core).
_M_ARENA_MAX = -8
#: Malloc arenas a streaming run lets glibc create (see :func:`share_malloc_arenas`).
STREAM_MALLOC_ARENAS = 2
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit systems
TRIM_THRESHOLD = 1 << 30
_done: bool | None = None


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or ``None`` where the C library is another (musl, macOS) or tuning is turned off."""
    if not environment.malloc_tune_enabled():
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def tune_allocator() -> bool:
    """Keep large blocks in glibc's heap for reuse (once per process); ``True`` when the settings took effect."""
    global _done
    if _done is None:
        mallopt = _mallopt()
        _done = mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
        _done = _done and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done


def share_malloc_arenas(limit: int = STREAM_MALLOC_ARENAS) -> bool:
    """Have the threads of a streaming run share glibc's malloc arenas instead of taking one each.

    Why: every thread that allocates gets an arena of its own, and each arena keeps its own free blocks (more so
    with :func:`tune_allocator`'s settings, which keep large blocks for reuse). The stream adds a decoding and a
    flushing thread, FFmpeg starts decoding threads for every video, and the run's churn spreads over arenas whose
    free memory cannot serve each other: resident memory then creeps up from video to video. Measured with
    ``benchmarks/test_memory_bench.py`` on a 2-core Xeon: peak RSS of ``cli.py run`` over 4 and 40 videos 1516 and
    1697 MiB with glibc's default arenas (ratio 1.12), 1474 and 1561 MiB with two (ratio 1.06), at the same speed.
    Call it before the models start their threads: arenas already made are kept, the limit applies to the ones
    glibc would make next. Returns whether the limit took effect.
    """
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, limit))
