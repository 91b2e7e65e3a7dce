"""Inference-time folding of per-channel scale-and-shift layers into the convolution before them.

A batch norm in eval mode (RetinaFace) and dlib's ``affine`` layer (the face ResNet) are both ``y * scale + shift``
per output channel, applied to a convolution's output. Folding them into the convolution's weights and bias gives
the same function with one pass over the activations instead of two. The result differs from the unfolded
network only by float rounding (the golden-file and dlib parity tests hold for the folded networks).
"""

from __future__ import annotations

import torch
from torch import nn


def scale_shift(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale, shift)`` of a per-channel affine layer (eval-mode batch norm, or anything with ``scale_shift()``)."""
    if isinstance(layer, nn.BatchNorm2d) and layer.running_mean is not None and layer.running_var is not None:
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        return scale, layer.bias - layer.running_mean * scale
    method = getattr(layer, "scale_shift", None)
    return method() if callable(method) else None


@torch.no_grad()
def fold_into_conv(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """A new conv computing ``conv(x) * scale + shift`` (per output channel)."""
    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device, conv.weight.dtype)
    folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    folded.bias.copy_(bias * scale.reshape(-1) + shift.reshape(-1))
    return folded.eval()


def fold_sequentials(model: nn.Module) -> nn.Module:
    """In every ``nn.Sequential`` of ``model``, replace each conv followed by a scale-and-shift layer by one conv
    (in place; returns ``model``)."""
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            layers, out, i = list(child), [], 0
            while i < len(layers):
                pair = scale_shift(layers[i + 1]) if i + 1 < len(layers) else None
                if isinstance(layers[i], nn.Conv2d) and pair is not None:
                    out.append(fold_into_conv(layers[i], *pair))
                    i += 2
                else:
                    out.append(layers[i])
                    i += 1
            setattr(model, name, fold_sequentials(nn.Sequential(*out)))
        else:
            fold_sequentials(child)
    return model
