"""The challenge TOML's optional tables, each parsed and validated once, when the challenge is parsed.

``[faces]`` → :class:`FaceSettings`, ``[align]`` → :class:`AlignSettings`, ``[logo]`` → :class:`LogoSettings` (or
``None``), ``[clustering]`` → :class:`ClusterSettings`. Every error names the key at fault, so a challenge author can
fix the TOML without reading the code. The stages (``engine.faces``, ``engine.prompts``, ``engine.logo``,
``engine.cluster``) import these types from here; nothing here imports a stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.config.errors import ConfigError

# ------------------------------------------------------------------------------------------------------- [faces]

FACE_KEYS = ("long_side", "threshold", "rotate", "jpeg_quality", "embedder", "crop_bars")
#: The face embedders a challenge may choose (``engine.faces.embedders`` says what each is and why ``hse`` is the
#: default).
EMBEDDER_NAMES = ("hse", "dlib")
DEFAULT_EMBEDDER = "hse"


@dataclass(frozen=True)
class FaceSettings:
    """The challenge's ``[faces]`` table: detection size and score threshold, whether frames are retried rotated,
    and the embedder. ``long_side`` resizes frames whose long side is larger (never upscales); 0 keeps the original
    size. ``crop_bars``: faces are looked for in the picture inside a letterbox's black bars, which then gets the
    whole ``long_side`` (``engine.faces.picture``)."""

    long_side: int = 640
    threshold: float = 0.5
    rotate: bool = True
    jpeg_quality: int = 90
    embedder: str = DEFAULT_EMBEDDER
    crop_bars: bool = True


def parse_faces(table: Any, challenge: str) -> FaceSettings:
    """Validate the ``[faces]`` table of the challenge named ``challenge``; errors name the key at fault."""
    where = f"challenge {challenge!r} [faces]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - set(FACE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    out = FaceSettings(**table)
    if not isinstance(out.long_side, int) or not (out.long_side == 0 or out.long_side >= 32):
        raise ConfigError(f"{where}: long_side must be 0 (original size) or an integer >= 32")
    if not isinstance(out.threshold, int | float) or not 0 < out.threshold < 1:
        raise ConfigError(f"{where}: threshold must be a number between 0 and 1")
    if not isinstance(out.jpeg_quality, int) or not 1 <= out.jpeg_quality <= 100:
        raise ConfigError(f"{where}: jpeg_quality must be an integer 1..100")
    if not isinstance(out.crop_bars, bool):
        raise ConfigError(f"{where}: crop_bars must be true or false")
    if out.embedder not in EMBEDDER_NAMES:
        raise ConfigError(f"{where}: embedder must be one of {', '.join(EMBEDDER_NAMES)} (got {out.embedder!r})")
    return out


# ------------------------------------------------------------------------------------------------------- [align]

#: Rate every track is decoded at. Both 44.1 and 48 kHz uploads resample to it, so templates and tracks agree.
ALIGN_RATE = 16_000

#: A prompt is present when its best NCC reaches this. It sits between what unrelated sound scores and what a real
#: copy under voice-over scores, both measured on the shared real media (the speech of ``audio/``, the Hamilton
#: song), never on a synthetic corpus, by ``benchmarks/test_align_threshold.py`` (2.5 s templates at 16 kHz):
#:
#: * unrelated: against a template of M_eff effectively independent samples, unrelated sound gives NCC values of
#:   standard deviation about 1/sqrt(M_eff); the best score of any song template anywhere in the speech was 0.084.
#:   Shorter templates score higher by chance: prompts should last 2 s or more for this default.
#: * real: a copy under uncorrelated voice-over scores 1 / sqrt(1 + 10 ** (-snr / 10)) in theory (0.71 at 0 dB);
#:   the weakest template at its true place in the song under 0 dB speech scored 0.572.
#:
#: 0.3 leaves a wide margin on both sides: as an SNR it accepts copies down to about -10 dB local voice-over.
ALIGN_THRESHOLD = 0.3


@dataclass(frozen=True)
class AlignSettings:
    """The challenge's ``[align]`` table: ``threshold`` (NCC in (0, 1)) and ``rate`` (Hz)."""

    threshold: float = ALIGN_THRESHOLD
    rate: int = ALIGN_RATE


