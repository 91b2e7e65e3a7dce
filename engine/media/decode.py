"""Frames: a video's samples every ``interval`` seconds, or every frame of a range, as uint8 tensors on a device.

Frames are sampled by presentation time from the video stream's *real* start (``begin_stream_seconds``, not 0:
the shared Hamilton clip's video starts at 0.852 s while its audio starts at 0). Display rotation is honoured by
torchcodec, so frames come out the way a player shows them. Frames stay uint8 NCHW tensors on the chosen device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.media.streams import DecodeError, VideoInfo, _clean, _open_video, _video_info

#: A sample at time t takes the frame nearest to t; frames are decoded in chunks of this many.
DEFAULT_CHUNK = 64


@dataclass
class FrameBatch:
    """Sampled frames of one video: uint8 ``[N, 3, H, W]`` on the decode device, plus their times."""

    frames: torch.Tensor
    index: torch.Tensor  # int64 [N]: k, the sample number
    target_s: torch.Tensor  # float64 [N]: start + k * interval
    pts_s: torch.Tensor  # float64 [N]: the decoded frame's presentation time

    def __len__(self) -> int:
        return int(self.index.numel())


def _on_device(frames: torch.Tensor, device: str) -> torch.Tensor:
    """Frames on ``device``: a no-op when the decoder already put them there (NVDEC), else one pinned copy."""
    if frames.device == torch.device(device) or device == "cpu":
        return frames
    return frames.pin_memory().to(device, non_blocking=True)


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
