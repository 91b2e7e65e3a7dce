"""Decoding: the only room that talks to codecs (torchcodec, on CPU or with NVDEC on CUDA).

Frames are sampled by presentation time from the video stream's *real* start (``begin_stream_seconds``, not 0:
the shared Hamilton clip's video starts at 0.852 s while its audio starts at 0). Display rotation is honoured by
torchcodec, so frames come out the way a player shows them. Frames stay uint8 NCHW tensors on the chosen device.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torchcodec.decoders import AudioDecoder, VideoDecoder

log = logging.getLogger(__name__)
_cpu_fallback_said = False

#: A sample at time t takes the frame nearest to t; frames are decoded in chunks of this many.
DEFAULT_CHUNK = 64
#: A stream whose decodable content ends this much before its header's duration is reported as truncated.
TRUNCATION_TOLERANCE_S = 0.5


class DecodeError(RuntimeError):
    """A file cannot be decoded; ``kind`` is a short machine-readable reason for the ``video_errors`` row."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class VideoInfo:
    codec: str | None
    width: int  # after display rotation
    height: int
    rotation: float
    fps: float | None
    num_frames: int | None
    start_s: float  # the video stream's real start
    end_s: float  # end of the last decodable frame
    header_duration_s: float | None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def frame_duration_s(self) -> float:
        if self.fps and self.fps > 0:
            return 1.0 / self.fps
        if self.num_frames:
            return self.duration_s / self.num_frames
        return 0.0

    @property
    def truncated_s(self) -> float:
        """Seconds the header promises beyond what the file really holds (0 when whole)."""
        if self.header_duration_s is None:
            return 0.0
        return max(0.0, self.header_duration_s - self.duration_s)


@dataclass(frozen=True)
class AudioInfo:
    codec: str | None
    sample_rate: int
    channels: int
    start_s: float
    duration_s: float | None


@dataclass(frozen=True)
class MediaInfo:
    path: str
    video: VideoInfo
    audio: AudioInfo | None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


@dataclass
class FrameBatch:
    """Sampled frames of one video: uint8 ``[N, 3, H, W]`` on the decode device, plus their times."""

    frames: torch.Tensor
    index: torch.Tensor  # int64 [N]: k, the sample number
    target_s: torch.Tensor  # float64 [N]: start + k * interval
    pts_s: torch.Tensor  # float64 [N]: the decoded frame's presentation time

    def __len__(self) -> int:
        return int(self.index.numel())


@dataclass
class AudioTrack:
    """Mono float32 samples in [-1, 1] at ``sample_rate``; sample 0 plays at ``start_s``."""

    samples: torch.Tensor
    sample_rate: int
    start_s: float

    @property
    def duration_s(self) -> float:
        return self.samples.numel() / self.sample_rate


_CPP_PREFIX = re.compile(r"^\w+, [^,]*\.cpp:\d+, ")


def _clean(exc: BaseException) -> str:
    """torchcodec's C++ errors start with a source location; users need the reason only."""
    text = " ".join(str(exc).split())
    return _CPP_PREFIX.sub("", text)


def _open_video(path: str | Path, device: str = "cpu") -> VideoDecoder:
    path = Path(path)
    if not path.exists():
        raise DecodeError("unreadable_path", f"cannot read {path}: no such file (or a dangling link)")
    if path.is_dir():
        raise DecodeError("unreadable_path", f"{path} is a folder, not a video file")
    if path.stat().st_size == 0:
        raise DecodeError("empty_file", f"{path.name} is an empty (zero-byte) file")
    try:
        # exact mode scans the file once: true frame count and pts, even for variable frame rate.
        if device.startswith("cuda"):
            return _open_on_gpu(path, device)
        return VideoDecoder(path, device=device, seek_mode="exact", num_ffmpeg_threads=0)
    except ValueError as exc:  # torchcodec: the container opened, but has no video stream
        if _audio_info(path) is not None:
            raise DecodeError("no_video_stream", f"{path.name} has no video stream (audio only)") from exc
        raise DecodeError("no_video_stream", f"{path.name} has no video stream: {_clean(exc)}") from exc
    except RuntimeError as exc:
        msg = _clean(exc)
        if "Invalid data" in msg:
            raise DecodeError(
                "not_media", f"{path.name} is not a readable video (truncated or not a media file): {msg}"
            ) from exc
        if "Permission denied" in msg or "No such file" in msg:
            raise DecodeError("unreadable_path", f"cannot read {path}: {msg}") from exc
        raise DecodeError("decode_failed", f"cannot open {path.name}: {msg}") from exc


