"""Still images: a photo file as a uint8 RGB tensor, the way every photo reaches the detector."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.media.streams import DecodeError, _clean


def load_image(path: str | Path) -> torch.Tensor:
    """A still image as uint8 RGB ``[3, H, W]`` on the CPU: grayscale is expanded, alpha dropped, and 16-bit
    images scaled to 8 bits (as OpenCV's ``imread`` does), so every photo reaches the detector the same way."""
    from torchvision.io import ImageReadMode, decode_image

    path = Path(path)
    if not path.is_file():
        raise DecodeError("unreadable_path", f"cannot read {path}: no such file")
    data = path.read_bytes()
    if not data:
        raise DecodeError("empty_file", f"{path.name} is an empty (zero-byte) file")
    try:
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as exc:
        raise DecodeError("not_image", f"{path.name} is not a readable image: {_clean(exc)}") from exc
    if img.dtype == torch.uint16:
        img = (img.to(torch.int32) >> 8).to(torch.uint8)
    elif img.dtype != torch.uint8:
        raise DecodeError("not_image", f"{path.name}: unsupported pixel type {img.dtype}")
    return img
