"""A reference interpreter of TF.js graph models in numpy (float64), the oracle for the torch port of the HSE face
network (``engine.models.hse_mobilenet``), and the script that made its golden file.

It shares nothing with the torch module but the format reader: it walks the GraphDef node by node in dependency
order and runs each op with TensorFlow's own semantics (NHWC, ``SAME`` padding with the odd pixel after, depthwise
channel order ``c * multiplier + m``), in float64 so that the only differences left against the torch port are
float32 rounding.

    .venv/bin/python benchmarks/tfjs_reference.py   # rewrites tests/data/hse_reference.npz

The golden file holds, for faces of ../shared/data/faces found by RetinaFace (``engine.api.detect``'s detector,
box widened 10 % each side, resized to 224 by ``engine.faces.embed_hse.crop_faces``), the 224×224 RGB crops as
uint8 and this interpreter's ``global_pooling/Mean`` for them (input: BGR minus the VGG means).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.models.tfjs_format import GraphModel, Node, read_graph_model  # noqa: E402

VGG_BGR_MEAN = np.array([103.939, 116.779, 123.68])
SHARED_DATA = Path(os.environ.get("ENGINE_SHARED_DATA") or REPO.parent / "shared" / "data")


def _pads(size: int, k: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    if padding == "VALID":
        return 0, 0
    eff = (k - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, kh: int, kw: int, node: Node):  # noqa: ANN202 - a generator of (i, j, slice)
    """Pad ``x`` (NHWC) as the node asks and yield, per kernel tap, the strided input slice it multiplies."""
    sh, sw = node.attr.get("strides", [1, 1, 1, 1])[1:3]
    dh, dw = node.attr.get("dilations", [1, 1, 1, 1])[1:3]
    padding = node.attr.get("padding", "VALID")
    if padding == "EXPLICIT":
        e = node.attr["explicit_paddings"]
        (t, b), (le, r) = (e[2], e[3]), (e[4], e[5])
    else:
        t, b = _pads(x.shape[1], kh, sh, dh, padding)
        le, r = _pads(x.shape[2], kw, sw, dw, padding)
    x = np.pad(x, ((0, 0), (t, b), (le, r), (0, 0)))
    oh = (x.shape[1] - ((kh - 1) * dh + 1)) // sh + 1
    ow = (x.shape[2] - ((kw - 1) * dw + 1)) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, x[:, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw, :]


def conv2d(x: np.ndarray, w: np.ndarray, node: Node) -> np.ndarray:
    """TensorFlow Conv2D, NHWC input, HWIO kernel."""
    out = None
    for i, j, win in _windows(x, w.shape[0], w.shape[1], node):
        term = win @ w[i, j]
        out = term if out is None else out + term
    return out


def depthwise(x: np.ndarray, w: np.ndarray, node: Node) -> np.ndarray:
    """TensorFlow DepthwiseConv2dNative, kernel [H, W, C, M]: output channel c * M + m."""
    out = None
    for i, j, win in _windows(x, w.shape[0], w.shape[1], node):
        term = (win[..., :, None] * w[i, j]).reshape(*win.shape[:3], -1)
        out = term if out is None else out + term
    return out


def _fused_tail(y: np.ndarray, node: Node, extra: list[np.ndarray]) -> np.ndarray:
    for op in node.attr.get("fused_ops", []):
        if op == "BiasAdd":
            y = y + extra.pop(0)
        elif op == "Relu":
            y = np.maximum(y, 0)
        elif op == "Relu6":
            y = np.clip(y, 0, 6)
        elif op == "Prelu":
            a = extra.pop(0)
            y = np.where(y > 0, y, a * y)
        else:
            raise NotImplementedError(f"{node.name}: fused op {op}")
    return y


def _matmul(node: Node, a: list[np.ndarray]) -> np.ndarray:
    left = a[0].T if node.attr.get("transpose_a") else a[0]
    return left @ (a[1].T if node.attr.get("transpose_b") else a[1])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


OPS: dict[str, Callable[[Node, list[np.ndarray]], np.ndarray]] = {
    "Identity": lambda n, a: a[0],
    "Conv2D": lambda n, a: conv2d(a[0], a[1], n),
    "DepthwiseConv2dNative": lambda n, a: depthwise(a[0], a[1], n),
    "_FusedConv2D": lambda n, a: _fused_tail(conv2d(a[0], a[1], n), n, a[2:]),
    "FusedDepthwiseConv2dNative": lambda n, a: _fused_tail(depthwise(a[0], a[1], n), n, a[2:]),
    "_FusedMatMul": lambda n, a: _fused_tail(_matmul(n, a), n, a[2:]),
    "MatMul": lambda n, a: _matmul(n, a),
    "BiasAdd": lambda n, a: a[0] + a[1],
    "Add": lambda n, a: a[0] + a[1],
    "AddV2": lambda n, a: a[0] + a[1],
    "Sub": lambda n, a: a[0] - a[1],
    "Mul": lambda n, a: a[0] * a[1],
    "Relu": lambda n, a: np.maximum(a[0], 0),
    "Relu6": lambda n, a: np.clip(a[0], 0, 6),
    "Minimum": lambda n, a: np.minimum(a[0], a[1]),
    "Maximum": lambda n, a: np.maximum(a[0], a[1]),
    "Mean": lambda n, a: a[0].mean(axis=tuple(int(i) for i in np.ravel(a[1])), keepdims=bool(n.attr.get("keep_dims"))),
    "Pad": lambda n, a: np.pad(a[0], [tuple(p) for p in a[1]]),
    "Sigmoid": lambda n, a: 1 / (1 + np.exp(-a[0])),
    "Softmax": lambda n, a: _softmax(a[0]),
}


def run_graph(graph: GraphModel, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
    """Evaluate ``output`` (and only what it depends on) in float64, given the placeholders' values."""
    nodes = {n.name: n for n in graph.nodes}
    values: dict[str, np.ndarray] = {}

    def value(name: str) -> np.ndarray:
        name = name.split(":")[0]
        if name in values:
            return values[name]
        node = nodes[name]
        if node.op == "Placeholder":
            result = np.asarray(feeds[name], dtype=np.float64)
        elif node.op == "Const":
            w = graph.weights[name]
            result = w.astype(np.float64) if w.dtype.kind == "f" else w
        elif node.op in OPS:
            result = OPS[node.op](node, [value(i) for i in node.inputs if not i.startswith("^")])
        else:
            raise NotImplementedError(f"op {node.op} ({name}) is not interpreted")
        values[name] = result
        return result

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(nodes)))
    return value(output)


