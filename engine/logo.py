"""Platform logos: the challenge's ``[logo]`` table (``Challenge.logo``), a static logo found by itself, covered.

A re-posted social video carries the platform's watermark in every frame; stored as is, it would leak into
face crops and near-duplicate checks. The challenge either names the box (``box = [x, y, w, h]`` in pixels of
the displayed picture, or in fractions of its width and height when all four are <= 1) or asks for
``auto = true``. Detection works on the frames the engine samples anyway: a logo is the part of the picture
that keeps *sharp edges in the temporal mean* while everything around it changes, so the mean image's edge
contrast is compared with each pixel's temporal standard deviation. Covering re-encodes the video through
``engine.media``, the only package that opens codecs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from engine import media
from engine.config import ConfigError, LogoSettings
from engine.media.encode import COVER_PRESET

#: Luma weights (ITU-R BT.601) of R, G and B.
LUMA = (0.299, 0.587, 0.114)
#: At least this many sampled frames: with fewer, "static" cannot be told from "one moment".
MIN_FRAMES = 3
#: Pictures whose short side is at least twice this are analysed shrunk by an integer factor towards it.
WORK_SHORT_SIDE = 540
#: A pixel whose temporal std (grey levels) reaches this counts as changing, for the "rest moves" check.
DYNAMIC_STD = 12.0
#: Below this fraction of changing pixels the video is (nearly) still and a logo cannot be told from the scene.
MIN_DYNAMIC_FRACTION = 0.15
#: A logo pixel's edge contrast in the mean image (grey levels) must reach this ...
MIN_CONTRAST = 12.0
#: ... and this many times its own temporal std: a sharp edge that does not flicker.
CONTRAST_TO_STD = 2.0
#: Rows or columns with more candidates than this fraction are letterbox/pillarbox borders, not logos.
BORDER_LINE_FRACTION = 0.5
#: Components are found on a grid of at most this many cells (3 x 3 pixels at 640 x 360): coarse enough for
#: label propagation to converge in a few dozen steps, and under PyTorch's parallel grain size, so those small
#: steps run without thread hand-offs (which cost far more than the work on a busy 2-core machine).
MAX_GRID_CELLS = 30_000
#: Closing radius on that grid, in cells: joins a logo's letters and strokes into one component.
CLOSE_RADIUS = 1
#: A logo covers at most this fraction of the picture and at most this fraction of its width or height.
MAX_AREA_FRACTION = 0.10
MAX_SIDE_FRACTION = 0.6
MAX_ASPECT = 10.0
#: Fraction of the component's box that must be edge pixels: text and graphics are dense, stray edges are not.
MIN_DENSITY = 0.1
#: The found box is padded by this fraction of its width (left and right) and height (top and bottom), >= 2 px.
PAD_FRACTION = 0.1


@dataclass
class LogoBox:
    """A rectangle of the displayed picture in whole pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


def resolve_box(settings: LogoSettings, width: int, height: int) -> LogoBox:
    """The explicit ``logo.box`` in pixels of a ``width`` x ``height`` picture, clipped to it.

    Fractions are scaled by edge (left and right edges rounded separately), so a box given as fractions lands
    on the same part of the picture whatever the video's resolution.
    """
    if settings.box is None:
        raise ValueError("these logo settings have no explicit box (auto = true): use find_logo")
    x, y, w, h = settings.box
    if settings.fractional:
        x, w = x * width, w * width
        y, h = y * height, h * height
    x0, y0 = min(max(round(x), 0), width), min(max(round(y), 0), height)
    x1, y1 = min(max(round(x + w), 0), width), min(max(round(y + h), 0), height)
    if x1 <= x0 or y1 <= y0:
        raise ConfigError(f"logo.box {list(settings.box)} is empty once clipped to the {width}x{height} picture")
    return LogoBox(x0, y0, x1 - x0, y1 - y0)


