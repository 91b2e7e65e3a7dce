"""The sampler the engine calls: exact (:mod:`engine.media.decode`) or fast (:mod:`engine.media.fast_sample`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from engine.media.decode import DEFAULT_CHUNK, FrameBatch
from engine.media.decode import sample_frames as exact_sample_frames
from engine.media.fast_sample import fast_sample_frames


def sample_frames(
    path: str | Path,
    interval: float = 0.5,
    device: str = "cpu",
    chunk: int = DEFAULT_CHUNK,
    on_corrupt: Callable[[list[int], str], None] | None = None,
    mode: str = "exact",
) -> Iterator[FrameBatch]:
    """A video's frames every ``interval`` seconds, ``chunk`` at a time, on ``device``.

    ``mode="exact"``: the frame whose pts is nearest each sample time (every frame decoded); ``"fast"``: the nearest
    *reference* frame, B-frames never decoded (same samples, a frame up to a B-run off the time). Both keep what
    decodes around corrupt data and report the rest through ``on_corrupt``.
    """
    if mode == "exact":
        return exact_sample_frames(path, interval, device, chunk, on_corrupt)
    if mode == "fast":
        return fast_sample_frames(path, interval, device, chunk, on_corrupt)
    raise ValueError(f"sampling mode must be exact or fast (got {mode!r})")