def hse_input(crops_rgb: np.ndarray) -> np.ndarray:
    """The network's input from uint8 RGB crops [N, 224, 224, 3]: BGR minus the VGG means, float64."""
    return crops_rgb[..., ::-1].astype(np.float64) - VGG_BGR_MEAN


def make_golden(out: Path = REPO / "tests" / "data" / "hse_reference.npz") -> Path:
    """Detect the faces of the shared photos, crop them as the embedder does, and store crops + reference outputs."""
    import torch

    from engine import media
    from engine.faces.detect import FaceDetector
    from engine.faces.embed_hse import crop_faces
    from engine.inference.weights import resolve

    photos = ["obama.jpg", "obama2.jpg", "biden.jpg", "obama_and_biden.jpg", "ryan-reynolds-reference.jpg"]
    detector = FaceDetector(device="cpu")
    crops, names = [], []
    for name in photos:
        img = media.load_image(SHARED_DATA / "faces" / name)
        det = detector.detect(img[None])
        crops.append(crop_faces(img[None], det).round().clamp(0, 255).to(torch.uint8))
        names += [f"{name}#{i}" for i in range(len(det))]
    batch = torch.cat(crops).permute(0, 2, 3, 1).numpy()  # NHWC uint8 RGB
    graph = read_graph_model(resolve("hse_faceres_json"))
    mean = run_graph(graph, {"input_1": hse_input(batch)}, "global_pooling/Mean")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, crops=batch, descriptors=mean.astype(np.float32), names=np.array(names))
    print(f"{out}: {len(batch)} faces ({', '.join(names)})")
    return out


if __name__ == "__main__":
    make_golden()
