"""Decoding: the only room that talks to codecs (torchcodec, on CPU or with NVDEC on CUDA).

Frames are sampled by presentation time from the video stream's *real* start (``begin_stream_seconds``, not 0:
the shared Hamilton clip's video starts at 0.852 s while its audio starts at 0). Display rotation is honoured by
torchcodec, so frames come out the way a player shows them. Frames stay uint8 NCHW tensors on the chosen device.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torchcodec.decoders import AudioDecoder, VideoDecoder

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
            frames=got.data,
            index=torch.arange(lo, hi, dtype=torch.int64),
            target_s=targets[lo:hi],
            pts_s=got.pts_seconds.to(torch.float64).cpu(),
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
