"""A reader for dlib's DNN serialization format (``net_type`` files such as
``dlib_face_recognition_resnet_model_v1.dat``), enough to load the face recognition ResNet at start-up.

The format (described in ``docs/dlib_dnn_format.md``): integers are a control byte (low 4 bits: byte count, 0x80:
negative) then little-endian magnitude bytes; floats are two such integers (mantissa, exponent); strings are a
length then bytes; data tensors are version 2, four dims and raw little-endian float32; shape-only alias tensors
are version 1 and four dims. A network is written from its loss layer down: the loss layer's fields, then each
container's version number top-down, then the input layer, then every layer's fields bottom-up. Tags, skips and
residual adds hold no data, so the topology comes from code (``dlib_resnet.py``); this module only yields records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class DlibFormatError(ValueError):
    """The file is not a dlib network of a kind this reader knows."""


@dataclass
class Layer:
    """One computational layer's record: its version string and its fields (tensors as numpy arrays)."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    loss: Layer
    input: Layer
    layers: list[Layer]  # bottom-up: from the input to just below the loss; structural layers included


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _byte(self) -> int:
        if self.pos >= len(self.data):
            raise DlibFormatError("unexpected end of file")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def int(self) -> int:
        control = self._byte()
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise DlibFormatError(f"bad integer control byte 0x{control:02x} at offset {self.pos - 1}")
        value = int.from_bytes(self.data[self.pos : self.pos + size], "little")
        self.pos += size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return special[exponent] if exponent in special else math.ldexp(float(mantissa), exponent)

    def bool(self) -> bool:
        c = self._byte()
        if c not in (0x30, 0x31):
            raise DlibFormatError(f"bad bool byte 0x{c:02x} at offset {self.pos - 1}")
        return c == 0x31

    def str(self) -> str:
        n = self.int()
        text = self.data[self.pos : self.pos + n].decode("ascii", errors="replace")
        self.pos += n
        return text

    def peek_str(self) -> str | None:
        """The string at the current position, if one plausibly starts here (without consuming it)."""
        save = self.pos
        try:
            text = self.str()
            return text if text and text.isprintable() and len(text) < 64 else None
        except DlibFormatError:
            return None
        finally:
            self.pos = save

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at offset {self.pos}, expected 2")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        if min(dims) < 0 or self.pos + 4 * count > len(self.data):
            raise DlibFormatError(f"tensor of shape {dims} at offset {self.pos} runs past the end of the file")
        out = np.frombuffer(self.data, "<f4", count, self.pos).reshape(dims).copy()
        self.pos += 4 * count
        return out

    def alias(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise DlibFormatError(f"alias tensor version {version} at offset {self.pos}, expected 1")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


def _layer_details(r: _Reader) -> Layer:
    kind = r.str()
    f: dict[str, Any] = {}
    if kind.startswith("con_"):
        f["params"] = r.tensor()
        for key in ("num_filters", "nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x"):
            f[key] = r.int()
        f["filters"], f["biases"] = r.alias(), r.alias()
        f["multipliers"] = [r.float() for _ in range(4)]
        if kind in ("con_5", "con_6"):
            f["use_bias"] = r.bool()
        if kind == "con_6":
            f["use_relu"] = r.bool()
    elif kind.startswith("affine_"):
        f["params"] = r.tensor()
        f["gamma"], f["beta"] = r.alias(), r.alias()
        f["mode"] = r.int()
        if kind == "affine_2":
            f["disabled"] = r.bool()
    elif kind.startswith("fc_"):
        f["num_outputs"], f["num_inputs"] = r.int(), r.int()
        f["params"] = r.tensor()
        f["weights"], f["biases"] = r.alias(), r.alias()
        f["bias_mode"] = r.int()
        f["multipliers"] = [r.float() for _ in range(4)]
        if kind == "fc_3":
            f["use_bias"] = r.bool()
    elif kind.startswith("relu_"):
        if kind == "relu_2":
            f["disabled"] = r.bool()
    elif kind in ("max_pool_2", "avg_pool_2"):
        for key in ("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x"):
            f[key] = r.int()
    elif kind != "add_prev_":
        raise DlibFormatError(f"layer type {kind!r} is not supported by this reader")
    return Layer(kind, f)


def read_dlib_net(path: str | Path) -> DlibNet:
    """Parse a whole dlib network file; the read must end exactly at the end of the file."""
    r = _Reader(Path(path).read_bytes())
    if r.int() != 1:
        raise DlibFormatError(f"{path}: not a dlib loss-layer network (bad leading version)")
    loss = Layer(r.str())
    if loss.kind != "loss_metric_2":
        raise DlibFormatError(f"{path}: loss {loss.kind!r} is not supported (expected loss_metric_2)")
    loss.fields = {"margin": r.float(), "distance_threshold": r.float()}
    containers = []  # top-down: 2 = add_layer with a computational layer, 1 = tag / skip
    while True:
        version = r.int()
        upcoming = r.peek_str()
        if upcoming is not None and upcoming.startswith("input_"):
            containers.append("input")
            input_version = version
            break
        if version not in (1, 2):
            raise DlibFormatError(f"{path}: unexpected container version {version} at offset {r.pos}")
        containers.append("layer" if version == 2 else "structural")
    inp = Layer(r.str())
    inp.fields["mean_rgb"] = [r.float() for _ in range(3)]
    if inp.kind == "input_rgb_image_sized":
        inp.fields["nr"], inp.fields["nc"] = r.int(), r.int()
    elif inp.kind != "input_rgb_image":
        raise DlibFormatError(f"{path}: input layer {inp.kind!r} is not supported")
    layers = []
    for container in reversed(containers):  # fields are written bottom-up
        if container == "structural":
            layers.append(Layer("tag_or_skip"))
            continue
        layer = _layer_details(r)
        # add_layer's own fields after the details: three flags and three (unused at inference) tensors.
        for _ in range(3):
            r.bool()
        for _ in range(3):
            r.tensor()
        if container == "input" and input_version >= 3:
            r.int()  # sample expansion factor (newer files only)
        layers.append(layer)
    if r.pos != len(r.data):
        raise DlibFormatError(f"{path}: {len(r.data) - r.pos} unread bytes after the network")
    return DlibNet(loss, inp, layers)
