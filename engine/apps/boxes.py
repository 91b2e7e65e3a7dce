"""Boxes on every frame between sampled detections: a face is looked for every few frames, but a clip (search) or a
trajectory (the seed's film files) needs a box on each of its frames. One interpolation serves both."""

from __future__ import annotations

import torch


def frame_boxes(frames: torch.Tensor, boxes: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """Boxes ``[last - first + 1, 4]`` for every frame ``first .. last``: linear between the sampled ``boxes``
    (``[M, 4]`` at ascending ``frames``), held at the first and last sample outside them."""
    f, b = frames.double(), boxes.double()
    want = torch.arange(first, last + 1, dtype=torch.float64)
    idx = torch.searchsorted(f, want, right=True)
    lo, hi = (idx - 1).clamp(0, len(f) - 1), idx.clamp(max=len(f) - 1)
    span = f[hi] - f[lo]
    w = torch.where(span > 0, (want - f[lo]) / span.clamp(min=1), torch.zeros_like(want)).clamp(0, 1)
    return b[lo] + w[:, None] * (b[hi] - b[lo])


def smooth(boxes: torch.Tensor, window: int) -> torch.Tensor:
    """A centred moving average of per-frame boxes over ``window`` frames (odd; edges repeated): a steady crop."""
    if window <= 1 or len(boxes) < 2:
        return boxes
    x = torch.nn.functional.pad(boxes.T[None].float(), (window // 2, window // 2), mode="replicate")
    return torch.nn.functional.avg_pool1d(x, window, stride=1)[0].T.to(boxes.dtype)
