"""Custom GPU kernels (Triton / CuPy), each beside the plain-torch reference it is tested against.

The engine calls a kernel only for inputs on a CUDA device where ``kernels.<module>.available(device)`` holds, and
never when ``ENGINE_KERNELS=0`` (read at every call, so it can be flipped in a running process's environment before a
call). Everything else runs the plain-torch code, unchanged. See ``kernels/README.md`` for the rule that keeps a kernel
here only while it beats plain torch on the device.
"""

from __future__ import annotations

from engine.config import environment

__all__ = ["enabled"]


def enabled() -> bool:
    """False when ``ENGINE_KERNELS`` is ``0`` / ``false`` / ``no`` / ``off``: force the plain-torch paths."""
    return environment.kernels_enabled()
