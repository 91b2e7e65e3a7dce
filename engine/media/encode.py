"""Encoding: frames to JPEG bytes, and videos re-encoded by the ffmpeg program (a region covered, a clip cut out, a
face followed in a crop).

FFmpeg writes beside the destination and the file is renamed at the end, so a failure never leaves a half-written
file; its own reason (its last stderr lines) becomes a :class:`DecodeError` of kind ``encode_failed``.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Iterable
from fractions import Fraction
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


#: libx264 presets from fastest to slowest (``-preset``); the cover takes any of them.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
#: The logo cover's preset. The cover re-encodes every frame of every video while the models see two a second, so
#: on a CPU it was the run's critical path; see docs/performance.md for the measured speed and picture outside the
#: covered box of each preset against the former ``veryfast`` (``benchmarks/cover_quality.py``).
COVER_PRESET = "ultrafast"

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
    preset: str | None = None,
) -> Path:
    """Re-encode ``src`` to ``dst`` (H.264, same size, frames and timestamps) with one rectangle covered.

    ``preset``: libx264's speed preset, :data:`COVER_PRESET` by default (why that one: its comment).

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
    if (preset or COVER_PRESET) not in X264_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)} (got {preset!r})")
    if src.resolve() == dst.resolve():
        raise ValueError(f"{src}: cannot re-encode a video onto itself")
    video = probe(src).video
    x0, y0 = max(0, x - x % 2), max(0, y - y % 2)
    x1, y1 = min(video.width, x + w + (x + w) % 2), min(video.height, y + h + (y + h) % 2)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"region x={x} y={y} w={w} h={h} is empty in the {video.width}x{video.height} frame")
    cw, ch = x1 - x0, y1 - y0
    if method == "blur":
        # A box of 2r + 1 pixels must fit in the plane: at r = len / 2 (even len, which FFmpeg's own check lets
        # through) boxblur reads a pixel past the region, whatever memory holds, and the output changes run to run.
        luma_r, chroma_r = (min(cw, ch) - 1) // 2, (min(cw // 2, ch // 2) - 1) // 2
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
        "-c:v", "libx264", "-preset", preset or COVER_PRESET, "-crf", str(crf),
        "-fps_mode", "passthrough", "-enc_time_base:v", "-1",
        "-c:a", "copy", "-map_metadata", "0", "-movflags", "+faststart",
        str(partial),
    ]  # fmt: skip
    return _ffmpeg_to(cmd, partial, dst, f"{src.name}: re-encoding with a covered region failed")


def _run_ffmpeg(cmd: list[str], stdin: Iterable[bytes] | None) -> tuple[int, bytes]:
    """Run FFmpeg, feeding it ``stdin`` chunk by chunk when given; its exit status and stderr. Stderr goes to a
    temporary file, so a chatty FFmpeg never blocks on a full pipe while we write."""
    import tempfile

    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=errors,
        )  # fmt: skip
        try:
            if stdin is not None:
                assert proc.stdin is not None
                try:
                    for chunk in stdin:
                        proc.stdin.write(chunk)
                except BrokenPipeError:
                    pass  # FFmpeg stopped reading: its exit status and stderr say why
                finally:
                    proc.stdin.close()
        finally:
            code = proc.wait()
        errors.seek(0)
        return code, errors.read()


def _ffmpeg_to(cmd: list[str], partial: Path, dst: Path, what: str, stdin: Iterable[bytes] | None = None) -> Path:
    """Run an FFmpeg command writing ``partial`` (fed ``stdin`` when given), then rename it to ``dst``;
    ``DecodeError`` with FFmpeg's last lines (its reason) when it fails, never a half-written ``dst``."""
    import os

    try:
        code, stderr = _run_ffmpeg(cmd, stdin)
    except FileNotFoundError as exc:
        raise DecodeError("ffmpeg_missing", "the ffmpeg program is not installed or not on PATH") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if code != 0:
        partial.unlink(missing_ok=True)
        # "[mp4 @ 0x55d0...] " prefixes name FFmpeg's internals, not the reason.
        text = re.sub(r"\[[\w -]+ @ 0x[0-9a-f]+\] ", "", stderr.decode("utf-8", "replace"))
        lines = [ln.strip() for ln in text.replace(str(partial), str(dst)).splitlines() if ln.strip()]
        reason = " | ".join(lines[-_FFMPEG_ERROR_LINES:]) or f"exit status {code}"
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


def _face_crops(src: Path, first: int, boxes: torch.Tensor, size: int, margin: float) -> Iterable[bytes]:
    """Frames ``first ..`` of ``src``, each cropped to the square around its box (side ``margin`` times the box's
    longer side, black outside the picture) and resampled to ``size`` x ``size``: raw RGB24 bytes, a chunk at a time."""
    from torchvision.ops import roi_align

    from engine.media.decode import iter_frames

    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    half = margin * torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=2) / 2
    squares = torch.stack([cx - half, cy - half, cx + half, cy + half], 1).float()
    done = 0
    for batch in iter_frames(src, first, first + len(boxes)):
        n = len(batch)
        rois = torch.cat([torch.arange(n, dtype=torch.float)[:, None], squares[done : done + n]], 1)
        crops = roi_align(batch.frames.float(), rois, (size, size), aligned=True)
        yield crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy().tobytes()
        done += n
    if done != len(boxes):
        raise DecodeError("decode_failed", f"{src.name}: frames {first}..{first + len(boxes) - 1} are not all there")


def encode_face_clip(
    src: str | Path, dst: str | Path, first: int, boxes: torch.Tensor, size: int = 256, margin: float = 1.5,
    crf: int = 18,
) -> Path:  # fmt: skip
    """A face-crop clip (the seed ``face-tracking``'s kind): frames ``first .. first + len(boxes) - 1`` of ``src``
    (frame numbers, so a clip never reaches into a frame it was not given), each cropped around its box
    ``[x1, y1, x2, y2]`` (float ``[N, 4]``, displayed-picture pixels) and scaled to ``size`` x ``size``; H.264 at the
    source's frame rate, one output frame per box, no audio (a face crop has no sound of its own)."""
    src, dst = Path(src), Path(dst)
    if len(boxes) == 0:
        raise ValueError("a face clip needs at least one box")
    if size < 16 or size % 2:
        raise ValueError(f"size must be even and at least 16 (got {size})")
    fps = probe(src).video.fps or 25.0
    rate = Fraction(fps).limit_denominator(1001)
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-framerate", str(rate), "-i", "-",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", str(partial),
    ]  # fmt: skip
    crops = _face_crops(src, first, boxes.detach().cpu().double(), size, margin)
    return _ffmpeg_to(cmd, partial, dst, f"{src.name}: face clip of frames {first}+{len(boxes)} failed", crops)


def ffmpeg_version(exe: str = "ffmpeg") -> str | None:
    """The first line of ``ffmpeg -version`` (for ``doctor``), or ``None`` when it prints nothing."""
    first = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=20).stdout.splitlines()
    return first[0] if first else None
