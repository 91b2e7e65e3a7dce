"""The detector's input in plain torch: uint8 RGB frames resized with OpenCV's geometry, BGR, minus the mean.

A leaf (it imports nothing from the engine or the kernels): the fused Triton kernel that must equal it bit for bit
(``kernels.preprocess``) imports it as its reference, and ``engine.faces.detect.preprocess`` picks between the two.
"""

from __future__ import annotations

import torch

#: The network's input is BGR minus this mean, as the RetinaFace weights were trained.
BGR_MEAN = (104.0, 117.0, 123.0)


def resize_like_cv2(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinear resize by ``scale`` with OpenCV's INTER_LINEAR geometry (output ``round(size*scale)``,
    sampling at ``(dst + 0.5) / scale - 0.5``, no antialiasing): float ``[N, C, H, W]`` out, float or uint8 in.

    When ``1/scale`` is a whole number ``k`` that divides both sides (720×1280 → 360×640 is ``k = 2``), every
    sample falls on a pixel (odd ``k``) or midway between two (even ``k``), so the result is a strided pick or a
    2×2 mean of the input: computed that way it reads only the pixels it needs (straight from uint8, no float copy
    of the full frame) and equals the general bilinear result exactly, since those means of whole numbers are exact
    in float32.
    """
    h, w = x.shape[-2:]
    k = round(1 / scale) if scale < 1 else 0
    if k >= 2 and abs(k * scale - 1) < 1e-12 and h % k == 0 and w % k == 0:
        a = (k - 1) // 2  # odd k: samples on rows/columns k·d + a; even k: midway between k·d + a and k·d + a + 1
        if k % 2:
            return x[..., a::k, a::k].to(torch.float32)
        rows = x[..., a::k, :].to(torch.float32) + x[..., a + 1 :: k, :].to(torch.float32)
        return (rows[..., a::k] + rows[..., a + 1 :: k]) * 0.25
    out = (max(1, round(h * scale)), max(1, round(w * scale)))
    return torch.ops.aten.upsample_bilinear2d(x.to(torch.float32), out, False, scale, scale)


def preprocess_torch(frames: torch.Tensor, scale: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Plain-torch ``engine.faces.detect.preprocess`` on any device (the CPU path, and the fused kernel's reference)."""
    x = resize_like_cv2(frames, scale) if scale != 1.0 else frames.to(torch.float32)
    mean = torch.tensor(BGR_MEAN, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.flip(1) - mean).to(dtype).contiguous(memory_format=torch.channels_last)