def _open_on_gpu(path: Path, device: str) -> VideoDecoder:
    """NVDEC through torchcodec's CUDA build; where this torchcodec (the CPU-only wheel from PyPI) or this FFmpeg
    cannot decode on the GPU, decode on the CPU instead and say so once: the frames still reach the device, one
    pinned host-to-device copy per batch (:func:`_on_device`)."""
    global _cpu_fallback_said
    try:
        return VideoDecoder(path, device=device, seek_mode="exact", num_ffmpeg_threads=0)
    except RuntimeError as exc:
        msg = _clean(exc)
        if "cuda" not in msg.lower() and "device" not in msg.lower():
            raise
        if not _cpu_fallback_said:
            _cpu_fallback_said = True
            log.warning(
                "torchcodec cannot decode on %s here (%s): decoding on the CPU and copying frames to the GPU; "
                "install torchcodec's CUDA build for NVDEC (see the README)",
                device,
                msg,
            )
        return VideoDecoder(path, device="cpu", seek_mode="exact", num_ffmpeg_threads=0)


def _on_device(frames: torch.Tensor, device: str) -> torch.Tensor:
    """Frames on ``device``: a no-op when the decoder already put them there (NVDEC), else one pinned copy."""
    if frames.device == torch.device(device) or device == "cpu":
        return frames
    return frames.pin_memory().to(device, non_blocking=True)


def _audio_info(path: str | Path) -> AudioInfo | None:
    try:
        meta = AudioDecoder(path).metadata
    except (ValueError, RuntimeError):  # torchcodec raises ValueError when no audio stream exists
        return None
    return AudioInfo(
        meta.codec,
        int(meta.sample_rate),
        int(meta.num_channels),
        float(meta.begin_stream_seconds or 0.0),
        meta.duration_seconds,
    )


def _video_info(decoder: VideoDecoder) -> VideoInfo:
    m = decoder.metadata
    return VideoInfo(
        codec=m.codec,
        width=int(m.width),
        height=int(m.height),
        rotation=float(m.rotation or 0.0),
        fps=float(m.average_fps) if m.average_fps else None,
        num_frames=int(m.num_frames) if m.num_frames is not None else None,
        start_s=float(m.begin_stream_seconds),
        end_s=float(m.end_stream_seconds),
        header_duration_s=m.duration_seconds_from_header,
    )


def probe(path: str | Path) -> MediaInfo:
    """Stream facts of a media file, or ``DecodeError`` saying plainly why it is not a usable video."""
    info = _video_info(_open_video(path))
    if info.num_frames == 0 or info.end_s <= info.start_s:
        raise DecodeError("no_frames", f"{Path(path).name} has a video stream but no decodable frame")
    return MediaInfo(str(path), info, _audio_info(path))


def sample_times(video: VideoInfo, interval: float = 0.5) -> torch.Tensor:
    """Targets ``start + k * interval`` for k = 0 .. floor((end - start) / interval), float64 seconds."""
    n = math.floor(video.duration_s / interval + 1e-9) + 1
    return video.start_s + interval * torch.arange(n, dtype=torch.float64)


