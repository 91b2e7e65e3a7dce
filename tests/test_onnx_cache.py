"""Exported ONNX graphs kept between runs (engine/inference/onnx_cache.py): reused when they still match their
network, exported again when the weights change, when the file is stale or broken, and never a failure when the
cache cannot be written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.inference.onnx_cache import cached_ort_forward, graph_key, probe_input
from engine.inference.onnx_export import export_onnx

pytest.importorskip("onnxruntime")


class Tiny(torch.nn.Module):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean((2, 3)) * self.scale


class Exports:
    """``export`` for :func:`cached_ort_forward` that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: torch.nn.Module) -> bytes:
        self.calls += 1
        return export_onnx(model, torch.zeros(1, 3, 8, 8), "x", ("y",), {"x": {0: "n"}, "y": {0: "n"}})


PROBE = probe_input((2, 3, 8, 8), -1.0, 1.0)


def _same(forward, model: torch.nn.Module) -> bool:  # noqa: ANN001
    with torch.inference_mode():
        return float((forward(PROBE)[0] - model(PROBE)).abs().max()) < 1e-5


def test_the_second_load_reads_the_cached_graph(tmp_path: Path) -> None:
    model, export = Tiny(), Exports()
    first = cached_ort_forward(model, export, PROBE, tmp_path)
    second = cached_ort_forward(model, export, PROBE, tmp_path)
    assert export.calls == 1 and len(list(tmp_path.glob("Tiny-*.onnx"))) == 1
    assert _same(first, model) and _same(second, model)


def test_new_weights_are_a_new_graph(tmp_path: Path) -> None:
    model, export = Tiny(), Exports()
    cached_ort_forward(model, export, PROBE, tmp_path)
    key = graph_key(model)
    with torch.no_grad():
        model.conv.weight.add_(0.5)
    assert graph_key(model) != key
    forward = cached_ort_forward(model, export, PROBE, tmp_path)
    assert export.calls == 2 and _same(forward, model)


def test_a_stale_or_broken_file_is_exported_again(tmp_path: Path) -> None:
    # Same weights, changed forward (the name cannot tell): the probe can.
    old, new, export = Tiny(), Tiny(scale=2.0), Exports()
    cached_ort_forward(old, export, PROBE, tmp_path)
    assert graph_key(old) == graph_key(new)
    forward = cached_ort_forward(new, export, PROBE, tmp_path)
    assert export.calls == 2 and _same(forward, new)
    assert _same(cached_ort_forward(new, export, PROBE, tmp_path), new) and export.calls == 2  # the file was replaced
    path = next(tmp_path.glob("Tiny-*.onnx"))
    path.write_bytes(b"not a graph")
    assert _same(cached_ort_forward(new, export, PROBE, tmp_path), new) and export.calls == 3


def test_a_cache_that_cannot_be_written_only_costs_the_export(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder would go")
    model, export = Tiny(), Exports()
    forward = cached_ort_forward(model, export, PROBE, blocked / "onnx")
    assert export.calls == 1 and _same(forward, model)
