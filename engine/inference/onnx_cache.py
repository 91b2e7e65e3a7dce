"""Exported ONNX graphs kept between runs, so that a CPU run does not export its networks again at every start.

Exporting a network for ONNX Runtime takes about a second each (the HSE MobileNet 1.2 s, measured on the 2-core
VM), paid by every process that loads the models: a `search` of one video, a `run` of a handful of clips. The
graph depends only on the network's code and weights, so it is kept beside the weights (``weights_dir() / "onnx"``,
like TensorRT's plans under ``trt/``), named by the network's class and a hash of its parameters and buffers and of
the torch version that exported it.

A name can still outlive the code that made it (a forward changed without new weights). So a cached graph is used
only when it gives the network's own outputs on a fixed probe input (one small forward of each, milliseconds);
otherwise, or when it cannot be read, the network is exported again and the file replaced. A folder that cannot be
written only costs the export, said once in the log at debug level.

:func:`embedder_forward` is where both embedders get their network's forward: this cache on a CPU, torch elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from engine.inference.backends import OrtForward, maybe_compiled, resolve_backend

log = logging.getLogger(__name__)

#: Largest difference between the cached graph's outputs and the network's on the probe (the exports themselves
#: match torch within 1e-4 on raw outputs: ``tests/test_faces.py``, ``tests/test_embed_hse.py``).
PROBE_TOLERANCE = 1e-3


def graph_key(model: torch.nn.Module) -> str:
    """A hash of what the exported graph is made from: the class, every parameter and buffer, torch's version."""
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}|torch {torch.__version__}".encode())
    for name, value in model.state_dict().items():
        t = value.detach().to("cpu").contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # flat: size-1 dims may carry odd strides
    return h.hexdigest()[:20]


def probe_input(shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    """A fixed (seeded) uniform input in ``[low, high)``, the range the network's real inputs take."""
    return low + (high - low) * torch.rand(shape, generator=torch.Generator().manual_seed(0))


def _as_tuple(out: object) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, tuple | list) else (out,)  # type: ignore[arg-type]


def agrees(forward: OrtForward, model: torch.nn.Module, probe: torch.Tensor) -> bool:
    """Whether ``forward`` gives ``model``'s outputs on ``probe`` (same count, shapes and values within tolerance)."""
    with torch.inference_mode():
        want = _as_tuple(model(probe.to(next(model.parameters()).device)))
    got = forward(probe)
    return len(got) == len(want) and all(
        g.shape == w.shape and float((g - w.float().cpu()).abs().max()) <= PROBE_TOLERANCE
        for g, w in zip(got, want, strict=True)
    )


def cached_ort_forward(
    model: torch.nn.Module, export: Callable[[torch.nn.Module], bytes], probe: torch.Tensor, folder: Path | None = None
) -> OrtForward:
    """An ONNX Runtime forward of ``model`` (fp32, on the CPU): its cached graph when one made from the same network
    still gives its outputs on ``probe``, else ``export(model)`` now, written to the cache for the next run.
    ``folder``: the cache (default ``weights_dir() / "onnx"``)."""
    if folder is None:
        from engine.inference.weights import weights_dir

        folder = weights_dir() / "onnx"
    path = folder / f"{type(model).__name__}-{graph_key(model)}.onnx"
    if path.is_file():
        try:
            forward = OrtForward(path.read_bytes())
            if agrees(forward, model, probe):
                return forward
            log.info("cached ONNX graph %s no longer matches its network: exporting again", path.name)
        except Exception as exc:  # noqa: BLE001 - an unreadable or foreign file: export again
            log.info("cached ONNX graph %s unusable (%s): exporting again", path.name, exc)
    data = export(model)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{path.name}.{os.getpid()}.part")
        part.write_bytes(data)
        part.replace(path)  # atomic: a concurrent run reads the old file or the new one, never half of one
    except OSError as exc:
        log.debug("could not keep the ONNX graph in %s (%s): it will be exported again next time", folder, exc)
    return OrtForward(data)


def embedder_forward(
    model: torch.nn.Module,
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    export: Callable[[torch.nn.Module], bytes],
    probe: torch.Tensor,
) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """An embedder network's backend and forward (one descriptor tensor out): ONNX Runtime on a CPU, from the graph
    ``export`` makes (kept between runs, checked on ``probe``: :func:`cached_ort_forward`); torch elsewhere,
    compiled on CUDA when asked. No TensorRT engine for the embedders (the detector's is the one the design asks
    for): ``tensorrt`` runs them in torch."""
    name = resolve_backend(backend, device, dtype)
    if name == "onnxruntime":
        ort = cached_ort_forward(model, export, probe)
        return name, lambda x: ort(x)[0]  # OrtForward casts to fp32
    return "torch", maybe_compiled(model, device)  # type: ignore[return-value]
