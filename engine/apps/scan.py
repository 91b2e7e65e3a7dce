"""One pass over a range of a video's frames: shot scores on every frame, faces on every ``stride``-th one.

Film labelling and reference search both need the two at once: shot cuts are found between *consecutive*
frames, while faces are only looked for on a sparser grid. Decoding once and feeding the same chunks to both
keeps a film to a single decode. The face grid is global (frame numbers divisible by ``stride``), so a shard of
a film samples exactly the frames an unsharded run would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.faces.batching import FaceModels, Timer, analyze_batches
from engine.media import FrameBatch, MediaInfo, VideoInfo, iter_frames, probe
from engine.shots import ShotScorer, ShotSettings, find_cuts
from engine.types import Tick, VideoFaces


def frame_ticker(tick: Tick | None, executor: Any, total: int | None) -> Callable[[int], None] | None:
    """``on_frames`` for :func:`scan_frames` that advances ``tick``'s "frames", where the scan runs in this process
    (a local executor); a Ray worker cannot call back into the driver's terminal, so there it is ``None``."""
    if tick is None or getattr(executor, "kind", "") != "local":
        return None
    return lambda n: tick("frames", n, total)


@dataclass
class Scan:
    """What one pass found over frames ``first .. first + len(pts_s) - 1``.

    ``faces.faces.frame_index`` holds frame numbers (not sample numbers); ``scores[i]`` is the shot-change score
    of frame ``first + i`` against the frame before it (0 for the stream's first frame).
    """

    info: VideoInfo
    first: int
    faces: VideoFaces
    scores: torch.Tensor  # float32 [N], host
    pts_s: torch.Tensor  # float64 [N], host

    @property
    def stop(self) -> int:
        return self.first + len(self.pts_s)

    def cuts(self, settings: ShotSettings, lo: int, hi: int) -> torch.Tensor:
        """Frame numbers in ``[lo, hi)`` that start a new shot (decided with this scan's context around them)."""
        lo, hi = max(lo, self.first), min(hi, self.stop)
        if hi <= lo:
            return torch.zeros(0, dtype=torch.long)
        return find_cuts(self.scores, settings, valid=(lo - self.first, hi - self.first)).cpu() + self.first


def stride_for(interval: float, fps: float | None) -> int:
    """Frames between two face samples for a sampling ``interval`` in seconds (0 → every frame)."""
    if interval <= 0 or not fps:
        return 1
    return max(1, round(interval * fps))


def scan_frames(
    path: str | Path,
    models: FaceModels,
    *,
    start: int = 0,
    stop: int | None = None,
    stride: int = 1,
    shot_settings: ShotSettings | None = None,
    crops: bool = False,
    timer: Timer | None = None,
    on_frames: Callable[[int], None] | None = None,
    media: MediaInfo | None = None,
) -> Scan:
    """Decode frames ``[start, stop)`` once on the models' device: shot scores for all, faces for the grid.

    ``on_frames(n)`` is called after each decoded chunk (progress on long films). ``media``: the file's probe, when
    the caller already has it (the file is then not probed twice).
    """
    device = str(models.detector.device)
    info = (media or probe(path)).video
    scorer = ShotScorer(shot_settings)
    scores: list[torch.Tensor] = []
    pts: list[torch.Tensor] = []

    def face_frames() -> Iterator[FrameBatch]:
        for batch in iter_frames(path, start, stop, device):
            scores.append(scorer.update(batch.frames).float().cpu())
            pts.append(batch.pts_s)
            if on_frames is not None:
                on_frames(len(batch))
            keep = (batch.index % stride == 0).nonzero().flatten()
            if len(keep):
                yield FrameBatch(
                    frames=batch.frames[keep.to(batch.frames.device)],
                    index=batch.index[keep],
                    target_s=batch.target_s[keep],
                    pts_s=batch.pts_s[keep],
                )

    faces = analyze_batches(face_frames(), models, timer=timer, crops=crops)
    return Scan(
        info=info,
        first=max(0, start),
        faces=faces,
        scores=torch.cat(scores) if scores else torch.zeros(0),
        pts_s=torch.cat(pts) if pts else torch.zeros(0, dtype=torch.float64),
    )
