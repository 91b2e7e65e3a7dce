"""Frames: a video's samples every ``interval`` seconds, or every frame of a range, as uint8 tensors on a device.

Frames are sampled by presentation time from the video stream's *real* start (``begin_stream_seconds``, not 0:
the shared Hamilton clip's video starts at 0.852 s while its audio starts at 0). Each sample is the frame whose pts
is nearest its target time, also in a variable-frame-rate video, where stepping by the average frame duration
would miss (the frame for 2.0 s taken at 2.042 s though one exists at 2.000 s). Display rotation is honoured by
torchcodec, so frames come out the way a player shows them. Frames stay uint8 NCHW tensors on the chosen device.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torchcodec.decoders import VideoDecoder

from engine.media.streams import DecodeError, VideoInfo, _clean, _open_video, _video_info

log = logging.getLogger(__name__)

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
    on_corrupt: Callable[[list[int], str], None] | None = None,
) -> Iterator[FrameBatch]:
    """Yield the frames nearest to every sample time, ``chunk`` at a time, as tensors on ``device``.

    The frame *played at* t can be almost a whole frame older than t; asking for the frame played at
    ``t + frame_duration / 2`` gives the frame whose pts is nearest to t (within half a frame).

    Corrupt data in the middle of a file (a damaged download) costs the samples it touches, not the video: a chunk
    that fails is decoded again sample by sample, the samples that decode are kept (``index`` then has gaps), and
    ``on_corrupt(samples, message)`` is told once, at the end, which sample numbers were lost and why (by default a
    warning is logged). Only a video of which no sample decodes raises ``DecodeError``.
    """
    decoder = _open_video(path, device)
    video = _video_info(decoder)
    targets = sample_times(video, interval)
    half = video.frame_duration_s / 2
    # Never ask past the last frame's end: torchcodec refuses times outside [start, end).
    last_ok = math.nextafter(video.end_s, -math.inf)
    queries = (targets + half).clamp(max=last_ok)
    pts = frame_pts(path)
    # A variable frame rate: the frame nearest each target by pts, by index. A constant one (or no pts list) keeps
    # the time query above, which picks the same frames for it (and has since the first run: results unchanged).
    nearest = None if pts is None or len(pts) != len(decoder) or _constant_rate(pts) else nearest_frames(pts, targets)
    sampler = _Sampler(Path(path), device, decoder, queries, nearest)
    corrupt: list[int] = []
    reason, kept_any = "", False
    for lo in range(0, len(targets), chunk):
        wanted = list(range(lo, min(lo + chunk, len(targets))))
        try:
            data, pts_s = sampler.get(wanted)
        except _DECODE_ERRORS as exc:
            reason = reason or _clean(exc)
            wanted, data, pts_s = sampler.one_by_one(wanted, corrupt)
            if not wanted:
                continue
        kept_any = True
        yield FrameBatch(
            frames=_on_device(data, device),
            index=torch.tensor(wanted, dtype=torch.int64),
            target_s=targets[wanted],
            pts_s=pts_s.to(torch.float64).cpu(),
        )
    report_lost(Path(path).name, corrupt, targets.tolist(), reason, kept_any, on_corrupt)


def report_lost(
    name: str,
    lost: list[int],
    targets: list[float],
    reason: str,
    kept_any: bool,
    on_corrupt: Callable[[list[int], str], None] | None,
) -> None:
    """Say which samples could not be decoded (``on_corrupt``, else a logged warning); none kept at all is a
    ``DecodeError``. Both sampling modes report lost samples through this, in the same words."""
    if not lost:
        return
    if not kept_any:
        raise DecodeError("decode_failed", f"{name}: decoding frames 0..{len(targets) - 1} failed: {reason}")
    times = [targets[k] for k in lost]
    message = (
        f"{name}: {len(lost)} of {len(targets)} sampled frames could not be decoded (corrupt data; samples "
        f"between {min(times):.2f}s and {max(times):.2f}s: {reason}); the other {len(targets) - len(lost)} "
        "are kept"
    )
    if on_corrupt is None:
        log.warning("%s", message)
    else:
        on_corrupt(lost, message)


#: What torchcodec raises when frames cannot be decoded.
_DECODE_ERRORS = (RuntimeError, IndexError, ValueError)


@dataclass
class _Sampler:
    """Gets sampled frames from one video's decoder, by time query (``nearest`` is None) or by frame index, and
    reopens the decoder after a failure: torchcodec's decoder is unusable once FFmpeg refused a packet."""

    path: Path
    device: str
    decoder: VideoDecoder
    queries: torch.Tensor
    nearest: torch.Tensor | None

    def get(self, samples: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames of these sample numbers and their pts (seconds); raises what torchcodec raises."""
        if self.nearest is None:
            got = self.decoder.get_frames_played_at(self.queries[samples].tolist())
        else:
            got = self.decoder.get_frames_at(self.nearest[samples].tolist())
        return got.data, got.pts_seconds

    def one_by_one(
        self, samples: list[int], corrupt: list[int]
    ) -> tuple[list[int], torch.Tensor | None, torch.Tensor | None]:
        """The samples that decode on their own (with their frames and pts); the others are added to ``corrupt``."""
        kept, frames, pts = [], [], []
        self.decoder = _open_video(self.path, self.device)
        for k in samples:
            try:
                data, pts_s = self.get([k])
            except _DECODE_ERRORS:
                corrupt.append(k)
                self.decoder = _open_video(self.path, self.device)
                continue
            kept.append(k)
            frames.append(data)
            pts.append(pts_s)
        if not kept:
            return [], None, None
        return kept, torch.cat(frames), torch.cat(pts)


@dataclass(frozen=True)
class FramePts:
    """Every frame's pts of a video stream in ticks of its ``time_base`` (num, den), sorted (display order): the
    frame index of torchcodec's exact mode is the position in ``ticks``."""

    ticks: list[int]
    time_base: tuple[int, int]

    def __len__(self) -> int:
        return len(self.ticks)

    def seconds(self) -> torch.Tensor:
        """The pts in seconds, float64, to the last bit as torchcodec computes them (``pts * num / den``)."""
        num, den = self.time_base
        return torch.tensor(self.ticks, dtype=torch.float64) * num / den


def frame_pts(path: str | Path) -> FramePts | None:
    """The first video stream's frame pts, read from its packets by PyAV's demuxer (no decoding: a few milliseconds
    for a minute of video, where launching ``ffprobe`` for the same list cost 70-110 ms per video), as torchcodec's
    exact scan indexes them: pts, else dts, discarded and empty (flush) packets left out. ``None`` when the file
    cannot be read that way, or PyAV is not installed (a bare GPU image): sampling then queries by time, which picks
    the same frames for a constant frame rate."""
    try:
        import av  # PyAV: only its demuxer here; torchcodec decodes
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            num, den = stream.time_base.numerator, stream.time_base.denominator
            ticks = [
                int(p.pts if p.pts is not None else p.dts)
                for p in container.demux(stream)
                if p.size and not p.is_discard and (p.pts is not None or p.dts is not None)
            ]
    except (av.error.FFmpegError, IndexError, AttributeError, TypeError, ValueError):
        return None
    return FramePts(sorted(ticks), (num, den)) if ticks and num > 0 and den > 0 else None


def _constant_rate(pts: FramePts) -> bool:
    """Whether every frame lasts as long as the others, to one tick of the time base (its rounding)."""
    steps = [b - a for a, b in zip(pts.ticks, pts.ticks[1:], strict=False)]
    return not steps or max(steps) - min(steps) <= 1


def nearest_frames(pts: FramePts, targets: torch.Tensor) -> torch.Tensor:
    """For each target time (seconds), the index of the frame whose pts is nearest; a tie goes to the later frame,
    as the time query of a constant frame rate does. int64 ``[len(targets)]``."""
    seconds = pts.seconds()
    after = torch.searchsorted(seconds, targets, right=False).clamp(max=len(seconds) - 1)  # first pts >= target
    before = (after - 1).clamp(min=0)
    later = (seconds[after] - targets).abs() <= (targets - seconds[before]).abs()
    return torch.where(later, after, before)


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