def sample_frames(
    path: str | Path,
    interval: float = 0.5,
    device: str = "cpu",
    chunk: int = DEFAULT_CHUNK,
) -> Iterator[FrameBatch]:
    """Yield the frames nearest to every sample time, ``chunk`` at a time, as tensors on ``device``.

    The frame *played at* t can be almost a whole frame older than t; asking for the frame played at
    ``t + frame_duration / 2`` gives the frame whose pts is nearest to t (within half a frame).
    """
    decoder = _open_video(path, device)
    video = _video_info(decoder)
    targets = sample_times(video, interval)
    half = video.frame_duration_s / 2
    # Never ask past the last frame's end: torchcodec refuses times outside [start, end).
    last_ok = math.nextafter(video.end_s, -math.inf)
    queries = (targets + half).clamp(max=last_ok)
    for lo in range(0, len(targets), chunk):
        hi = min(lo + chunk, len(targets))
        try:
            got = decoder.get_frames_played_at(queries[lo:hi].tolist())
        except (RuntimeError, IndexError, ValueError) as exc:
            raise DecodeError(
                "decode_failed", f"{Path(path).name}: decoding frames {lo}..{hi - 1} failed: {_clean(exc)}"
            ) from exc
        yield FrameBatch(
            frames=_on_device(got.data, device),
            index=torch.arange(lo, hi, dtype=torch.int64),
            target_s=targets[lo:hi],
            pts_s=got.pts_seconds.to(torch.float64).cpu(),
        )


def iter_frames(
    path: str | Path,
    start: int = 0,
    stop: int | None = None,
    device: str = "cpu",
    chunk: int = DEFAULT_CHUNK,
) -> Iterator[FrameBatch]:
    """Yield *every* decoded frame with index in ``[start, stop)``, ``chunk`` at a time, in display order.

    For work that needs consecutive frames (shot cuts) rather than samples. ``index`` holds the frame
    numbers (0 = the stream's first frame) and ``target_s`` equals ``pts_s``. ``stop`` beyond the last frame
    is clamped, so a caller can ask for a time range of a film without knowing its exact length.
    """
    decoder = _open_video(path, device)
    total = len(decoder)
    stop = total if stop is None else min(stop, total)
    for lo in range(max(0, start), stop, chunk):
        hi = min(lo + chunk, stop)
        try:
            got = decoder.get_frames_in_range(lo, hi)
        except (RuntimeError, IndexError, ValueError) as exc:
            raise DecodeError(
                "decode_failed", f"{Path(path).name}: decoding frames {lo}..{hi - 1} failed: {_clean(exc)}"
            ) from exc
        pts = got.pts_seconds.to(torch.float64).cpu()
        yield FrameBatch(
            frames=_on_device(got.data, device), index=torch.arange(lo, hi, dtype=torch.int64), target_s=pts, pts_s=pts
        )


def decode_audio(path: str | Path, sample_rate: int = 16_000) -> AudioTrack:
    """The first audio stream, down-mixed to mono float32 and resampled to ``sample_rate`` by FFmpeg."""
    try:
        decoder = AudioDecoder(path, sample_rate=sample_rate, num_channels=1)
        samples = decoder.get_all_samples()
    except ValueError as exc:
        raise DecodeError("no_audio", f"{Path(path).name} has no audio stream") from exc
    except RuntimeError as exc:
        raise DecodeError("audio_decode_failed", f"{Path(path).name}: {_clean(exc)}") from exc
    return AudioTrack(samples.data.reshape(-1).to(torch.float32), int(samples.sample_rate), float(samples.pts_seconds))


def encode_jpegs(frames: torch.Tensor, quality: int = 90) -> list[bytes]:
    """JPEG-encode a uint8 ``[N, 3, H, W]`` batch on its own device (nvJPEG on CUDA, libjpeg on CPU)."""
    from torchvision.io import encode_jpeg

    if len(frames) == 0:
        return []
    encoded = encode_jpeg(list(frames.contiguous()), quality=quality)
    return [bytes(t.cpu().numpy().tobytes()) for t in encoded]


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


#: FFmpeg's last stderr lines kept in an encode error: enough for the reason, short enough for a table row.
_FFMPEG_ERROR_LINES = 4
COVER_METHODS = ("blur", "inpaint")


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
