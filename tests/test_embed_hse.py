"""HSE face network port: the TF.js format reader, the torch module against a numpy interpreter of the graph
(``benchmarks/tfjs_reference.py``, golden file ``tests/data/hse_reference.npz``), the crop, and the embedder."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.inference.weights import WeightError, resolve
from engine.models.tfjs_format import TfjsFormatError, read_graph_model

GOLDEN = Path(__file__).parent / "data" / "hse_reference.npz"
VGG = np.array([103.939, 116.779, 123.68], dtype=np.float32)


@pytest.fixture(scope="module")
def hse_files() -> tuple[Path, Path]:
    try:
        return resolve("hse_faceres_json", download=False), resolve("hse_faceres_bin", download=False)
    except WeightError as exc:
        pytest.skip(f"HSE weights (faceres.json/.bin) not found: {exc}")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    d = np.load(GOLDEN)
    return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def model(hse_files: tuple[Path, Path]):  # noqa: ANN201
    from engine.models.hse_mobilenet import load_hse_mobilenet

    return load_hse_mobilenet(*hse_files)


def _reference_module():  # noqa: ANN202
    path = Path(__file__).parent.parent / "benchmarks" / "tfjs_reference.py"
    spec = importlib.util.spec_from_file_location("tfjs_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reader_reads_the_whole_graph(hse_files: tuple[Path, Path]) -> None:
    g = read_graph_model(*hse_files[:1], shards={"faceres.bin": hse_files[1]})
    ops = Counter(n.op for n in g.nodes)
    assert ops["Conv2D"] == 14 and ops["DepthwiseConv2dNative"] == 13 and ops["Mean"] == 1
    assert len(g.weights) == 128 and g.weights["conv_pw_13/convolution/merged_input"].shape == (1, 1, 1024, 1024)
    assert g.weights["conv_dw_2/depthwise_kernel"].dtype == np.float32
    assert float(g.weights["conv1_relu/Cast"]) == 6.0 and float(g.weights["conv1_relu/Const_1"]) == 0.0
    assert g.weights["global_pooling/Mean/reduction_indices"].tolist() == [1, 2]
    assert g.node("conv_dw_2/depthwise").attr["strides"] == [1, 2, 2, 1]


def _write_model(d: Path, weights: list[dict], data: bytes) -> Path:
    doc = {"format": "graph-model", "modelTopology": {"node": [{"name": "x", "op": "Placeholder"}]},
           "weightsManifest": [{"paths": ["w.bin"], "weights": weights}]}  # fmt: skip
    (d / "w.bin").write_bytes(data)
    (d / "m.json").write_text(json.dumps(doc))
    return d / "m.json"


def test_reader_dequantises(tmp_path: Path) -> None:
    half = np.array([1.5, -2.25, 65504.0], dtype="<f2")
    q8 = np.array([0, 10, 255], dtype="u1")
    i32 = np.array([7, -3], dtype="<i4")
    path = _write_model(tmp_path, [
        {"name": "h", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
        {"name": "q", "shape": [1, 3], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1}},
        {"name": "i", "shape": [2], "dtype": "int32"},
    ], half.tobytes() + q8.tobytes() + i32.tobytes())  # fmt: skip
    w = read_graph_model(path).weights
    assert w["h"].dtype == np.float32 and w["h"].tolist() == [1.5, -2.25, 65504.0]
    assert w["q"].shape == (1, 3) and w["q"].tolist() == [[-1.0, 4.0, 126.5]]
    assert w["i"].tolist() == [7, -3]


def test_reader_refuses_malformed_files(tmp_path: Path) -> None:
    entry = {"name": "h", "shape": [4], "dtype": "float32", "quantization": {"dtype": "float16"}}
    with pytest.raises(TfjsFormatError, match="truncated"):
        read_graph_model(_write_model(tmp_path, [entry], b"\0" * 6))
    with pytest.raises(TfjsFormatError, match="left after"):
        read_graph_model(_write_model(tmp_path, [entry], b"\0" * 10))
    with pytest.raises(TfjsFormatError, match="unknown quantisation"):
        read_graph_model(_write_model(tmp_path, [{**entry, "quantization": {"dtype": "int4"}}], b"\0" * 8))
    with pytest.raises(TfjsFormatError, match="scale/min"):
        read_graph_model(_write_model(tmp_path, [{**entry, "quantization": {"dtype": "uint8"}}], b"\0" * 4))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TfjsFormatError, match="JSON"):
        read_graph_model(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(TfjsFormatError, match="not a TF.js model"):
        read_graph_model(tmp_path / "other.json")


def test_torch_equals_the_graph_reference(model, golden: dict[str, np.ndarray]) -> None:  # noqa: ANN001
    """On real face crops, NHWC and NCHW, batched: the port equals the float64 interpreter of the graph."""
    x = torch.from_numpy(golden["crops"][..., ::-1].astype(np.float32) - VGG)  # NHWC BGR minus means
    with torch.inference_mode():
        nhwc, nchw = model(x).numpy(), model(x.permute(0, 3, 1, 2)).numpy()
        single = model(x[:1]).numpy()
    ref = golden["descriptors"]
    assert nhwc.shape == ref.shape == (len(golden["crops"]), 1024)
    assert np.abs(nhwc - ref).max() <= 1e-4 and np.abs(nchw - ref).max() <= 1e-4
    assert np.abs(single - ref[:1]).max() <= 1e-4
    cos = (nhwc * ref).sum(1) / np.linalg.norm(nhwc, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999, cos


def test_golden_file_is_the_interpreter_output(hse_files: tuple[Path, Path], golden: dict[str, np.ndarray]) -> None:
    """The stored reference is what the interpreter gives today (one crop, about a second)."""
    ref = _reference_module()
    graph = read_graph_model(hse_files[0], shards={"faceres.bin": hse_files[1]})
    out = ref.run_graph(graph, {"input_1": ref.hse_input(golden["crops"][:1])}, "global_pooling/Mean")
    assert np.abs(out - golden["descriptors"][:1]).max() <= 1e-5


def test_crop_equals_opencv_resize_of_the_widened_box() -> None:
    import cv2

    from engine.faces.detect import Detections
    from engine.faces.embed_hse import crop_boxes, crop_faces

    img = torch.randint(0, 256, (2, 3, 300, 400), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[50.3, 40.2, 250.7, 280.1], [-30, -20, 100, 90], [350, 250, 420, 320]])
    n = len(boxes)
    image, rotation = torch.tensor([0, 1, 1]), torch.zeros(n, dtype=torch.long)
    det = Detections(image, boxes, torch.ones(n), torch.zeros(n, 10), rotation)
    crops = crop_faces(img, det)
    assert crops.shape == (3, 3, 224, 224)
    for k, (x1, y1, x2, y2) in enumerate(crop_boxes(det, 300, 400).long().tolist()):
        src = img[int(det.image[k])].permute(1, 2, 0).numpy()[y1:y2, x1:x2].astype(np.float32)
        expected = cv2.resize(src, (224, 224), interpolation=cv2.INTER_LINEAR)
        assert np.abs(crops[k].permute(1, 2, 0).numpy() - expected).max() < 0.05


def test_embedder_tells_obama_from_biden(hse_files: tuple[Path, Path], shared_data: Path) -> None:
    from engine import media
    from engine.faces.detect import FaceDetector
    from engine.faces.embed_hse import HSEEmbedder

    detector, embedder = FaceDetector(device="cpu"), HSEEmbedder("cpu", "fp32", hse_files)
    desc = {}
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        img = media.load_image(shared_data / "faces" / name)[None]
        det = detector.detect(img)
        assert len(det) == 1, name
        desc[name] = embedder.embed(img, det)
    assert desc["obama.jpg"].shape == (1, 1024)
    assert torch.allclose(desc["obama.jpg"].norm(dim=1), torch.ones(1))
    same = torch.dist(desc["obama.jpg"], desc["obama2.jpg"])
    other = min(torch.dist(desc["obama.jpg"], desc["biden.jpg"]), torch.dist(desc["obama2.jpg"], desc["biden.jpg"]))
    assert same < other, (same, other)
    # The faces stage's call: the same unit descriptor, and the raw output's length, which for a clear portrait
    # is well above the confident magnitude (8; false detections measure under it).
    unit, magnitude = embedder.embed_faces(img, det, torch.zeros(0))
    torch.testing.assert_close(unit, desc["biden.jpg"], rtol=0, atol=1e-6)
    assert magnitude.shape == (1,) and float(magnitude[0]) > 8.0


def test_onnx_runtime_equals_torch_on_the_reference_crops(hse_files: tuple[Path, Path], golden) -> None:  # noqa: ANN001
    """The CPU default (ONNX Runtime on the exported graph) gives torch's descriptors, batched and one by one."""
    pytest.importorskip("onnxruntime")
    from engine.faces.embed_hse import HSEEmbedder

    ort, eager = HSEEmbedder("cpu", "fp32", hse_files), HSEEmbedder("cpu", "fp32", hse_files, backend="torch")
    assert (ort.backend, eager.backend) == ("onnxruntime", "torch")
    crops = torch.from_numpy(golden["crops"].copy()).permute(0, 3, 1, 2)  # RGB 0..255, NCHW
    got, want = ort.embed_crops(crops), eager.embed_crops(crops)
    assert got.shape == want.shape == (len(crops), 1024)
    assert float((got - want).abs().max()) <= 1e-5
    assert float((ort.embed_crops(crops[:1]) - got[:1]).abs().max()) <= 1e-6


def test_crops_of_several_faces_per_frame_equal_one_frame_at_a_time() -> None:
    """One grid_sample over every frame with a face equals cropping each frame's faces on their own."""
    from engine.faces.detect import Detections
    from engine.faces.embed_hse import crop_faces

    gen = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (4, 3, 90, 120), generator=gen, dtype=torch.uint8)
    image = torch.tensor([2, 0, 2, 2, 3])  # frame 1 has no face, frame 2 three
    xy = torch.rand(5, 2, generator=gen) * torch.tensor([80.0, 50.0])
    boxes = torch.cat([xy, xy + 10 + 30 * torch.rand(5, 2, generator=gen)], 1)
    det = Detections(image, boxes, torch.ones(5), torch.zeros(5, 10), torch.zeros(5, dtype=torch.long))
    together = crop_faces(frames, det, size=32)
    for i in range(5):
        alone = crop_faces(frames[image[i] : image[i] + 1], Detections(
            torch.zeros(1, dtype=torch.long), boxes[i : i + 1], torch.ones(1), torch.zeros(1, 10),
            torch.zeros(1, dtype=torch.long)), size=32)  # fmt: skip
        assert torch.equal(together[i], alone[0])
