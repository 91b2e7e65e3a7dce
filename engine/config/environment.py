"""Every read of the process environment, and the few writes the engine makes to it, in one place.

Each value is read when its function is called, never cached at import, so a variable set later (by a test, or in a
running process before a call) is honoured. This module imports nothing from ``engine``, so any package may use it
(``kernels`` included) without an import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

#: How ``ENGINE_KERNELS`` turns the custom kernels off.
_KERNELS_OFF = {"0", "false", "no", "off"}


def read(name: str) -> str | None:
    """The environment variable ``name``, or ``None`` when it is unset or empty (an empty variable counts as unset).

    ``Settings.load`` reads its ``ENGINE_*`` variables through this (flags beat it, it beats the defaults)."""
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def weights_dir() -> Path | None:
    """``ENGINE_WEIGHTS_DIR``: the folder weights are read from and downloaded to, if it overrides the repository's."""
    value = read("ENGINE_WEIGHTS_DIR")
    return Path(value) if value else None


def weights_mirror() -> Path | None:
    """``ENGINE_WEIGHTS_MIRROR``: a folder holding the weight files, looked in after the weights folder."""
    value = read("ENGINE_WEIGHTS_MIRROR")
    return Path(value) if value else None


def compile_enabled() -> bool:
    """``ENGINE_COMPILE=1``: wrap the networks in ``torch.compile`` on CUDA (off by default)."""
    return os.environ.get("ENGINE_COMPILE", "0") == "1"


def malloc_tune_enabled() -> bool:
    """False when ``ENGINE_MALLOC_TUNE=0``: leave glibc's allocator as it is."""
    return os.environ.get("ENGINE_MALLOC_TUNE", "1") != "0"


def kernels_enabled() -> bool:
    """False when ``ENGINE_KERNELS`` is ``0`` / ``false`` / ``no`` / ``off``: force the plain-torch paths."""
    return os.environ.get("ENGINE_KERNELS", "1").strip().lower() not in _KERNELS_OFF


def one_thread_per_worker() -> None:
    """In a CPU worker process (one per CPU), before torch is imported: ``OMP_NUM_THREADS=1``, since threads inside
    a worker would only compete with the other workers."""
    os.environ["OMP_NUM_THREADS"] = "1"


def quiet_ray() -> None:
    """Before Ray starts: no usage-stats prompt or upload (``RAY_USAGE_STATS_ENABLED=0`` unless set otherwise)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
