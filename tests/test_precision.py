"""Precision (fp32 reference, bf16/fp16 where they pay) and backends (torch, ONNX Runtime, TensorRT fallback)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from engine import media
from engine.faces.align import align_chips
from engine.faces.detect import FaceDetector
from engine.faces.embed import FaceEmbedder
from engine.inference.backends import onnxruntime_available, resolve_backend
from engine.inference.precision import cpu_has_fast_bf16, resolve_precision


def test_resolve_precision() -> None:
    assert resolve_precision("fp32", "cpu") == torch.float32
    assert resolve_precision("bf16", "cpu") == torch.bfloat16
    assert resolve_precision("auto", "cuda") == torch.float16
    assert resolve_precision("auto", "cpu") == torch.float32
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")
    assert isinstance(cpu_has_fast_bf16(), bool)


def test_bf16_embedder_keeps_people_apart(shared_data: Path) -> None:
    """bf16 descriptors stay within 0.05 of fp32 ones (the same-person threshold is 0.6), and every same/different
    decision between the shared photos' faces is the one fp32 makes."""
    detector = FaceDetector()
    faces = []
    for photo in sorted((shared_data / "faces").glob("*.jpg"))[:8]:
        img = media.load_image(photo)
        det = detector.detect(img[None], 640 / max(img.shape[-2:]))
        faces.append(align_chips(img[None], det))
    chips = torch.cat(faces)
    assert len(chips) >= 8
    fp32 = FaceEmbedder().embed_chips(chips)
    bf16 = FaceEmbedder(precision="bf16").embed_chips(chips)
    assert bf16.dtype == torch.float32
    assert (fp32 - bf16).norm(dim=1).max() < 0.05
    same32, same16 = torch.cdist(fp32, fp32) < 0.6, torch.cdist(bf16, bf16) < 0.6
    assert torch.equal(same32, same16)


def test_tensorrt_falls_back_to_torch_and_says_so_once(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from engine.inference import tensorrt

    if tensorrt.available():
        pytest.skip("tensorrt is installed here: the fallback is not what runs")
    model = torch.nn.Conv2d(3, 3, 1)
    assert tensorrt.detector_forward(model, torch.device("cpu"), 64, 64, 8, tmp_path) is None
    with caplog.at_level(logging.WARNING, logger="engine.inference.tensorrt"):
        for _ in range(2):
            assert tensorrt.detector_forward(model, torch.device("cuda"), 64, 64, 8, tmp_path) is None
    said = [r.message for r in caplog.records if "tensorrt" in r.message.lower()]
    assert len(said) == 1 and "runs in torch" in said[0]


def test_tensorrt_cache_key_separates_gpus_and_shapes(tmp_path: Path) -> None:
    from engine.inference.tensorrt import cache_path

    a = cache_path(tmp_path, "NVIDIA H100", "10.3", 360, 640, 256)
    assert a.parent == tmp_path / "trt" and a.suffix == ".plan"
    others = {
        cache_path(tmp_path, "NVIDIA H200", "10.3", 360, 640, 256),
        cache_path(tmp_path, "NVIDIA H100", "10.4", 360, 640, 256),
        cache_path(tmp_path, "NVIDIA H100", "10.3", 640, 360, 256),
        cache_path(tmp_path, "NVIDIA H100", "10.3", 360, 640, 64),
    }
    assert a not in others and len(others) == 4
    assert a == cache_path(tmp_path, "NVIDIA H100", "10.3", 360, 640, 256)


def test_resolve_backend() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    expected = "onnxruntime" if onnxruntime_available() else "torch"
    assert resolve_backend("auto", cpu, torch.float32) == expected
    assert resolve_backend("auto", cpu, torch.bfloat16) == "torch"
    assert resolve_backend("torch", cuda, torch.float16) == "torch"
    with pytest.raises(ValueError, match="CPU"):
        resolve_backend("onnxruntime", cuda, torch.float16)
    with pytest.raises(ValueError, match="fp32"):
        resolve_backend("onnxruntime", cpu, torch.bfloat16)
    with pytest.raises(ValueError, match="CUDA"):
        resolve_backend("tensorrt", cpu, torch.float32)
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("openvino", cpu, torch.float32)


@pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime not installed")
def test_onnxruntime_backend_equals_torch(hamilton: Path) -> None:
    """The exported graphs in ONNX Runtime give torch's detections and descriptors (up to float rounding)."""
    frames = next(media.sample_frames(hamilton, 0.5, "cpu")).frames[:6]
    by_torch, by_ort = FaceDetector(backend="torch"), FaceDetector(backend="onnxruntime")
    assert by_ort.backend == "onnxruntime"
    a, b = by_torch.detect_with_rotation(frames, 0.5), by_ort.detect_with_rotation(frames, 0.5)
    assert len(a) == len(b) > 0 and torch.equal(a.image, b.image)
    assert (a.boxes - b.boxes).abs().max() < 0.01 and (a.scores - b.scores).abs().max() < 1e-4
    chips = align_chips(frames, a)
    x = FaceEmbedder(backend="torch").embed_chips(chips)
    y = FaceEmbedder(backend="onnxruntime").embed_chips(chips)
    assert (x - y).norm(dim=1).max() < 1e-4


def test_allocator_tuning_once_and_switchable(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    from engine.inference import runtime

    monkeypatch.setattr(runtime, "_done", None)
    monkeypatch.setenv("ENGINE_MALLOC_TUNE", "0")
    assert runtime.tune_allocator() is False
    monkeypatch.setattr(runtime, "_done", None)
    monkeypatch.delenv("ENGINE_MALLOC_TUNE")
    expected = platform.libc_ver()[0] == "glibc"
    assert runtime.tune_allocator() is expected
    assert runtime.tune_allocator() is expected  # once per process: the second call only reports


def test_compile_is_cuda_only_and_falls_back_to_eager(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from engine.inference.backends import CompiledForward, maybe_compiled

    model = torch.nn.Linear(4, 2)
    monkeypatch.setenv("ENGINE_COMPILE", "1")
    assert maybe_compiled(model, torch.device("cpu")) is model
    wrapped = CompiledForward(model)

    def broken(_x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no compiler")

    wrapped.compiled = broken
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="engine.inference.backends"):
        assert torch.equal(wrapped(x), model(x)) and torch.equal(wrapped(x), model(x))
    assert wrapped.compiled is None
    assert len([r for r in caplog.records if "torch.compile failed" in r.message]) == 1
