"""A video's orientation, decided once: which of its frames with no upright face are retried rotated.

Why: a landscape recording re-posted without a display matrix shows people lying on their side, and the detector
only finds upright faces; so a frame with no face was tried again turned by 90° and by 270°, three detector passes
for every such frame (a third of the frames of real TV footage have no face at all). Sideways is a property of the
recording, not of the frame, so it is decided once per video. Display matrices need nothing here: torchcodec
applies them, so frames arrive as a player shows them.

The rule, over the video's frames with no upright face in their order (``ordinal`` counts them):

- the first ``PROBE_FRAMES`` are retried both ways (the probe; a video with fewer is retried as before);
- when at least ``MIN_PROBE_HITS`` probe frames found faces turned one way, the video is *turned* that way and every
  later frame with no upright face is retried that way only (one pass instead of two);
- otherwise the video is *upright*: only every ``RECHECK_EVERY``-th later frame with no face is retried (both ways),
  a bounded budget for a video that turns later; its finds are kept, the decision stands.

Each frame's retry depends only on the probe's outcome and its ordinal, never on how frames were batched, so the
sequential, streaming and packed paths retry the same frames. Faces found by a retry are kept exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from engine.faces.detect import RETRY_90, RETRY_270, RETRY_BOTH, Detections

#: Frames with no upright face retried both ways before the video's orientation is decided.
PROBE_FRAMES = 4
#: Probe frames that must find faces turned the same way for the whole video to be taken as turned.
MIN_PROBE_HITS = 2
#: Once a video is decided upright, every this-many-th later frame with no face is still retried (both ways).
RECHECK_EVERY = 10
_FLAG = {90: RETRY_90, 270: RETRY_270}


@dataclass
class Orientation:
    """One video's orientation as its frames go through the detector (the rule is the module's docstring)."""

    turned: int | None = None  # None: undecided; 0: upright; 90 or 270: frames are retried that way only
    seen: int = 0  # frames with no upright face so far
    hits: dict[int, int] = field(default_factory=lambda: {90: 0, 270: 0})
    best: dict[int, float] = field(default_factory=lambda: {90: -1.0, 270: -1.0})

    def first(self, missing: torch.Tensor) -> torch.Tensor:
        """Retry flags (host int64 ``[n]``) for the next ``n`` frames of the video, given which have no face."""
        ordinal = self._ordinal(missing)
        if self.turned is None:
            return torch.where(missing & (ordinal < PROBE_FRAMES), RETRY_BOTH, 0)
        return self._decided(missing, ordinal)

    def then(self, missing: torch.Tensor, flags: torch.Tensor, won: dict[int, torch.Tensor]) -> torch.Tensor | None:
        """After :meth:`first`'s flags ran (``won[r]``: frames whose kept faces were found turned by ``r``): learn
        from the probe, and flag the frames after it once the probe decided the video (``None``: nothing more)."""
        ordinal = self._ordinal(missing)
        self.seen += int(missing.sum())
        if self.turned is not None:
            return None
        probe = flags == RETRY_BOTH
        for r in (90, 270):
            self.hits[r] += int((won[r] & probe).sum())
        if self.seen < PROBE_FRAMES:
            return None
        r = max((90, 270), key=lambda d: (self.hits[d], self.best[d]))
        self.turned = r if self.hits[r] >= MIN_PROBE_HITS else 0
        return self._decided(missing & (ordinal >= PROBE_FRAMES), ordinal)

    def note_scores(self, flags: torch.Tensor, scores: dict[int, torch.Tensor]) -> None:
        """Keep the probe's best score per rotation (the tie-break between two ways found equally often)."""
        probe = flags == RETRY_BOTH
        for r in (90, 270):
            if bool(probe.any()):
                self.best[r] = max(self.best[r], float(scores[r][probe].max()))

    def _ordinal(self, missing: torch.Tensor) -> torch.Tensor:
        return self.seen + torch.cumsum(missing.long(), 0) - 1

    def _decided(self, missing: torch.Tensor, ordinal: torch.Tensor) -> torch.Tensor:
        if self.turned:
            return missing.long() * _FLAG[self.turned]
        recheck = (ordinal >= PROBE_FRAMES) & ((ordinal - PROBE_FRAMES + 1) % RECHECK_EVERY == 0)
        return torch.where(missing & recheck, RETRY_BOTH, 0)


class OrientationPlan:
    """The detector's retry plan (``FaceDetector.detect_with_rotation``) for a model batch holding consecutive
    frames of one or more videos: ``pieces[j]`` frames of video ``j``, each with its own :class:`Orientation`.
    The masks cross to the host once per round (a few bytes per frame); the work per video is tensor ops."""

    def __init__(self, orientations: Sequence[Orientation], pieces: Sequence[int]) -> None:
        self.orientations = list(orientations)
        ends = torch.tensor(list(pieces), dtype=torch.int64).cumsum(0).tolist()
        self.bounds = list(zip([0, *ends[:-1]], ends, strict=True))
        self._flags = torch.zeros(0, dtype=torch.int64)

    def first(self, missing: torch.Tensor) -> torch.Tensor:
        m = missing.cpu()
        self._flags = torch.cat([o.first(m[a:b]) for o, (a, b) in zip(self.orientations, self.bounds, strict=True)])
        return self._flags

    def then(self, missing: torch.Tensor, flags: torch.Tensor, found: Detections) -> torch.Tensor | None:
        m, f, n = missing.cpu(), self._flags, len(missing)
        image, rotation, scores = found.image.cpu(), found.rotation.cpu(), found.scores.float().cpu()
        won = {r: torch.zeros(n, dtype=torch.bool).index_fill_(0, image[rotation == r], True) for r in (90, 270)}
        best = {
            r: torch.full((n,), -1.0).scatter_reduce(0, image[rotation == r], scores[rotation == r], "amax")
            for r in (90, 270)
        }
        more = []
        for o, (a, b) in zip(self.orientations, self.bounds, strict=True):
            o.note_scores(f[a:b], {r: best[r][a:b] for r in (90, 270)})
            got = o.then(m[a:b], f[a:b], {r: won[r][a:b] for r in (90, 270)})
            more.append(torch.zeros(b - a, dtype=torch.int64) if got is None else got)
        out = torch.cat(more) if more else torch.zeros(0, dtype=torch.int64)
        return out if bool(out.any()) else None


def retry_all_passes(missing_frames: int, frames: int) -> float:
    """Detector passes per frame when every frame with no upright face is retried both ways (the old rule)."""
    return (frames + 2 * missing_frames) / frames if frames else 0.0
