"""The HSE face recognition network (A. Savchenko's MobileNet v1 trained on VGGFace2) as a torch module.

Read from its TF.js graph model (``engine.models.tfjs_format``). The graph, input side first: ``input_1`` (NHWC,
224×224, BGR minus the VGG means, nothing of the preprocessing inside the graph) → 27 units, each a convolution
(``Conv2D`` whose kernel already carries the batch-norm scale, ``merged_input``; or ``DepthwiseConv2dNative``
followed by a ``Mul`` by the scale) → ``Add`` of the batch-norm shift → ``Relu`` → ``Minimum`` 6 → ``Maximum`` 0
(Keras' ReLU6) → ``global_pooling/Mean`` over H and W: the 1024-d identity descriptor. The age and gender heads
after it (``_FusedMatMul``) are not computed.

Each unit becomes one ``nn.Conv2d`` with the scale and shift folded in (``engine.models.fuse``) and a clamp to
[0, 6]. TensorFlow's ``SAME`` padding is asymmetric for stride 2 on an even size (one pixel bottom/right, none
top/left), so stride-2 units pad explicitly; the geometry (strides, padding, dilations) is read from each node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fuse import fold_into_conv
from .tfjs_format import GraphModel, Node, TfjsFormatError, read_graph_model

#: The graph's descriptor output and its width.
DESCRIPTOR_NODE = "global_pooling/Mean"
DESCRIPTOR_DIM = 1024
INPUT_SIZE = 224


@dataclass
class Unit:
    """One conv → scale → shift → ReLU6 unit as read from the graph."""

    name: str
    depthwise: bool
    kernel: np.ndarray  # HWIO (Conv2D) or HWC1 (depthwise)
    scale: np.ndarray | None
    shift: np.ndarray
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: str  # "SAME" or "VALID"


def _const(graph: GraphModel, name: str) -> np.ndarray:
    if name not in graph.weights:
        raise TfjsFormatError(f"node input {name!r} is not a stored constant")
    return graph.weights[name]


def _read_units(graph: GraphModel, output: str = DESCRIPTOR_NODE) -> list[Unit]:
    """Follow the single chain from the placeholder to ``output``, grouping its ops into units."""
    consumers: dict[str, list[Node]] = {}
    for n in graph.nodes:
        for i in n.inputs:
            consumers.setdefault(i.split(":")[0], []).append(n)

    def next_op(name: str, op: str) -> Node:
        users = [n for n in consumers.get(name, []) if n.op != "Const"]
        if len(users) != 1 or users[0].op != op:
            found = ", ".join(f"{u.name} ({u.op})" for u in users) or "nothing"
            raise TfjsFormatError(f"after {name!r} the graph has {found}, expected one {op}")
        return users[0]

    inputs = [n for n in graph.nodes if n.op == "Placeholder"]
    if len(inputs) != 1:
        raise TfjsFormatError(f"expected one input placeholder, found {len(inputs)}")
    units, head = [], inputs[0].name
    while True:
        users = [n for n in consumers.get(head, []) if n.op != "Const"]
        if len(users) == 1 and users[0].name == output and users[0].op == "Mean":
            axes = _const(graph, users[0].inputs[1]).tolist()
            if sorted(axes) != [1, 2] or users[0].attr.get("keep_dims"):
                raise TfjsFormatError(f"{output}: expected a mean over axes [1, 2] without keep_dims, got {axes}")
            return units
        conv = next((u for u in users if u.op in ("Conv2D", "DepthwiseConv2dNative")), None)
        if conv is None or len(users) != 1:
            raise TfjsFormatError(f"after {head!r}: expected a convolution, found {[u.op for u in users]}")
        if conv.attr.get("data_format", "NHWC") != "NHWC":
            raise TfjsFormatError(f"{conv.name}: data_format {conv.attr['data_format']} (NHWC expected)")
        node, scale = conv, None
        nxt = [n for n in consumers.get(conv.name, []) if n.op != "Const"]
        if len(nxt) == 1 and nxt[0].op == "Mul":
            node = nxt[0]
            scale = _const(graph, node.inputs[1])
        add = next_op(node.name, "Add")
        relu = next_op(add.name, "Relu")
        low = next_op(relu.name, "Minimum")
        high = next_op(low.name, "Maximum")
        if float(_const(graph, low.inputs[1])) != 6.0 or float(_const(graph, high.inputs[1])) != 0.0:
            raise TfjsFormatError(f"{low.name}: expected the clip of a ReLU6 (min 6, max 0)")
        strides, dilations = conv.attr.get("strides", [1] * 4), conv.attr.get("dilations", [1] * 4)
        units.append(
            Unit(
                conv.name,
                conv.op == "DepthwiseConv2dNative",
                _const(graph, conv.inputs[1]),
                scale,
                _const(graph, add.inputs[1]),
                (strides[1], strides[2]),
                (dilations[1], dilations[2]),
                conv.attr.get("padding", "VALID"),
            )
        )
        head = high.name


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding along one axis: (before, after); the odd pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class ConvReLU6(nn.Module):
    """A folded convolution, TF ``SAME`` padding, and a clamp to [0, 6]."""

    def __init__(self, unit: Unit) -> None:
        super().__init__()
        k = torch.from_numpy(np.ascontiguousarray(unit.kernel, dtype=np.float32))
        kh, kw, cin, mult = k.shape
        if unit.depthwise:
            weight, groups, cout = k.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw), cin, cin * mult
        else:
            weight, groups, cout = k.permute(3, 2, 0, 1), 1, mult
        if unit.padding not in ("SAME", "VALID"):
            raise TfjsFormatError(f"{unit.name}: padding {unit.padding!r} is not supported")
        self.kernel, self.stride, self.dilation = (kh, kw), unit.stride, unit.dilation
        self.same = unit.padding == "SAME"
        # Stride 1 SAME padding is symmetric for odd kernels: let the convolution do it; otherwise pad in forward.
        self.static = self.same and unit.stride == (1, 1) and kh % 2 == 1 and kw % 2 == 1
        pad = ((kh - 1) * unit.dilation[0] // 2, (kw - 1) * unit.dilation[1] // 2) if self.static else (0, 0)
        conv = nn.Conv2d(cin, cout, (kh, kw), unit.stride, pad, unit.dilation, groups, bias=False)
        with torch.no_grad():
            conv.weight.copy_(weight)
        scale = torch.ones(cout) if unit.scale is None else torch.from_numpy(unit.scale.astype(np.float32))
        self.conv = fold_into_conv(conv, scale.reshape(-1), torch.from_numpy(unit.shift.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same and not self.static:
            top, bottom = same_padding(x.shape[2], self.kernel[0], self.stride[0], self.dilation[0])
            left, right = same_padding(x.shape[3], self.kernel[1], self.stride[1], self.dilation[1])
            x = F.pad(x, (left, right, top, bottom))
        return torch.clamp(self.conv(x), 0.0, 6.0)


class HSEMobileNet(nn.Module):
    """The graph up to ``global_pooling/Mean``: float images (BGR minus the VGG means, 224×224), NCHW or NHWC,
    to ``[N, 1024]`` descriptors (not normalised, as the graph gives them)."""

    def __init__(self, graph: GraphModel) -> None:
        super().__init__()
        self.units = nn.Sequential(*(ConvReLU6(u) for u in _read_units(graph)))
        if self.units[-1].conv.out_channels != DESCRIPTOR_DIM:
            raise TfjsFormatError(f"the last unit has {self.units[-1].conv.out_channels} channels, not 1024")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected a batch of images [N, 3, H, W] or [N, H, W, 3], got {tuple(x.shape)}")
        if x.shape[1] != 3 and x.shape[-1] == 3:
            x = x.permute(0, 3, 1, 2)  # NHWC, the graph's layout
        dtype = self.units[0].conv.weight.dtype
        x = x.to(dtype).contiguous(memory_format=torch.channels_last)
        return self.units(x).mean(dim=(2, 3))


def load_hse_mobilenet(
    path: str | Path, weights_bin: str | Path | None = None, device: str | torch.device = "cpu"
) -> HSEMobileNet:
    """The network from ``faceres.json`` and its ``faceres.bin`` (beside it unless ``weights_bin`` says where),
    in eval mode, channels-last, on ``device``."""
    shards = {"faceres.bin": weights_bin} if weights_bin is not None else None
    model = HSEMobileNet(read_graph_model(path, shards)).eval()
    return model.to(device, memory_format=torch.channels_last)
