"""Where the networks run: torch, ONNX Runtime (CPUs) or TensorRT (CUDA GPUs).

The networks are written in torch (``engine.models``) and torch runs them everywhere. On a CPU, ONNX Runtime runs
the same graphs, exported once at load (:mod:`engine.inference.onnx_export`), with its fused convolution + activation
kernels:
on the project's 2-core Xeon (``benchmarks/test_backends_bench.py``, one thread) RetinaFace took 22.9 instead of
25.4 CPU-ms per 720×1280 frame and the face ResNet 4.2 instead of 5.5 per face, with the same detections and
descriptors; the HSE MobileNet (the default embedder, depthwise convolutions) runs 1.3-1.7x as fast as in torch
at batches of 7-16 faces on the 2-core AMD EPYC VM (``benchmarks/hse_parity_speed.py``; descriptors within 1e-5).
On a GPU the frames stay on the device, so ONNX Runtime's CPU provider is never used there; TensorRT is used for
the detector when it is installed (:mod:`engine.inference.tensorrt`).

``auto`` picks ONNX Runtime on a CPU when it is installed and the network runs in fp32 (bf16 stays in torch's
oneDNN), TensorRT on CUDA when it is installed, torch otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable

import torch

from engine.config import environment

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
Forward = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend a network on ``device`` in ``dtype`` runs with, for ``backend`` (one of :data:`BACKENDS`).

    An explicit choice that cannot work here is refused with the reason (a silent fallback would hide a
    misconfiguration); ``auto`` never fails.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    cpu = device.type == "cpu"
    if backend == "auto":
        if cpu:
            return "onnxruntime" if dtype == torch.float32 and onnxruntime_available() else "torch"
        from engine.inference.tensorrt import available

        return "tensorrt" if device.type == "cuda" and available() else "torch"
    if backend == "onnxruntime":
        if not cpu:
            raise ValueError("backend onnxruntime runs on the CPU; on a GPU use torch or tensorrt")
        if dtype != torch.float32:
            raise ValueError("backend onnxruntime runs the fp32 graph; use precision fp32 with it")
        if not onnxruntime_available():
            raise ValueError("backend onnxruntime asked for, but the onnxruntime package is not installed")
    if backend == "tensorrt" and device.type != "cuda":
        raise ValueError("backend tensorrt needs a CUDA GPU")
    return backend


class OrtForward:
    """An exported graph in an ONNX Runtime CPU session, called with and returning torch tensors.

    The session gets torch's thread count (so ``torch.set_num_threads`` keeps governing the whole process), does
    not spin-wait between calls (decoding and flushing threads share the same cores) and plans no per-shape memory
    pattern (the batches' shapes vary).
    """

    def __init__(self, onnx: bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # A memory pattern is planned per input shape, and this engine's batches change shape all the time (faces per
        # batch, frames in a video's last chunk): the patterns only pile up. Off, a 40-video run peaks about 200 MiB
        # lower at the same speed (benchmarks/RESULTS.md, eighth session). The arena stays: without it the run is
        # about 4 % slower.
        options.enable_mem_pattern = False
        self.session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = self.session.run(None, {self.input: x.detach().to(torch.float32).contiguous().numpy()})
        return tuple(torch.from_numpy(o) for o in outs)


class CompiledForward:
    """``torch.compile(model, mode="reduce-overhead")`` (Inductor kernels replayed as CUDA graphs), falling back to
    the eager network for good, with one log line, if compiling or running the compiled graph fails.

    Opt-in with ``ENGINE_COMPILE=1`` on CUDA only: it has never run on a GPU here (none was lent to this project), and
    every new batch shape costs a compilation, so whether it pays has still to be measured.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.compiled: Callable[..., object] | None = torch.compile(model, mode="reduce-overhead")

    def __call__(self, x: torch.Tensor) -> object:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as exc:  # noqa: BLE001 - any failure: run eager from now on, and say why once
                logging.getLogger(__name__).warning("torch.compile failed (%s): running the network eagerly", exc)
                self.compiled = None
        return self.model(x)


def maybe_compiled(model: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], object]:
    """``model`` itself, or a :class:`CompiledForward` of it on CUDA when ``ENGINE_COMPILE=1``."""
    if device.type == "cuda" and environment.compile_enabled():
        return CompiledForward(model)
    return model