def _temporal_stats(frames: torch.Tensor, scale: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel temporal mean and std of luma, float32 ``[H // scale, W // scale]``, one frame at a time.

    Luma is three in-place multiply-adds per frame (one float plane at a time: a whole chunk of float frames was
    three times slower, bound by memory traffic), averaged over ``scale`` x ``scale`` blocks for large pictures.
    Values are taken relative to the first frame so the running sums of squares stay small (no cancellation).
    """
    n = frames.shape[0]

    def luma(frame: torch.Tensor) -> torch.Tensor:
        y = frame[0].float().mul_(LUMA[0])
        y.add_(frame[1].float(), alpha=LUMA[1]).add_(frame[2].float(), alpha=LUMA[2])
        return F.avg_pool2d(y[None], scale, scale)[0] if scale > 1 else y

    ref = luma(frames[0])
    s1 = torch.zeros_like(ref)
    s2 = torch.zeros_like(ref)
    for i in range(1, n):
        d = luma(frames[i]).sub_(ref)
        s1 += d
        s2.addcmul_(d, d)
    mean_d = s1 / n
    std = (s2 / n - mean_d * mean_d).clamp_min(0).sqrt()
    return ref + mean_d, std


def _edge_contrast(image: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of ``[H, W]``, scaled so a step between two grey levels reads as their difference."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=image.device)
    kernels = torch.stack([kx, kx.T])[:, None] / 4
    padded = F.pad(image[None, None], (1, 1, 1, 1), mode="replicate")
    g = F.conv2d(padded, kernels)[0]
    return g.pow(2).sum(0).sqrt()


def _label_components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected components of a boolean ``[h, w]`` grid: each cell gets its component's largest index + 1.

    Max-pool label propagation: every step spreads the largest label one cell; it converges after the longest
    path inside a component, which is short on the coarse grid this runs on.
    """
    gh, gw = mask.shape
    m = mask.float()
    labels = torch.arange(1, gh * gw + 1, device=mask.device, dtype=torch.float32).view(gh, gw) * m
    for step in range(4 * (gh + gw)):
        grown = F.max_pool2d(labels[None, None], 3, 1, 1)[0, 0] * m
        if step % 8 == 7 and torch.equal(grown, labels):
            break
        labels = grown
    return labels


def _position_prior(cx: torch.Tensor, cy: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """1 in a corner, ~0.7 at the middle of an edge, 0.25 at the centre: logos sit near corners and edges."""
    dx = torch.minimum(cx, width - cx) / (width / 2)
    dy = torch.minimum(cy, height - cy) / (height / 2)
    return 1 - 0.5 * torch.minimum(dx, dy) - 0.25 * torch.maximum(dx, dy)


def find_logo(frames: torch.Tensor) -> LogoBox | None:
    """The box of a static logo in uint8 ``[N, 3, H, W]`` sampled frames (CPU or CUDA), or ``None``.

    Candidates are pixels whose temporal-mean image has a sharp edge (contrast >= ``MIN_CONTRAST`` and >=
    ``CONTRAST_TO_STD`` x their temporal std): moving content blurs out of the mean and flickers, a burnt-in
    logo does neither. Letterbox bars are static but flat inside, and their boundary lines are dropped as
    frame-wide rows/columns. Candidates are joined by a morphological closing on a coarse grid, split into
    connected components, and each component that is small (<= ``MAX_AREA_FRACTION`` of the picture), not a
    thin line, and dense in edges is scored by edge density x sqrt(edge pixels) x a corner/edge position prior.
    ``None`` when the picture hardly changes at all (then everything is "static") or nothing qualifies.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [N, 3, H, W] (got shape {tuple(frames.shape)})")
    n, _, height, width = frames.shape
    if n < MIN_FRAMES or height < 16 or width < 16:
        return None
    # Large pictures are analysed at a reduced size: a logo stays tens of pixels tall there, and the work drops.
    scale = max(1, min(height, width) // WORK_SHORT_SIDE)
    mean, std = _temporal_stats(frames, scale)
    full_height, full_width = height, width
    height, width = mean.shape
    if (std >= DYNAMIC_STD).float().mean().item() < MIN_DYNAMIC_FRACTION:
        return None
    contrast = _edge_contrast(mean)
    cand = contrast >= (CONTRAST_TO_STD * std).clamp_min(MIN_CONTRAST)
    # A bar's boundary line is 2-3 pixels thick (the Sobel kernel's reach) but only its middle row spans the
    # frame where the picture beside it is dark: drop the rows/columns next to a frame-wide one too.
    rows = (cand.float().mean(1) > BORDER_LINE_FRACTION).float()[None, None]
    cols = (cand.float().mean(0) > BORDER_LINE_FRACTION).float()[None, None]
    rows = F.max_pool1d(rows, 5, 1, 2)[0, 0] > 0
    cols = F.max_pool1d(cols, 5, 1, 2)[0, 0] > 0
    cand &= ~(rows[:, None] | cols[None, :])
    if not cand.any():
        return None

    cell = max(1, math.ceil(math.sqrt(height * width / MAX_GRID_CELLS)))
    grid = F.max_pool2d(cand[None, None].float(), cell, cell, ceil_mode=True)
    k = 2 * CLOSE_RADIUS + 1
    grid = F.max_pool2d(grid, k, 1, CLOSE_RADIUS)
    grid = -F.max_pool2d(-grid, k, 1, CLOSE_RADIUS)
    labels = _label_components(grid[0, 0] > 0)
    ids, inverse = torch.unique(labels, return_inverse=True)

    # Tight pixel boxes and edge-pixel counts of every component, by scatter over the candidate pixels.
    ys, xs = torch.nonzero(cand, as_tuple=True)
    owner = inverse[ys // cell, xs // cell]
    count = torch.bincount(owner, minlength=len(ids)).float()
    big, small = torch.iinfo(torch.int64).max, -1
    x0 = torch.full((len(ids),), big, device=frames.device).scatter_reduce(0, owner, xs, "amin")
    y0 = torch.full((len(ids),), big, device=frames.device).scatter_reduce(0, owner, ys, "amin")
    x1 = torch.full((len(ids),), small, device=frames.device).scatter_reduce(0, owner, xs, "amax") + 1
    y1 = torch.full((len(ids),), small, device=frames.device).scatter_reduce(0, owner, ys, "amax") + 1
    bw, bh = (x1 - x0).clamp_min(1).float(), (y1 - y0).clamp_min(1).float()
    density = count / (bw * bh)
    min_side = max(4.0, 0.015 * min(height, width))
    valid = (
        (ids > 0)
        & (count >= max(16.0, 2e-4 * height * width))
        & (bw * bh <= MAX_AREA_FRACTION * height * width)
        & (bw <= MAX_SIDE_FRACTION * width)
        & (bh <= MAX_SIDE_FRACTION * height)
        & (torch.minimum(bw, bh) >= min_side)
        & (torch.maximum(bw, bh) <= MAX_ASPECT * torch.minimum(bw, bh))
        & (density >= MIN_DENSITY)
    )
    if not valid.any():
        return None
    prior = _position_prior((x0 + x1).float() / 2, (y0 + y1).float() / 2, width, height)
    score = torch.where(valid, prior * density * count.sqrt(), torch.full_like(density, -1.0))
    best = int(score.argmax())
    bx0, by0, bx1, by1 = (int(v[best]) * scale for v in (x0, y0, x1, y1))
    pad_x, pad_y = (max(2, round(PAD_FRACTION * side)) for side in (bx1 - bx0, by1 - by0))
    bx0, by0 = max(0, bx0 - pad_x), max(0, by0 - pad_y)
    bx1, by1 = min(full_width, bx1 + pad_x), min(full_height, by1 + pad_y)
    return LogoBox(bx0, by0, bx1 - bx0, by1 - by0)


def sampled_frames(path: str | Path, interval: float = 0.5, device: str = "cpu") -> torch.Tensor:
    """All frames the engine samples from ``path`` as one uint8 ``[N, 3, H, W]`` tensor (display-rotated)."""
    return torch.cat([batch.frames for batch in media.sample_frames(path, interval, device)])


def logo_box(settings: LogoSettings, width: int, height: int, frames: torch.Tensor | None) -> LogoBox | None:
    """The box to cover: the explicit one resolved to the picture's size, or one found in the sampled ``frames``
    (the pipeline passes the frames it has already decoded, so nothing is decoded twice)."""
    if settings.box is not None:
        return resolve_box(settings, width, height)
    return find_logo(frames) if frames is not None else None


def locate_logo(settings: LogoSettings, path: str | Path, interval: float = 0.5, device: str = "cpu") -> LogoBox | None:
    """:func:`logo_box` for a video file: probes it, and samples its frames only when the box must be found."""
    video = media.probe(path).video
    frames = sampled_frames(path, interval, device) if settings.box is None else None
    return logo_box(settings, video.width, video.height, frames)


def covered_name(sha: str, box: LogoBox, method: str = "blur") -> str:
    """The file name of a video's covered copy: everything the encode depends on (the video's hash, the box, the
    method, the encoder's preset), so a copy left by an earlier run is reused only when it is the same cover."""
    return f"{sha}-{box.x}_{box.y}_{box.w}_{box.h}-{method}-{COVER_PRESET}.mp4"


def cover_logo(src: str | Path, dst: str | Path, box: LogoBox, method: str = "blur", strength: int = 3) -> Path:
    """Write ``dst``: ``src`` re-encoded (H.264, same size and frame timing, audio copied) with ``box`` covered.

    Raises ``ValueError`` for a box outside the picture or an unknown method, ``DecodeError`` when FFmpeg fails.
    ``box`` is in the displayed picture's pixels, as ``find_logo`` and ``resolve_box`` return it; FFmpeg
    applies the rotation before its filters, so the same pixels are covered. ``method`` is ``"blur"`` (a strong
    box blur of just that region) or ``"inpaint"`` (FFmpeg's ``delogo`` fills it from its surroundings).
    """
    if box.w <= 0 or box.h <= 0:
        raise ValueError(f"cannot cover an empty box {box}")
    return media.encode_with_region_covered(src, dst, box.x, box.y, box.w, box.h, method, strength)
