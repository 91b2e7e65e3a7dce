"""Shot (scene-change) detection on device: an HSV frame-difference score and a local, shard-safe cut rule.

Score. Each frame is compared with the one before it exactly as PySceneDetect's ``ContentDetector`` does, so our
scores equal its ``content_val`` (to float32 rounding): frames are downscaled so their longer side is about
``max_side`` pixels (OpenCV's INTER_LINEAR, reproduced bit for bit, as PySceneDetect's SceneManager does by
default), converted to 8-bit HSV with OpenCV's convention and integer arithmetic (H in [0, 180), S and V in
[0, 255]), and the score is the weighted mean over H, S and V of the mean absolute difference per pixel. All of it
is batched integer tensor code, so the same function runs on CPU or CUDA and both give the same numbers; only the
previous frame's small HSV image is carried from one batch to the next.

Decision. Frame i starts a new shot when

1. its score is at least ``min_score`` (high in absolute terms),
2. its score is at least ``min_ratio`` times the mean score of the ``window`` frames each side of it (high
   relative to its surroundings, as in PySceneDetect's ``AdaptiveDetector``: fast motion lifts the neighbours too),
3. no other frame passing 1 and 2 less than ``min_len`` frames away has a higher score (on a tie the earlier
   wins), so two cuts are always at least ``min_len`` frames apart. This is the minimum shot length as a local
   rule. PySceneDetect enforces it with a sequential chain instead (its ``FlashFilter``: a crossing too close to
   the previous one starts a merge that ends wherever the chain of crossings ends, possibly 100 frames later),
   which no bounded window can reproduce.

So frame i's decision reads the scores of frames i - (min_len - 1 + window) .. i + (min_len - 1 + window), and
each score reads its frame and the one before: ``ShotSettings.context`` = min_len + window frames each side. A
shard that decodes ``context`` extra frames each side of its range decides every frame of its range exactly as an
unsharded run would (the shard's first score, which has no previous frame and is 0, lies outside every window
that matters). The ends of a scored array are taken to be the ends of the stream: windows there are cut short and
use the neighbours that exist. Unlike PySceneDetect, no rule ties the first cut to the start of the video (a cut
5 frames in is kept).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from engine import media

#: OpenCV's fixed-point precision for 8-bit RGB→HSV (``hsv_shift`` in its colour code).
_HSV_SHIFT = 12
#: OpenCV's INTER_LINEAR weights are fixed point with 11 fractional bits.
_RESIZE_ONE = 1 << 11
#: Black bar: no pixel's V (max of R, G, B) above this. FFmpeg ``cropdetect``'s limit, on V: dark red is picture.
BORDER_LIMIT = 24
#: Source pixels (per channel) downscaled and converted at once on a CPU: keeps one step's int32 scratch tensors to
#: a few MiB whatever the batch and frame size (fresh large allocations cost more than the arithmetic there). A GPU
#: gets 32x more per step, so a batch takes a handful of kernel launches rather than hundreds.
_PIXEL_BUDGET = 1 << 21


@dataclass(frozen=True)
class ShotSettings:
    """How frames are scored and when a score is a cut. Defaults were checked on the two shared clips.

    On ``short_hamilton_clip.mp4`` the three cuts score 48-56 with ratios 6.3-20 and no other frame scores above
    20.1, so any setting near these finds exactly PySceneDetect's cuts. ``ryan-reynolds.mp4`` is a montage of face
    crops where many shots last 1-10 frames; the defaults there are a choice (see each field).
    """

    #: Absolute floor on the score (0..255 scale): ContentDetector's default threshold 27, so that our cuts are
    #: always frames PySceneDetect also sees as crossings; within-shot motion on Hamilton stays below 20.1.
    min_score: float = 27.0
    #: The score must be at least this many times the mean of its neighbours' scores. Clean cuts on the shared
    #: clips have ratios 2.67-20; the crossings this rejects there are the in- and out-differences of one-frame
    #: flashes (each the other's neighbour: ratios 1.59-1.82 for ryan 282/283 and 403/404) and a crop jump on the
    #: same face (ryan 1660: 1.51). Bursts of fast motion lift the neighbours too and fail the same way.
    min_ratio: float = 2.0
    #: Neighbours each side averaged for the ratio: AdaptiveDetector's default, and short enough that a cut
    #: 3 frames after another still leaves the first one a clean ratio.
    window: int = 2
    #: Minimum shot length in frames: of candidates fewer than this apart only the strongest is kept. 15 frames (half a
    #: second at 30 fps) is PySceneDetect's default ``min_scene_len``; it merges flash frames and the double hits
    #: of a single transition, at the price of dropping real sub-half-second shots (many in the ryan montage:
    #: lower it, down to 0, for montage-like footage).
    min_len: int = 15
    #: The longer side is downscaled to about this many pixels before the HSV conversion, as PySceneDetect's
    #: SceneManager does by default (256): ~5x fewer pixels on 640x360, same scores and cuts as PySceneDetect on
    #: both clips. 0 keeps full resolution.
    max_side: int = 256
    #: Weights of the hue, saturation and value differences (ContentDetector's defaults: all 1).
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: Score only the picture: black bars (edge rows and columns no pixel lights above :data:`BORDER_LIMIT`), the
    #: same in both frames of a pair, are left out of the mean; where they moved, the pair is scored whole. A film
    #: letterboxed in a phone-shaped frame otherwise scores its cuts a third as high. Off: PySceneDetect's score.
    crop_borders: bool = False

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1 (got {self.window})")
        if self.min_len < 0:
            raise ValueError(f"min_len must be >= 0 (got {self.min_len})")
        if self.max_side < 0:
            raise ValueError(f"max_side must be >= 0 (got {self.max_side})")
        if len(self.weights) != 3 or sum(abs(w) for w in self.weights) <= 0:
            raise ValueError(f"weights must be three numbers, not all 0 (got {self.weights})")

    @property
    def context(self) -> int:
        """Frames each side of frame i that its decision can depend on.

        The decision reads scores up to ``min_len - 1 + window`` positions away (the neighbours of the candidates
        it is compared with), and each score reads the frame before it: one more.
        """
        return max(self.min_len - 1, 0) + self.window + 1


# --- colour ------------------------------------------------------------------------------------------------------


@functools.cache
def _tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's division tables: ``round(255·4096 / v)`` for saturation and ``round(180·4096 / (6·d))`` for hue."""
    i = torch.arange(256, dtype=torch.float64, device=device)
    sdiv = torch.where(i > 0, torch.round((255 << _HSV_SHIFT) / i.clamp(min=1)), 0)
    hdiv = torch.where(i > 0, torch.round((180 << _HSV_SHIFT) / (6 * i.clamp(min=1))), 0)
    return sdiv.to(torch.int32), hdiv.to(torch.int32)


