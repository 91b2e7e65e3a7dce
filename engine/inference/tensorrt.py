"""TensorRT for the detector, when the ``tensorrt`` package is importable on a CUDA machine; torch otherwise.

The engine is built from the ONNX export (:mod:`engine.inference.onnx_export`) with FP16 enabled and one optimisation
profile
(batch 1..``max_batch`` at the input's height and width), then cached beside the weights under ``trt/``, keyed by
GPU, TensorRT version and shapes, because a TensorRT plan only runs on the GPU and version it was built for and a
build takes a minute. When ``tensorrt`` is missing (or the build fails) the detector stays in torch and says so once.

UNTESTED: TensorRT cannot be installed on the GPU machine this project is tested on, so this path has never run.
The fallback (no ``tensorrt`` → ``None``, one log line) and the cache key are tested; the build and the run are
written against TensorRT 10's documented Python API (``build_serialized_network``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from engine.inference.onnx_export import OUTPUT_NAMES, retinaface_onnx

log = logging.getLogger(__name__)
_said: set[str] = set()

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.warning(message)


def available() -> bool:
    """Whether the ``tensorrt`` package can be imported (without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def cache_path(folder: Path, gpu: str, trt_version: str, height: int, width: int, max_batch: int) -> Path:
    """Where the plan for these shapes on this GPU and TensorRT version lives."""
    key = f"{gpu}|{trt_version}|{height}x{width}|b{max_batch}|fp16"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return folder / "trt" / f"retinaface_{height}x{width}_b{max_batch}_{digest}.plan"


def _build(model: torch.nn.Module, height: int, width: int, max_batch: int, out: Path) -> bytes:  # pragma: no cover
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(retinaface_onnx(model, height=height, width=width)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX export: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, height, width), (max_batch, 3, height, width), (max_batch, 3, height, width))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT failed to build the detector engine")
    data = bytes(plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return data


def _runner(plan: bytes) -> Forward:  # pragma: no cover
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    context = engine.create_execution_context()

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x.to(torch.float32).contiguous()
        context.set_input_shape("input", tuple(x.shape))
        context.set_tensor_address("input", x.data_ptr())
        outs = []
        for name in OUTPUT_NAMES:
            out = torch.empty(tuple(context.get_tensor_shape(name)), device=x.device, dtype=torch.float32)
            context.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        if not context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return tuple(outs)

    return forward


def detector_forward(
    model: torch.nn.Module, device: torch.device, height: int, width: int, max_batch: int, folder: Path
) -> Forward | None:
    """A TensorRT forward for the detector at this input size, or ``None`` (then the caller keeps torch).

    ``None`` on a CPU, without ``tensorrt`` (said once in the log) or when the build fails (said once, with why).
    """
    if device.type != "cuda":
        return None
    if not available():
        _say_once("tensorrt is not installed: the detector runs in torch (fp16) on the GPU")
        return None
    try:  # pragma: no cover - needs TensorRT and a GPU
        import tensorrt as trt

        path = cache_path(folder, torch.cuda.get_device_name(device), trt.__version__, height, width, max_batch)
        plan = path.read_bytes() if path.exists() else _build(model, height, width, max_batch, path)
        return _runner(plan)
    except Exception as exc:  # pragma: no cover  # noqa: BLE001 - any failure means: stay in torch, and say why
        _say_once(f"TensorRT unavailable for the detector ({exc}); it runs in torch")
        return None
