"""Opening a media file: its streams' facts (:func:`probe`), the decoder it is read with, and plain-worded errors.

Every other file of ``engine.media`` opens videos through :func:`_open_video` here, so the checks on the path, the
choice of device (NVDEC on CUDA, or the CPU with a warning said once) and the translation of torchcodec's errors
into :class:`DecodeError` happen in one place.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from torchcodec.decoders import AudioDecoder, VideoDecoder

log = logging.getLogger(__name__)
_cpu_fallback_said = False

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


_CPP_PREFIX = re.compile(r"^\w+, [^,]*\.cpp:\d+, ")
#: What FFmpeg or torchcodec say when bytes that are not a video (random, truncated, another format) are opened:
#: FFmpeg finds no container ("Invalid data"), or a container sniffed from garbage holds a stream that cannot be
#: sought ("Could not seek file to pts=0") or has no picture size ("FrameDims.height must be > 0"). All three are
#: the same fact for the user: not a readable video.
_NOT_MEDIA_SIGNS = ("Invalid data", "Could not seek file", "FrameDims.")


def _clean(exc: BaseException) -> str:
    """torchcodec's C++ errors start with a source location; users need the reason only."""
    text = " ".join(str(exc).split())
    return _CPP_PREFIX.sub("", text)


def codecs_load() -> str | None:
    """``None`` when torchcodec's decoders and FFmpeg's shared libraries load, else why not (for ``doctor``).

    Importing ``engine.media`` already loads them and raises when they cannot, so call this inside a guard that
    turns that exception into the same answer.
    """
    try:
        import torchcodec.decoders  # noqa: F401 - loading it loads FFmpeg's shared libraries
    except Exception as exc:  # noqa: BLE001 - every failure to load is the answer, as text
        text = str(exc).strip()
        return text.splitlines()[0][:160] if text else type(exc).__name__
    return None


def torchcodec_version() -> str | None:
    """torchcodec's version as it reports itself (``+cpu`` marks the PyPI wheel, which has no NVDEC), or ``None``."""
    import torchcodec

    return getattr(torchcodec, "__version__", None)


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
        if any(sign in msg for sign in _NOT_MEDIA_SIGNS):
            raise DecodeError(
                "not_media", f"{path.name} is not a readable video (truncated or not a media file): {msg}"
            ) from exc
        if "Permission denied" in msg or "No such file" in msg:
            raise DecodeError("unreadable_path", f"cannot read {path}: {msg}") from exc
        raise DecodeError("decode_failed", f"cannot open {path.name}: {msg}") from exc


def _open_on_gpu(path: Path, device: str) -> VideoDecoder:
    """NVDEC through torchcodec's CUDA build; where this torchcodec (the CPU-only wheel from PyPI) or this FFmpeg
    cannot decode on the GPU, decode on the CPU instead and say so once: the frames still reach the device, one
    pinned host-to-device copy per batch (``engine.media.decode._on_device``)."""
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
