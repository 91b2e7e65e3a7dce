"""Encoding: frames to JPEG bytes, and videos re-encoded by the ffmpeg program (a region covered, a clip cut out).

FFmpeg writes beside the destination and the file is renamed at the end, so a failure never leaves a half-written
file; its own reason (its last stderr lines) becomes a :class:`DecodeError` of kind ``encode_failed``.
"""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import torch

from engine.config.sections import COVER_METHODS  # what a challenge's [logo] method may name
from engine.media.streams import DecodeError, probe


def encode_jpegs(frames: torch.Tensor, quality: int = 90) -> list[bytes]:
    """JPEG-encode a uint8 ``[N, 3, H, W]`` batch on its own device (nvJPEG on CUDA, libjpeg on CPU)."""
    from torchvision.io import encode_jpeg

    if len(frames) == 0:
        return []
    encoded = encode_jpeg(list(frames.contiguous()), quality=quality)
    return [bytes(t.cpu().numpy().tobytes()) for t in encoded]


#: FFmpeg's last stderr lines kept in an encode error: enough for the reason, short enough for a table row.
_FFMPEG_ERROR_LINES = 4


def encode_with_region_covered(
    src: str | Path,
    dst: str | Path,
    x: int,
    y: int,
    w: int,
    h: int,
    method: str = "blur",
    strength: int = 3,
    crf: int = 18,
) -> Path:
    """Re-encode ``src`` to ``dst`` (H.264, same size, frames and timestamps) with one rectangle covered.

    ``method="blur"`` box-blurs the rectangle ``strength`` times at the largest radius it allows, so fine
    detail such as a logo's text cannot survive; ``"inpaint"`` uses FFmpeg's ``delogo``, which fills it from
    its border. Coordinates are in the displayed (rotated) picture: FFmpeg auto-rotates before the filters run,
    as torchcodec does before sampling. The rectangle is widened to even coordinates so that it lines up
    with 4:2:0 chroma, then clipped to the frame. Audio is copied unchanged. The file is written beside ``dst``
    and renamed at the end, so a failure never leaves a half-written ``dst``. Every frame keeps its timestamp
    (``-fps_mode passthrough`` and the input's time base: the encoder's default 1/fps grid would move the
    video ~10 ms against the copied audio on the shared Hamilton clip).
    """
    src, dst = Path(src), Path(dst)
    if method not in COVER_METHODS:
        raise ValueError(f"method must be one of {', '.join(COVER_METHODS)} (got {method!r})")
    if not 1 <= strength <= 20:
        raise ValueError(f"strength must be 1..20 (got {strength})")
    if src.resolve() == dst.resolve():
        raise ValueError(f"{src}: cannot re-encode a video onto itself")
    video = probe(src).video
    x0, y0 = max(0, x - x % 2), max(0, y - y % 2)
    x1, y1 = min(video.width, x + w + (x + w) % 2), min(video.height, y + h + (y + h) % 2)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"region x={x} y={y} w={w} h={h} is empty in the {video.width}x{video.height} frame")
    cw, ch = x1 - x0, y1 - y0
    if method == "blur":
        luma_r, chroma_r = min(cw, ch) // 2, min(cw // 2, ch // 2) // 2
        graph = (
            f"[0:v:0]split[base][src];[src]crop={cw}:{ch}:{x0}:{y0}:exact=1,"
            f"boxblur=luma_radius={luma_r}:luma_power={strength}:chroma_radius={chroma_r}:chroma_power={strength}"
            f"[blurred];[base][blurred]overlay={x0}:{y0}[v]"
        )
    else:
        # delogo interpolates from the pixels just outside the rectangle, so it must keep a 1-pixel border.
        dx0, dy0 = max(1, x0), max(1, y0)
        dx1, dy1 = min(video.width - 1, x1), min(video.height - 1, y1)
        if dx1 - dx0 < 1 or dy1 - dy0 < 1:
            raise ValueError(f"region x={x} y={y} w={w} h={h} leaves nothing to inpaint inside the frame border")
        graph = f"[0:v:0]delogo=x={dx0}:y={dy0}:w={dx1 - dx0}:h={dy1 - dy0}[v]"
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(src),
        "-filter_complex", graph, "-map", "[v]", "-map", "0:a?",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
        "-fps_mode", "passthrough", "-enc_time_base:v", "-1",
        "-c:a", "copy", "-map_metadata", "0", "-movflags", "+faststart",
        str(partial),
    ]  # fmt: skip
    return _ffmpeg_to(cmd, partial, dst, f"{src.name}: re-encoding with a covered region failed")


def _ffmpeg_to(cmd: list[str], partial: Path, dst: Path, what: str) -> Path:
    """Run an FFmpeg command writing ``partial``, then rename it to ``dst``; ``DecodeError`` with FFmpeg's last
    lines (its reason) when it fails, never a half-written ``dst``."""
    import os
    import subprocess

    try:
        done = subprocess.run(cmd, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise DecodeError("ffmpeg_missing", "the ffmpeg program is not installed or not on PATH") from exc
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        # "[mp4 @ 0x55d0...] " prefixes name FFmpeg's internals, not the reason.
        text = re.sub(r"\[[\w -]+ @ 0x[0-9a-f]+\] ", "", done.stderr.decode("utf-8", "replace"))
        lines = [ln.strip() for ln in text.replace(str(partial), str(dst)).splitlines() if ln.strip()]
        reason = " | ".join(lines[-_FFMPEG_ERROR_LINES:]) or f"exit status {done.returncode}"
        raise DecodeError("encode_failed", f"{what}: {reason[:600]}")
    os.replace(partial, dst)
    return dst


def cut_clip(src: str | Path, dst: str | Path, start_s: float, end_s: float, crf: int = 18) -> Path:
    """Re-encode the part of ``src`` between stream times ``start_s`` and ``end_s`` into ``dst`` (H.264 + AAC).

    Times are presentation times as the decoders report them; FFmpeg's ``-ss`` counts from the container's start
    (the earliest stream), so that start is subtracted first. Re-encoding (not stream copy) makes the cut
    frame-accurate instead of snapping to keyframes; the audio, when there is some, is kept in sync.
    """
    src, dst = Path(src), Path(dst)
    info = probe(src)
    container_start = min(info.video.start_s, info.audio.start_s if info.audio else math.inf)
    if end_s <= start_s:
        raise ValueError(f"clip end {end_s} must be after its start {start_s}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y",
        "-ss", f"{max(0.0, start_s - container_start):.6f}", "-i", str(src), "-t", f"{end_s - start_s:.6f}",
        "-map", "0:v:0", "-map", "0:a:0?", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(partial),
    ]  # fmt: skip
    return _ffmpeg_to(cmd, partial, dst, f"{src.name}: cutting {start_s:.2f}-{end_s:.2f}s failed")


def ffmpeg_version(exe: str = "ffmpeg") -> str | None:
    """The first line of ``ffmpeg -version`` (for ``doctor``), or ``None`` when it prints nothing."""
    first = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=20).stdout.splitlines()
    return first[0] if first else None
