"""dlib's face recognition ResNet (the ``anet_type`` of dlib's ``dnn_face_recognition_ex``) as a torch module.

A 29-convolution ResNet on 150×150 RGB chips giving 128-d descriptors whose Euclidean distance is below 0.6 for
the same person. Topology (input side first): 7×7/2 conv (32) → affine → ReLU → 3×3/2 max-pool → 3 residual blocks
at 32 → a down block and 3 blocks at 64 → a down block and 2 blocks at 128 → a down block and 2 blocks at 256 →
a down block at 256 → global average → 128-unit linear layer without bias. dlib's "affine" layers are frozen batch
norms (per-channel scale and shift). Down blocks use a stride-2, unpadded first conv, and their shortcut is a 2×2
average pool; dlib adds tensors of different shapes by zero-padding the smaller one at the bottom/right and in
channels, which ``_add_padded`` reproduces. Weights and every layer's geometry come from the ``.dat`` file through
``dlib_format``; only the topology is written here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .dlib_format import DlibFormatError, Layer, read_dlib_net
from .fuse import fold_into_conv, fold_sequentials

#: (channels, is a down block) for each residual block, input side first.
BLOCKS = (
    ((32, False),) * 3
    + ((64, True),)
    + ((64, False),) * 3
    + ((128, True),)
    + ((128, False),) * 2
    + ((256, True),)
    + ((256, False),) * 2
    + ((256, True),)
)


class Affine(nn.Module):
    """Per-channel ``x * gamma + beta`` (dlib's inference-time replacement for batch norm)."""

    def __init__(self, layer: Layer) -> None:
        super().__init__()
        if layer.fields["mode"] != 0:
            raise DlibFormatError("only convolutional (per-channel) affine layers are supported")
        c = layer.fields["gamma"][1]
        p = torch.from_numpy(layer.fields["params"].reshape(-1))
        self.register_buffer("gamma", p[:c].view(1, c, 1, 1).clone())
        self.register_buffer("beta", p[c:].view(1, c, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, x, self.gamma)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel scale and shift, for folding into the convolution before (``engine.models.fuse``)."""
        return self.gamma.reshape(-1), self.beta.reshape(-1)


def _conv(layer: Layer) -> nn.Conv2d:
    f = layer.fields
    n, k, nr, nc = f["filters"]
    conv = nn.Conv2d(k, n, (nr, nc), (f["stride_y"], f["stride_x"]), (f["pad_y"], f["pad_x"]), bias=f["biases"][1] > 0)
    p = torch.from_numpy(f["params"].reshape(-1))
    with torch.no_grad():
        conv.weight.copy_(p[: n * k * nr * nc].view(n, k, nr, nc))
        if conv.bias is not None:
            conv.bias.copy_(p[n * k * nr * nc :])
    return conv


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the smaller tensor is zero-padded (channels, bottom, right) to the larger shape."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResBlock(nn.Module):
    """conv → affine → ReLU → conv → affine, plus the (pooled, for a down block) input, then ReLU."""

    def __init__(self, layers: Iterator[Layer], channels: int, down: bool) -> None:
        super().__init__()
        self.conv1, self.aff1 = _conv(_next(layers, "con_")), Affine(_next(layers, "affine_"))
        self.conv2, self.aff2 = _conv(_next(layers, "con_")), Affine(_next(layers, "affine_"))
        if self.conv1.out_channels != channels or (self.conv1.stride[0] == 2) != down:
            raise DlibFormatError(
                f"unexpected block: {self.conv1} where a {channels}-channel {'down ' if down else ''}block belongs"
            )
        self.pool = _pool(_next(layers, "avg_pool_2")) if down else None

    def fold(self) -> None:
        """Merge each affine layer into its convolution (inference only; same function up to float rounding)."""
        for conv, aff in (("conv1", "aff1"), ("conv2", "aff2")):
            layer = getattr(self, aff)
            if isinstance(layer, Affine):
                setattr(self, conv, fold_into_conv(getattr(self, conv), *layer.scale_shift()))
                setattr(self, aff, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        shortcut = self.pool(x) if self.pool is not None else x
        return F.relu(_add_padded(y, shortcut))


def _pool(layer: Layer) -> nn.Module:
    f = layer.fields
    if f["nr"] == 0:  # dlib's avg_pool_everything
        return nn.AdaptiveAvgPool2d(1)
    cls = nn.MaxPool2d if layer.kind == "max_pool_2" else nn.AvgPool2d
    return cls((f["nr"], f["nc"]), (f["stride_y"], f["stride_x"]), (f["pad_y"], f["pad_x"]))


def _next(layers: Iterator[Layer], kind: str) -> Layer:
    layer = next(layers, None)
    if layer is None or not layer.kind.startswith(kind):
        raise DlibFormatError(f"expected a {kind} layer, found {layer.kind if layer else 'the end of the net'}")
    return layer


class DlibResNet(nn.Module):
    """uint8 or float RGB chips ``[N, 3, 150, 150]`` (0..255) → 128-d descriptors ``[N, 128]``."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        net = read_dlib_net(path)
        self.size = int(net.input.fields.get("nr", 150))
        mean = torch.tensor(net.input.fields["mean_rgb"], dtype=torch.float32)
        self.register_buffer("mean", mean.view(1, 3, 1, 1))
        weighted = iter([lay for lay in net.layers if not lay.kind.startswith(("relu_", "tag_", "add_prev_"))])
        self.stem = nn.Sequential(
            _conv(_next(weighted, "con_")),
            Affine(_next(weighted, "affine_")),
            nn.ReLU(),
            _pool(_next(weighted, "max_pool_2")),
        )
        self.blocks = nn.Sequential(*(ResBlock(weighted, c, down) for c, down in BLOCKS))
        self.pool = _pool(_next(weighted, "avg_pool_2"))
        fc = _next(weighted, "fc_").fields
        if next(weighted, None) is not None:
            raise DlibFormatError("layers left over after the fc layer: not the face recognition ResNet")
        self.fc = nn.Linear(fc["num_inputs"], fc["num_outputs"], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(fc["params"].reshape(fc["num_inputs"], fc["num_outputs"]).T))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        # dlib's input_rgb_image normalisation, in float32 whatever the network runs in.
        x = (chips.to(torch.float32) - self.mean.to(torch.float32)) / 256.0
        x = x.to(self.fc.weight.dtype).contiguous(memory_format=torch.channels_last)
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(x.flatten(1))


def load_dlib_resnet(path: str | Path, device: str | torch.device = "cpu", fold: bool = True) -> DlibResNet:
    """The network from dlib's file, for inference on ``device``: affine layers folded into their convolutions
    (``fold=False`` keeps dlib's layer-for-layer structure) and activations in channels-last layout, which oneDNN
    runs fastest on a CPU and cuDNN's tensor cores want on a GPU."""
    model = DlibResNet(path).eval()
    if fold:
        fold_sequentials(model)
        for block in model.blocks:
            block.fold()
    return model.to(device).to(memory_format=torch.channels_last)