def rgb_to_hsv(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[N, 3, H, W]`` → uint8 HSV ``[N, 3, H, W]`` in OpenCV's 8-bit convention.

    H is degrees / 2 (0..179), S and V are 0..255, computed with OpenCV's integer arithmetic (division tables with
    12-bit fixed point, round half up) so that the result equals ``cv2.cvtColor(img, cv2.COLOR_RGB2HSV)`` exactly.
    Where two channels share the maximum, OpenCV's red > green > blue branch order is kept (all give the same hue).
    """
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected uint8 [N, 3, H, W] frames, got {frames.dtype} {tuple(frames.shape)}")
    sdiv, hdiv = _tables(frames.device)
    rgb = frames.to(torch.int16)  # every intermediate but the two fixed-point products fits 16 bits
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    vi, di = v.long(), diff.long()
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * sdiv[vi] + half) >> _HSV_SHIFT  # int16 * int32 table → int32
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hdiv[di] + half) >> _HSV_SHIFT  # arithmetic shift: floor, as OpenCV's on negative values
    h = torch.where(h < 0, h + 180, h)
    return torch.stack((h.to(torch.uint8), s.to(torch.uint8), v.to(torch.uint8)), dim=1)


def _target_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The processing size: PySceneDetect's ``compute_downscale_factor`` on the longer side, then ``round``."""
    longest = max(height, width)
    if max_side <= 0 or longest <= max_side:
        return height, width
    factor = longest / max_side
    return max(1, round(height / factor)), max(1, round(width / factor))


