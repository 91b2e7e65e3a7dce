"""The one device resolver: what ``auto`` and ``cuda`` mean for a run in this process, inside an executor worker,
and for whatever this process can honour.

Three callers need three answers. A local run resolves its device once, strictly (``cuda`` without a GPU is a
mistake to report before anything starts). A Ray driver leaves ``auto``/``cuda`` unresolved: each worker, an actor
the executor gave a GPU or not, resolves them where it runs. And code that must run *somewhere* (a worker's models,
a driver's prompt templates) takes what this process can honour, falling back to the CPU.
"""

from __future__ import annotations

from typing import Literal

from engine.config.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")

#: Set inside an executor worker (a Ray actor) by the executor: whether it gave the worker a GPU; ``None`` elsewhere.
_worker_gpu: bool | None = None


def set_worker_gpu(gpu: bool | None) -> None:
    """Called by the executor inside each of its workers: whether that worker holds a GPU (``None``: not a worker)."""
    global _worker_gpu
    _worker_gpu = gpu


def check_device(device: str) -> str:
    """``device`` itself when it is one of :data:`DEVICES` or ``cuda:N``; otherwise a :class:`ConfigError`."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ConfigError(f"device must be one of {', '.join(DEVICES)} (got {device!r})")
    return device


def resolve_device(device: str, where: Literal["run", "worker", "process"] = "run") -> str:
    """The torch device ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``) stands for ``where``:

    * ``run`` (the default): a run in this process, strictly. ``device`` must be valid; ``auto`` → ``cuda`` when a
      GPU is visible, else ``cpu``; ``cuda`` without a GPU is a :class:`ConfigError`.
    * ``worker``: the device a worker's ``setup()`` loads its models on. Inside an executor worker the executor
      decides: ``cuda`` when it gave the worker a GPU, else ``cpu``, whatever the driver asked. Elsewhere (the local
      executor, plain code) ``device`` as asked, with ``auto`` resolved here.
    * ``process``: what this process can honour: as ``worker``, then ``cpu`` unless a GPU is visible (``cuda:N``
      kept). Never an error.
    """
    if where == "run":
        import torch

        check_device(device)
        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for, but torch sees no CUDA GPU: use --device cpu or auto")
        return device
    if where not in ("worker", "process"):
        raise ValueError(f"where must be run, worker or process (got {where!r})")
    if _worker_gpu is not None:
        device = "cuda" if _worker_gpu else "cpu"
    elif device == "auto":
        device = resolve_device(device)
    if where == "worker":
        return device
    import torch

    return "cpu" if device == "cpu" or not torch.cuda.is_available() else device
