"""The picture inside a video's black bars: where the faces stage looks for faces.

A film reposted on a phone is letterboxed: a 16:9 picture centred in a 9:16 frame, two thirds of it black. The
detector resizes the *frame* to its long side (640), so the picture reaches it at 360x202 and small faces are lost
(the talk-show challenge of ``benchmarks/identity``: 127 faces found in its letterboxed videos, 154 in the clip
itself). Detecting in the picture alone gives it 640x360 for the same network cost: the bars are cut off, not
scaled.

Per video, :class:`Picture` decides once, from the first decoded chunk with anything lit: the bars are the edge rows
and columns where no pixel of any frame of the chunk exceeds :data:`BAR_LIMIT`, cut as a letterbox or a pillarbox,
the same off both opposite sides (the smaller of the two: a dark sky or floor at one side only is picture, and
an off-centre picture keeps its lit caption), and only when they are at least :data:`MIN_BARS` of the frame. Every
later chunk is checked: the first whose bars light up (a title over the bars, a picture that changes shape) ends
the cropping for the rest of the video, which is then searched whole. Decisions depend only on the video's own
decoded chunks, never on which other videos share a model batch. Boxes, landmarks and everything measured from them
are in the frame's pixels as before; only the detector sees the crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.shots import BORDER_LIMIT, lit_span

#: A bar pixel is at most this bright in every channel: the shot scorer's limit (FFmpeg ``cropdetect``'s, 24 of 255).
BAR_LIMIT = BORDER_LIMIT
#: Bars smaller than this share of the frame are not worth a crop (and may be a dark edge of the picture).
MIN_BARS = 0.1


@dataclass(frozen=True)
class Box:
    """The picture: rows ``top .. bottom - 1``, columns ``left .. right - 1`` of the frame."""

    top: int
    bottom: int
    left: int
    right: int

    def crop(self, frames: torch.Tensor) -> torch.Tensor:
        """The picture of frames ``[N, C, H, W]`` (a view)."""
        return frames[..., self.top : self.bottom, self.left : self.right]


def _bars(lit: torch.Tensor) -> int:
    """How many positions at *each* end of a 1-D mask are unlit: the smaller of the two ends' runs (an unlit run
    at one end only is picture, a dark sky or floor), the whole length when nothing is lit."""
    if not bool(lit.any()):
        return len(lit)
    first, end = lit_span(lit[None])
    return min(int(first), len(lit) - int(end))


def find_bars(frames: torch.Tensor, limit: int = BAR_LIMIT) -> Box | None:
    """The picture inside the black bars common to every frame of ``frames`` (uint8 ``[N, 3, H, W]``): as many
    rows (columns) off the top and the bottom (left and right) as are unlit at *both* ends, so no lit pixel is ever
    cut off. ``None`` (no crop) when the bars are under :data:`MIN_BARS` of the frame or nothing is lit."""
    height, width = frames.shape[-2:]
    lit = frames.amax(dim=(0, 1)) > limit  # [H, W]: lit in some frame, some channel
    y, x = _bars(lit.any(dim=1)), _bars(lit.any(dim=0))
    if 2 * y >= height or 2 * x >= width:
        return None
    box = Box(y, height - y, x, width - x)
    if (box.bottom - box.top) * (box.right - box.left) > (1 - MIN_BARS) * height * width:
        return None
    return box


class Picture:
    """One video's picture box, chunk by chunk (see the module): ``update(frames)`` gives the box to search the
    chunk's frames in, or ``None`` for the whole frame."""

    def __init__(self) -> None:
        self.box: Box | None = None
        self.decided = False

    def update(self, frames: torch.Tensor) -> Box | None:
        """The box for this chunk of the video's frames (uint8 ``[N, 3, H, W]``, the next in decode order), deciding
        the video's bars on its first lit chunk and giving them up for good once a chunk lights them."""
        if not self.decided:
            if bool((frames > BAR_LIMIT).any()):  # a chunk that is black all over decides nothing
                self.box, self.decided = find_bars(frames), True
            return self.box
        if self.box is not None and _bars_lit(frames, self.box):
            self.box = None
        return self.box


def _bars_lit(frames: torch.Tensor, box: Box) -> bool:
    """Whether any pixel outside ``box`` is brighter than a bar may be."""
    outside = torch.ones(frames.shape[-2:], dtype=torch.bool, device=frames.device)
    outside[box.top : box.bottom, box.left : box.right] = False
    return bool((frames.amax(dim=(0, 1))[outside] > BAR_LIMIT).any())