def _linear_taps(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Source indices and 11-bit weights of OpenCV's INTER_LINEAR along one axis (``cv::resize`` setup code).

    Output pixel d samples ``(d + 0.5) * n_in / n_out - 0.5`` (computed in float32, as OpenCV does), clamped to
    the edge pixels; the two weights are that position's fraction rounded to 1/2048.
    """
    d = torch.arange(n_out, dtype=torch.float64)
    pos = ((d + 0.5) * (1.0 / (n_out / n_in)) - 0.5).to(torch.float32)
    src = torch.floor(pos)
    frac = pos - src
    src = src.to(torch.int64)
    outside = (src < 0) | (src >= n_in - 1)
    frac = torch.where(outside, 0.0, frac)
    src = src.clamp(0, n_in - 1)
    w0 = torch.round((1 - frac) * _RESIZE_ONE).to(torch.int32)
    w1 = torch.round(frac * _RESIZE_ONE).to(torch.int32)
    return src.to(device), (src + 1).clamp(max=n_in - 1).to(device), w0.to(device), w1.to(device)


def downscale(frames: torch.Tensor, max_side: int) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` resized so the longer side is ~``max_side`` (unchanged when already smaller).

    Bit-exact with ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)``, which is what PySceneDetect's
    SceneManager applies to every frame by default: separable linear interpolation with OpenCV's 11-bit integer
    weights, the horizontal pass kept exact, the vertical one rounded as its vectorised code does. Integer
    arithmetic also makes CPU and CUDA agree bit for bit. Only the source rows and columns that are read are
    widened to int32.
    """
    height, width = frames.shape[-2:]
    size = _target_size(height, width, max_side)
    if size == (height, width):
        return frames
    y0, y1, b0, b1 = _linear_taps(height, size[0], frames.device)
    x0, x1, a0, a1 = _linear_taps(width, size[1], frames.device)
    # Both source rows of every output row, then columns made the outer axis: gathering whole rows of a
    # contiguous tensor is far cheaper than gathering along its last axis. The result comes back transposed.
    rows = frames.index_select(2, torch.cat((y0, y1))).transpose(2, 3).contiguous()  # [N, 3, W, 2h]
    exact = (
        rows.index_select(2, x0).to(torch.int32) * a0[:, None] + rows.index_select(2, x1).to(torch.int32) * a1[:, None]
    )  # [N, 3, w, 2h]: horizontal pass, exact (weights sum to 2048)
    # Vertical pass as OpenCV's vectorised code rounds it: 16-bit lanes, high halves of the products, then /4.
    h = size[0]
    out = (((exact[..., :h] >> 4) * b0) >> 16) + (((exact[..., h:] >> 4) * b1) >> 16)
    return ((out + 2) >> 2).clamp_(0, 255).to(torch.uint8).transpose(2, 3)


# --- scores ------------------------------------------------------------------------------------------------------


class ShotScorer:
    """Stateful scorer over a stream of consecutive frames.

    ``update`` takes the next frames of the stream (uint8 RGB ``[N, 3, H, W]``, any device) and returns their
    float32 ``[N]`` scores on the same device: score[k] compares frame k with the frame before it, the first of
    a batch with the last frame of the previous ``update``. The very first frame after construction or ``reset``
    scores 0. Only the previous frame's downscaled HSV image is kept between calls.
    """

    def __init__(self, settings: ShotSettings | None = None) -> None:
        self.settings = settings or ShotSettings()
        w = torch.tensor(self.settings.weights, dtype=torch.float64)
        self._weights = w / w.abs().sum()
        self._last: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the previous frame: the next frame scores 0 (a new stream, or a jump in the same one)."""
        self._last = None

    def update(self, frames: torch.Tensor) -> torch.Tensor:
        """Scores of the next ``frames`` of the stream (uint8 ``[N, 3, H, W]``): float32 ``[N]`` on their device."""
        if len(frames) == 0:
            return torch.zeros(0, dtype=torch.float32, device=frames.device)
        budget = _PIXEL_BUDGET if frames.device.type == "cpu" else 32 * _PIXEL_BUDGET
        step = max(1, budget // (frames.shape[-2] * frames.shape[-1]))
        parts = [
            rgb_to_hsv(downscale(frames[i : i + step], self.settings.max_side)) for i in range(0, len(frames), step)
        ]
        hsv = torch.cat(parts) if len(parts) > 1 else parts[0]
        last = self._last
        if last is not None and (last.shape != hsv.shape[1:] or last.device != hsv.device):
            raise ValueError(
                f"frame size or device changed within a stream ({tuple(last.shape)} on {last.device} → "
                f"{tuple(hsv.shape[1:])} on {hsv.device}); call reset() between streams"
            )
        prev = torch.cat((last[None] if last is not None else hsv[:1], hsv[:-1]))
        # Sums of absolute differences are exact integers, so CPU and CUDA agree to the last bit (int32 holds
        # them up to ~8 Mpixel frames, i.e. unless max_side=0 on 4K).
        pixels = hsv.shape[2] * hsv.shape[3]
        acc = torch.int32 if 255 * pixels < 2**31 else torch.int64
        diff = (hsv.to(torch.int16) - prev.to(torch.int16)).abs_()
        if self.settings.crop_borders:
            inside = picture_mask(hsv)
            before = torch.cat((inside[:1] if last is None else picture_mask(last[None]), inside[:-1]))
            inside |= (inside != before).any(dim=2).any(dim=1)[:, None, None]  # bars moved: score the whole frame
            sad = (diff * inside[:, None]).sum(dim=(2, 3), dtype=acc)
            area = inside.sum(dim=(1, 2)).clamp_(min=1).to(torch.float64)[:, None]
        else:
            sad, area = diff.sum(dim=(2, 3), dtype=acc), pixels
        scores = (sad.to(torch.float64) / area) @ self._weights.to(hsv.device)
        self._last = hsv[-1].clone()
        return scores.to(torch.float32)


def lit_span(lit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of a bool ``[N, L]``: the first lit position and one past the last (``(0, L)`` when none is lit)."""
    n = lit.shape[1]
    first = lit.to(torch.uint8).argmax(dim=1)
    end = n - lit.flip(1).to(torch.uint8).argmax(dim=1)
    none = ~lit.any(dim=1)
    return first.masked_fill(none, 0), end.masked_fill(none, n)


def picture_mask(hsv: torch.Tensor) -> torch.Tensor:
    """bool ``[N, H, W]``: each HSV frame's picture, the box inside its black bars (edge rows and columns where no
    pixel's V exceeds :data:`BORDER_LIMIT`); the whole frame when it is black all over."""
    lit = hsv[:, 2] > BORDER_LIMIT
    top, bottom = lit_span(lit.any(dim=2))
    left, right = lit_span(lit.any(dim=1))
    ys = torch.arange(hsv.shape[2], device=hsv.device)[None, :, None]
    xs = torch.arange(hsv.shape[3], device=hsv.device)[None, None, :]
    rows = (ys >= top[:, None, None]) & (ys < bottom[:, None, None])
    return rows & (xs >= left[:, None, None]) & (xs < right[:, None, None])


# --- decisions ---------------------------------------------------------------------------------------------------


def _windows(x: torch.Tensor, before: int, after: int, fill: float) -> torch.Tensor:
    """``[n, before + 1 + after]`` view: row i holds x[i - before .. i + after], ``fill`` past the ends."""
    return F.pad(x[None], (before, after), value=fill)[0].unfold(0, before + 1 + after, 1)


def find_cuts(
    scores: torch.Tensor, settings: ShotSettings | None = None, valid: tuple[int, int] | None = None
) -> torch.Tensor:
    """int64 positions (into ``scores``) of frames that start a new shot, on ``scores.device``, ascending.

    ``scores`` are consecutive frames' scores (``ShotScorer.update``). ``valid=(lo, hi)``: only positions in
    ``[lo, hi)`` may be returned; the rest is context. A position decides exactly as in an unsharded run when
    ``context`` positions each side of it are present (or the array ends where the stream ends).
    """
    s = settings or ShotSettings()
    n = int(scores.numel())
    lo, hi = (0, n) if valid is None else (max(0, valid[0]), min(n, valid[1]))
    if n == 0 or hi <= lo:
        return torch.zeros(0, dtype=torch.int64, device=scores.device)
    x = scores.to(torch.float64).flatten()
    w = s.window
    # Mean of the neighbours that exist, the frame itself excluded (float64: CPU and CUDA sum alike).
    total = _windows(x, w, w, 0.0).sum(dim=1) - x
    count = _windows(torch.ones_like(x), w, w, 0.0).sum(dim=1) - 1
    mean = total / count.clamp(min=1)
    candidate = (x >= s.min_score) & (x >= s.min_ratio * mean)
    key = torch.where(candidate, x, torch.full_like(x, -torch.inf))
    m = s.min_len - 1  # candidates this close or closer compete; min_len apart both stay
    if m > 0:
        earlier = _windows(key, m, 0, -torch.inf)[:, :m].amax(dim=1)
        later = _windows(key, 0, m, -torch.inf)[:, 1:].amax(dim=1)
        candidate &= (key > earlier) & (key >= later)  # strict on the left: of equal scores the earliest wins
    pos = candidate.nonzero().flatten()
    return pos[(pos >= lo) & (pos < hi)]


# --- films -------------------------------------------------------------------------------------------------------


#: Cuts between *sampled* frames (0.5 s apart) as the challenge tracker reads them: the picture's score only, at
#: least ``min_score``, no neighbour ratio (cuts every few samples hide each other) and no minimum shot length.
#: Measured against the true cuts of the labelled clips and challenges (``benchmarks/RESULTS.md``, 2026-12-07). A
#: false cut only splits a track, which the grouping joins again; a missed one can put two people in one track.
SAMPLED_SHOTS = ShotSettings(min_score=40.0, min_ratio=0.0, window=2, min_len=1, crop_borders=True)
#: Film labelling's and search's cuts: the default rule on the picture's score (a letterboxed repost cuts as the film).
PICTURE_SHOTS = ShotSettings(crop_borders=True)


@dataclass
class ShotCuts:
    """The cuts of a video (or of a frame range of it): each is the first frame of a new shot."""

    frames: torch.Tensor  # int64 [C], frame numbers of the first frame of each new shot
    times_s: torch.Tensor  # float64 [C], their pts
    scores: torch.Tensor  # float32 [C]
    settings: ShotSettings = field(default_factory=ShotSettings)

    def __len__(self) -> int:
        return int(self.frames.numel())

    def to_json(self) -> dict:
        """``{"cuts": [{"frame", "time_s", "score"}, ...], "settings": {...}}``: plain Python types."""
        cuts = [
            {"frame": int(f), "time_s": float(t), "score": float(c)}
            for f, t, c in zip(self.frames.tolist(), self.times_s.tolist(), self.scores.tolist(), strict=True)
        ]
        settings = asdict(self.settings)
        settings["weights"] = list(settings["weights"])
        settings["context"] = self.settings.context
        return {"cuts": cuts, "settings": settings}


def _score_batches(
    batches: Iterator[media.FrameBatch], settings: ShotSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores, frame numbers and pts of a stream of consecutive frame batches (frames themselves are dropped)."""
    scorer = ShotScorer(settings)
    scores, index, pts = [], [], []
    for batch in batches:
        scores.append(scorer.update(batch.frames))
        index.append(batch.index)
        pts.append(batch.pts_s)
    if not scores:
        return torch.zeros(0), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.float64)
    return torch.cat(scores), torch.cat(index), torch.cat(pts)


def scene_changes(
    path: str | Path,
    *,
    start: int = 0,
    stop: int | None = None,
    device: str = "cpu",
    settings: ShotSettings | None = None,
) -> ShotCuts:
    """Cuts of frames ``[start, stop)`` of a video; decodes ``max(0, start - context) .. stop + context``.

    With that margin every decision in ``[start, stop)`` sees the same scores as an unsharded run, so shards
    ``[a, b)``, ``[b, c)`` ... together give exactly the cuts of the whole video. Decoding runs on ``device``
    (NVDEC on CUDA); only the 1-D scores are kept, never the frames. Results are on the CPU.
    """
    s = settings or ShotSettings()
    first = max(0, start - s.context)
    last = None if stop is None else stop + s.context
    scores, index, pts = _score_batches(media.iter_frames(path, first, last, device), s)
    valid_hi = len(index) if stop is None else int(torch.searchsorted(index, torch.tensor(stop)))
    valid_lo = int(torch.searchsorted(index, torch.tensor(max(0, start))))
    pos = find_cuts(scores, s, valid=(valid_lo, valid_hi)).cpu()
    return ShotCuts(frames=index[pos], times_s=pts[pos], scores=scores.cpu()[pos], settings=s)


def shot_ids(frame_numbers: torch.Tensor, cut_frames: torch.Tensor) -> torch.Tensor:
    """Which shot each frame number belongs to: 0 before the first cut, k from the k-th cut (inclusive) on.

    ``cut_frames`` must be ascending (as ``ShotCuts.frames`` is). The result has ``frame_numbers``' shape and
    device, int64.
    """
    cuts = cut_frames.to(device=frame_numbers.device, dtype=torch.int64).contiguous()
    return torch.searchsorted(cuts, frame_numbers.to(torch.int64).contiguous(), right=True)
