"""Triton as an optional dependency of the kernel modules, and the two ways a kernel can run.

Triton is in the ``gpu`` extra only, so every kernel module must import (and answer ``available() -> False``) without
it. A ``@triton.jit`` function is *compiled* for a CUDA device, or — when ``TRITON_INTERPRET=1`` was set before the
kernel module was imported — *interpreted* by Triton's NumPy interpreter, which also runs on CPU tensors. Triton 3.x
decides this once, at decoration time (``triton.knobs.runtime.interpret`` read by ``triton.jit``), so setting the
variable later has no effect on an already imported kernel: the tests run interpreter checks in a fresh process.
"""

from __future__ import annotations

import torch

try:  # optional: pip install '.[gpu]'
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where the gpu extra is missing
    triton = None
    tl = None

HAVE_TRITON = triton is not None


def is_interpreted(kernel: object) -> bool:
    """Whether a ``@triton.jit`` kernel was built by the interpreter (``TRITON_INTERPRET=1`` at import)."""
    if not HAVE_TRITON:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def runnable_on(kernel: object, device: str | torch.device) -> bool:
    """A kernel runs compiled on a CUDA device, or interpreted on a CPU (or CUDA) tensor."""
    if not HAVE_TRITON or kernel is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and is_interpreted(kernel)
