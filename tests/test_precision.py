"""Precision choices (fp32 reference, bf16/fp16 where they pay) and the TensorRT fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from engine import decode
from engine.align import FaceEmbedder, align_chips
from engine.faces import FaceDetector
from engine.precision import cpu_has_fast_bf16, resolve_precision


def test_resolve_precision() -> None:
    assert resolve_precision("fp32", "cpu") == torch.float32
    assert resolve_precision("bf16", "cpu") == torch.bfloat16
    assert resolve_precision("auto", "cuda") == torch.float16
    assert resolve_precision("auto", "cuda", cpu_bf16=False) == torch.float16
    assert resolve_precision("auto", "cpu", cpu_bf16=False) == torch.float32
    assert resolve_precision("auto", "cpu") == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")


def test_bf16_embedder_keeps_people_apart(shared_data: Path) -> None:
    """bf16 descriptors stay within 0.05 of fp32 ones (the same-person threshold is 0.6), and every same/different
    decision between the shared photos' faces is the one fp32 makes."""
    detector = FaceDetector()
    faces = []
    for photo in sorted((shared_data / "faces").glob("*.jpg"))[:8]:
        img = decode.load_image(photo)
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
    from engine import tensorrt

    if tensorrt.available():
        pytest.skip("tensorrt is installed here: the fallback is not what runs")
    model = torch.nn.Conv2d(3, 3, 1)
    assert tensorrt.detector_forward(model, torch.device("cpu"), 64, 64, 8, tmp_path) is None
    with caplog.at_level(logging.WARNING, logger="engine.tensorrt"):
        for _ in range(2):
            assert tensorrt.detector_forward(model, torch.device("cuda"), 64, 64, 8, tmp_path) is None
    said = [r.message for r in caplog.records if "tensorrt" in r.message.lower()]
    assert len(said) == 1 and "runs in torch" in said[0]


def test_tensorrt_cache_key_separates_gpus_and_shapes(tmp_path: Path) -> None:
    from engine.tensorrt import cache_path

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