def parse_align(table: Any, where: str) -> AlignSettings:
    """Validate the ``[align]`` table (``where``: the challenge's file, or its name); absent keys take the defaults."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: 'align' must be a table ([align] with threshold = ..., rate = ...)")
    unknown = sorted(set(table) - {"threshold", "rate"})
    if unknown:
        raise ConfigError(f"{where}: [align] has unknown key(s) {', '.join(unknown)}; allowed: threshold, rate")
    threshold = table.get("threshold", ALIGN_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise ConfigError(f"{where}: [align] threshold must be a number between 0 and 1 (got {threshold!r})")
    rate = table.get("rate", ALIGN_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 4_000 <= rate <= 96_000:
        raise ConfigError(f"{where}: [align] rate must be an integer number of Hz in 4000..96000 (got {rate!r})")
    return AlignSettings(float(threshold), rate)


# -------------------------------------------------------------------------------------------------------- [logo]

#: How a logo may be covered (``logo.method``); ``engine.media`` implements each one.
COVER_METHODS = ("blur", "inpaint")
LOGO_KEYS = ("box", "auto", "method")


@dataclass(frozen=True)
class LogoSettings:
    """The validated ``[logo]`` table: an explicit ``box`` (pixels or fractions) or ``auto`` detection."""

    box: tuple[float, float, float, float] | None = None
    auto: bool = False
    method: str = "blur"

    @property
    def fractional(self) -> bool:
        """Fractions of width/height when every value is <= 1, as the TOML documentation promises."""
        return self.box is not None and all(v <= 1 for v in self.box)


def parse_logo(table: Any) -> LogoSettings | None:
    """Validate the ``[logo]`` table: ``None`` when there is none (``table`` is ``None``) or it is switched off.

    Errors name the key at fault, so a challenge author can fix the TOML without reading this code.
    """
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError("'logo' must be a table: [logo] with box = [x, y, w, h] or auto = true")
    unknown = sorted(set(table) - set(LOGO_KEYS))
    if unknown:
        raise ConfigError(f"logo.{unknown[0]} is not a known key (use {', '.join(LOGO_KEYS)})")
    method = table.get("method", "blur")
    if method not in COVER_METHODS:
        raise ConfigError(f"logo.method must be one of {', '.join(COVER_METHODS)} (got {method!r})")
    auto = table.get("auto", False)
    if not isinstance(auto, bool):
        raise ConfigError(f"logo.auto must be true or false (got {auto!r})")
    box = table.get("box")
    if box is not None and auto:
        raise ConfigError("logo: give either logo.box or logo.auto = true, not both")
    if box is None:
        if "auto" not in table:
            raise ConfigError("logo: the table needs box = [x, y, w, h] or auto = true")
        return LogoSettings(auto=True, method=method) if auto else None
    if not isinstance(box, list) or len(box) != 4:
        raise ConfigError(f"logo.box must be a list of four numbers [x, y, w, h] (got {box!r})")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box):
        raise ConfigError(f"logo.box values must be numbers (got {box!r})")
    x, y, w, h = (float(v) for v in box)
    if x < 0 or y < 0:
        raise ConfigError(f"logo.box: x and y must be >= 0 (got {box!r})")
    if w <= 0 or h <= 0:
        raise ConfigError(f"logo.box: width and height must be > 0 (got {box!r})")
    settings = LogoSettings(box=(x, y, w, h), method=method)
    if settings.fractional and (x + w > 1 + 1e-9 or y + h > 1 + 1e-9):
        raise ConfigError(
            f"logo.box in fractions must stay inside the picture: x + w <= 1 and y + h <= 1 (got {box!r})"
        )
    return settings


# -------------------------------------------------------------------------------------------------- [clustering]

#: Each embedder's grouping thresholds are in ``engine.faces.embedders`` (measured in ``benchmarks/identity``).
#: Candidate pairs are track pairs whose faces' mean pairwise cosine is at least the pair threshold minus this
#: margin: the only pairs whose groups can ever reach the pair threshold are among them (an average of values under
#: it stays under it); the margin keeps near misses for the report (hse: 0.45, the floor of the old average linkage).
CLUSTER_FLOOR_MARGIN = 0.08
CLUSTER_KEYS = (
    "threshold", "pair_threshold", "floor", "min_quality", "confident_magnitude", "unreadable_magnitude",
    "manual_breaks", "manual_merges", "keep_apart",
)  # fmt: skip


@dataclass(frozen=True)
class ManualBreak:
    """Split ``track`` of ``video`` (a file name or a sha256 prefix) at ``at_s`` seconds before grouping."""

    video: str
    track: int
    at_s: float

    def matches(self, file_name: str, sha256: str) -> bool:
        return video_matches(self.video, file_name, sha256)


def video_matches(video: str, file_name: str, sha256: str) -> bool:
    """Whether a video named in the TOML (a file name, or a sha256 prefix of at least 6 characters, any case) is
    this one."""
    return video == file_name or (len(video) >= 6 and sha256.startswith(video.lower()))


@dataclass(frozen=True)
class ManualMerge:
    """Two tracks named by video (file name or sha256 prefix) and track (as the ``faces_with_intra_ind`` table
    numbers them): in ``manual_merges`` they are made one individual, in ``keep_apart`` never."""

    video_a: str
    track_a: int
    video_b: str
    track_b: int

    def ends(self) -> tuple[tuple[str, int], tuple[str, int]]:
        return (self.video_a, self.track_a), (self.video_b, self.track_b)


@dataclass(frozen=True)
class ClusterSettings:
    """The challenge's ``[clustering]`` table. ``threshold`` (cosine of two groups' mean directions),
    ``pair_threshold`` (mean cosine over their faces' pairs) and ``min_quality`` (faces under it do not vote) are
    ``None`` for the embedder's / the quality module's defaults; ``floor`` is the candidate-pair floor (``None``:
    the pair threshold minus :data:`CLUSTER_FLOOR_MARGIN`); ``confident_magnitude`` (``None``: the embedder's) is
    the descriptor magnitude from which a face votes whatever its quality (``engine.faces.quality.vote_floors``;
    a very large value turns that off), ``unreadable_magnitude`` (``None``: the embedder's) the one under which it
    never votes (0 turns that off)."""

    threshold: float | None = None
    floor: float | None = None
    min_quality: float | None = None
    manual_breaks: tuple[ManualBreak, ...] = ()
    manual_merges: tuple[ManualMerge, ...] = ()
    keep_apart: tuple[ManualMerge, ...] = ()
    pair_threshold: float | None = None
    confident_magnitude: float | None = None
    unreadable_magnitude: float | None = None

    def breaks_for(self, file_name: str, sha256: str) -> list[tuple[int, float]]:
        return [(b.track, b.at_s) for b in self.manual_breaks if b.matches(file_name, sha256)]

    def threshold_for(self, default: float) -> float:
        return default if self.threshold is None else self.threshold

    def pair_threshold_for(self, default: float) -> float:
        return default if self.pair_threshold is None else self.pair_threshold

    def floor_for(self, pair_threshold: float) -> float:
        return pair_threshold - CLUSTER_FLOOR_MARGIN if self.floor is None else min(self.floor, pair_threshold)


def _number(value: Any, key: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(f"[clustering] {key} must be a number between {lo:g} and {hi:g} (got {value!r})")
    return float(value)


def _entries(table: dict, key: str, example: str, build: Any) -> tuple:
    out = []
    for i, entry in enumerate(table.get(key, [])):
        try:
            out.append(build(entry))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"[clustering] {key}[{i}] must be {example} ({exc})") from exc
    return tuple(out)


def parse_cluster(table: Any) -> ClusterSettings:
    """Validate the ``[clustering]`` table; errors name the key at fault."""
    if not isinstance(table, dict):
        raise ConfigError("[clustering] must be a table")
    unknown = sorted(set(table) - set(CLUSTER_KEYS))
    if unknown:
        raise ConfigError(f"[clustering] has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(CLUSTER_KEYS)}")
    threshold = None if "threshold" not in table else _number(table["threshold"], "threshold", -1, 1)
    pair_threshold = (
        None if "pair_threshold" not in table else _number(table["pair_threshold"], "pair_threshold", -1, 1)
    )
    floor = None if "floor" not in table else _number(table["floor"], "floor", -1, 1)
    if floor is not None and pair_threshold is not None and floor > pair_threshold:
        raise ConfigError(f"[clustering] floor ({floor}) must not exceed pair_threshold ({pair_threshold})")
    min_quality = None if "min_quality" not in table else _number(table["min_quality"], "min_quality", 0, 1)
    confident, unreadable = (
        None if key not in table else _number(table[key], key, 0, 1e6)
        for key in ("confident_magnitude", "unreadable_magnitude")
    )
    breaks = _entries(
        table, "manual_breaks", '{ video = "<file name or sha256 prefix>", track = N, at_s = seconds }',
        lambda e: ManualBreak(str(e["video"]), int(e["track"]), float(e["at_s"])),
    )  # fmt: skip
    pair = '{ video_a = "<file or sha256 prefix>", track_a = N, video_b = "...", track_b = M }'
    track_pair = lambda e: ManualMerge(str(e["video_a"]), int(e["track_a"]), str(e["video_b"]), int(e["track_b"]))  # noqa: E731
    merges = _entries(table, "manual_merges", pair, track_pair)
    apart = _entries(table, "keep_apart", pair, track_pair)
    return ClusterSettings(threshold, floor, min_quality, breaks, merges, apart, pair_threshold, confident, unreadable)
