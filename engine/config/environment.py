"""Every read of the process environment, and the few writes the engine makes to it, in one place.

Each value is read when its function is called, never cached at import, so a variable set later (by a test, or in a
running process before a call) is honoured. This module imports nothing from ``engine``, so any package may use it
(``kernels`` included) without an import cycle.
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path

#: How ``ENGINE_KERNELS`` turns the custom kernels off.
_KERNELS_OFF = {"0", "false", "no", "off"}


def read(name: str) -> str | None:
    """The environment variable ``name``, or ``None`` when it is unset or empty (an empty variable counts as unset).

    ``Settings.load`` reads its ``ENGINE_*`` variables through this (flags beat it, it beats the defaults)."""
    value = os.environ.get(name)
    return value if value not in (None, "") else None


@functools.cache
def checkout_root() -> Path | None:
    """The source checkout this package runs from, or ``None`` when it is an installed copy.

    A checkout keeps its downloads in its own folders (``weights/``) and finds ``../shared`` beside itself; an
    installed copy has neither, so it uses a per-user cache and no default mirror. The test is the package's parent
    folder holding a ``pyproject.toml`` that names the ``faceengine`` distribution: a site-packages folder never does,
    and an unrelated project that vendors ``engine/`` names itself otherwise. Fixed for the process, so cached."""
    root = Path(__file__).resolve().parents[2]
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return root if project.get("name") == "faceengine" else None


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/faceengine`` (default ``~/.cache/faceengine``): where an installed copy keeps what it
    downloads, since its own folder (site-packages) may be read-only and is replaced on upgrade."""
    base = read("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "faceengine"


def weights_dir() -> Path | None:
    """``ENGINE_WEIGHTS_DIR``: the folder weights are read from and downloaded to, if it overrides the default
    (``weights/`` in a checkout, ``user_cache_dir() / "weights"`` when installed)."""
    value = read("ENGINE_WEIGHTS_DIR")
    return Path(value) if value else None


def weights_mirror() -> Path | None:
    """``ENGINE_WEIGHTS_MIRROR``: a folder holding the weight files, looked in after the weights folder.

    Unset, a checkout beside a ``shared/weights`` folder uses it, so ``python cli.py ...`` works offline there as
    ``make`` does; set but empty means no mirror at all (how a test or a user rules the default out)."""
    return _set_or_beside_checkout("ENGINE_WEIGHTS_MIRROR", "weights")


def shared_data() -> Path | None:
    """``ENGINE_SHARED_DATA``: the folder of real media (``videos/``, ``audio/``, ...) the demo corpus is built from.

    Unset, a checkout's ``../shared/data`` when it exists; set but empty, none (the media are then downloaded)."""
    return _set_or_beside_checkout("ENGINE_SHARED_DATA", "data")


def _set_or_beside_checkout(name: str, sub: str) -> Path | None:
    value = os.environ.get(name)
    if value is not None:
        return Path(value) if value else None
    root = checkout_root()
    beside = root.parent / "shared" / sub if root is not None else None
    return beside if beside is not None and beside.is_dir() else None


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
