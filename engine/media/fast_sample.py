"""Sampling that decodes fewer frames: the nearest *reference* frame to each sample time (``sampling = "fast"``).

Exact sampling (:func:`engine.media.decode.sample_frames`) must decode every frame of an H.264/HEVC stream: sampling
two frames a second from 30 fps decodes fifteen per sample, and decoding, not the models, then bounds the run.
Most of a social video's frames are B-frames nobody refers to (a platform's x264 encode: about two in three); FFmpeg
can drop them before decoding (``skip_frame = NONREF``), which torchcodec does not expose, so this mode reads the
stream through PyAV. Each sample then takes the decoded frame whose pts is nearest its target: the same targets and
sample numbers as exact sampling, a frame up to a B-run away (``timing error``, measured by
``benchmarks/sampling_bench.py``), pixels converted by PyAV's swscale instead of torchcodec's. A stream without
B-frames decodes every frame either way (nothing to skip) and gains nothing.

A target with no decodable frame within half a sample interval (corrupt data, a gap) is lost the way exact
sampling loses one: reported through ``on_corrupt``, never filled with a far-away frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from engine.media.decode import FrameBatch, _on_device, report_lost, sample_times
from engine.media.streams import DecodeError, _clean, _open_video, _video_info


def fast_sample_frames(
    path: str | Path,
    interval: float = 0.5,
    device: str = "cpu",
    chunk: int = 64,
    on_corrupt: Callable[[list[int], str], None] | None = None,
) -> Iterator[FrameBatch]:
    """Yield, ``chunk`` samples at a time, the decodable frame nearest each sample time (see the module's doc).

    The targets are exact sampling's (same probe: ``start + k * interval`` up to the stream's end), so sample ``k``
    means the same moment in either mode. Frames are uint8 NCHW on ``device``, rotated as a player shows them.
    """
    import av  # PyAV: imported here, so that exact sampling never loads a second FFmpeg

    video = _video_info(_open_video(path, "cpu"))  # same checks, wording and targets as exact sampling
    targets = sample_times(video, interval).tolist()
    tolerance = interval / 2
    picked: list[int] = []
    frames: list[torch.Tensor] = []
    pts: list[float] = []
    lost: list[int] = []
    reason = ""

    def take(k: int, frame: av.VideoFrame | None, t: float) -> None:
        nonlocal reason
        if frame is None or abs(t - targets[k]) > tolerance:
            lost.append(k)
            reason = reason or "no decodable frame near this time"
            return
        picked.append(k)
        frames.append(_rgb(frame, video.rotation))
        pts.append(t)

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:  # the probe above opened it: this is rare, but must not escape raw
        raise DecodeError("decode_failed", f"cannot open {Path(path).name}: {_clean(exc)}") from exc
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.skip_frame = "NONREF"
        prev, prev_t, k = None, float("-inf"), 0
        for frame in _decoded(container, stream):
            t = float(frame.time)
            while k < len(targets) and t >= targets[k]:  # t passed the target: prev or this one is nearest
                near_prev = targets[k] - prev_t < t - targets[k]
                take(k, prev if near_prev else frame, prev_t if near_prev else t)
                k += 1
            prev, prev_t = frame, t
            if len(picked) >= chunk:
                yield _batch(picked, frames, pts, targets, device)
                picked, frames, pts = [], [], []
            if k == len(targets):
                break
        for j in range(k, len(targets)):  # after the last decoded frame
            take(j, prev, prev_t)
    if picked:
        yield _batch(picked, frames, pts, targets, device)
    report_lost(Path(path).name, lost, targets, reason, len(lost) < len(targets), on_corrupt)


def _decoded(container, stream) -> Iterator:  # noqa: ANN001 - PyAV types, imported lazily
    """Decoded frames in display order; a packet FFmpeg refuses (corrupt data) is skipped, not fatal, and so is a
    frame it flags corrupt or that has no pts (it could not be placed in time)."""
    import av

    for packet in container.demux(stream):
        try:
            decoded = packet.decode()
        except av.error.FFmpegError:
            continue
        yield from (f for f in decoded if f.time is not None and not f.is_corrupt)


def _rgb(frame, rotation: float) -> torch.Tensor:  # noqa: ANN001 - av.VideoFrame, imported lazily
    """One frame as uint8 ``[3, H, W]``, turned by the stream's display rotation as torchcodec turns it."""
    image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
    quarter = round(rotation / 90) % 4
    return torch.rot90(image, k=quarter, dims=(1, 2)).contiguous() if quarter else image


def _batch(picked: list[int], frames: list[torch.Tensor], pts: list[float], targets: list[float], device: str):
    return FrameBatch(
        frames=_on_device(torch.stack(frames), device),
        index=torch.tensor(picked, dtype=torch.int64),
        target_s=torch.tensor([targets[k] for k in picked], dtype=torch.float64),
        pts_s=torch.tensor(pts, dtype=torch.float64),
    )
