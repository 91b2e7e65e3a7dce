"""The contracts between stages: small dataclasses of tensors, one row of a table per element.

A frame goes sources → media → faces → track → cluster → dedup → store; what one stage hands the next is one of
these, never a string-keyed dict or an ORM row. Per-face data is a :class:`Faces` (every field ``[F]``-long, in
step), a video's tracks a :class:`Tracks`, the challenge's grouping :class:`Individuals`. Their generic helpers
(``select``, ``cat``, ``to``, ``state``) walk the dataclass fields, so a new per-face field is one line here and
flows through batching, slicing, film shards and rows without another change. ``engine/pipeline/rows.py`` is the one
place that turns them into table rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import torch

#: Progress of long work: ``tick(what, step, total)`` advances the count of ``what`` ("frames", "shards", "videos",
#: "crops", "individuals") by ``step``, out of ``total`` when it is known. The CLI draws it as bars; the engine never
#: prints it.
Tick = Callable[[str, int, "int | None"], None]

T = TypeVar("T", bound="_TensorRows")

#: The columns of ``Faces.quality``, in order (``engine.faces.quality`` computes them; the ``faces`` table stores
#: each; docs/quality.md says what they mean). The last, ``quality`` in [0, 1], combines the others and the score.
QUALITY_COLUMNS = (
    "interocular_px", "sharpness", "yaw", "pitch", "roll", "exposure", "clipped", "magnitude", "quality",
)  # fmt: skip


class _TensorRows:
    """Shared behaviour of the contracts whose tensor fields are all ``[N]``-long along their first axis."""

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: v for f in fields(self) if isinstance(v := getattr(self, f.name), torch.Tensor)}  # type: ignore[arg-type]

    def __len__(self) -> int:
        first = next(iter(self._tensors().values()), None)
        return 0 if first is None else len(first)

    def select(self: T, index: torch.Tensor | slice) -> T:
        """The elements picked by an index, a boolean mask or a slice, every tensor field kept in step (a slice
        gives views)."""
        return replace(self, **{k: v[index] for k, v in self._tensors().items()})

    def to(self: T, device: str | torch.device) -> T:
        return replace(self, **{k: v.to(device) for k, v in self._tensors().items()})

    def state(self) -> dict[str, torch.Tensor]:
        """The tensor fields by name, for ``torch.save`` (loadable with ``weights_only=True``)."""
        return self._tensors()


@dataclass
class Faces(_TensorRows):
    """Faces of one or more frames, grouped by frame in frame order, on one device.

    ``frame_index`` is the frame's number (a sample number in a challenge run, a frame number in film scans),
    ``face_index`` the face's rank within its frame, ``rotation`` 0 or the retry rotation that found it.
    ``phash`` (PHash of the aligned chip, int64) and ``crops`` (its JPEG) exist only when crops were made;
    ``quality`` ``[F, len(QUALITY_COLUMNS)]`` when the faces stage measured it.
    """

    frame_index: torch.Tensor  # int64 [F]
    face_index: torch.Tensor  # int64 [F]
    pts_s: torch.Tensor  # float64 [F]
    boxes: torch.Tensor  # float32 [F, 4] x1, y1, x2, y2 in frame pixels
    scores: torch.Tensor  # float32 [F]
    landmarks: torch.Tensor  # float32 [F, 10]
    rotation: torch.Tensor  # int64 [F]
    embedding: torch.Tensor  # float32 [F, D]
    phash: torch.Tensor | None = None  # int64 [F]
    crops: list[bytes] = field(default_factory=list)
    quality: torch.Tensor | None = None  # float32 [F, len(QUALITY_COLUMNS)]

    @property
    def overall_quality(self) -> torch.Tensor:
        """``[F]`` quality in [0, 1] (1 where it was not measured)."""
        if self.quality is None:
            return torch.ones(len(self), device=self.scores.device)
        return self.quality[:, QUALITY_COLUMNS.index("quality")]

    def select(self, index: torch.Tensor | slice) -> Faces:
        out = super().select(index)
        if self.crops:
            picked = range(len(self))[index] if isinstance(index, slice) else _positions(index, len(self))
            out.crops = [self.crops[i] for i in picked]
        return out

    @staticmethod
    def empty(dim: int = 128) -> Faces:
        long, z = torch.int64, torch.zeros
        return Faces(
            z(0, dtype=long), z(0, dtype=long), z(0, dtype=torch.float64), z(0, 4), z(0), z(0, 10), z(0, dtype=long),
            z(0, dim),
        )  # fmt: skip

    @staticmethod
    def cat(parts: Sequence[Faces]) -> Faces:
        """One :class:`Faces` from several (in order); a field is kept only where every part has it."""
        if not parts:
            return Faces.empty()
        values: dict[str, Any] = {}
        for f in fields(Faces):
            got = [getattr(p, f.name) for p in parts]
            if f.name == "crops":
                values[f.name] = [c for part in got for c in part]
            else:
                values[f.name] = None if any(g is None for g in got) else torch.cat(got)
        return Faces(**values)

    @staticmethod
    def from_state(state: dict[str, torch.Tensor]) -> Faces:
        """The inverse of :meth:`state` (crops are not saved)."""
        names = {f.name for f in fields(Faces)} - {"crops"}
        return Faces(**{k: v for k, v in state.items() if k in names})


def _positions(index: torch.Tensor, n: int) -> list[int]:
    if index.dtype == torch.bool:
        return index.nonzero().flatten().tolist()
    return [i % n for i in index.tolist()]


@dataclass
class Frames(_TensorRows):
    """The sampled frames of one video (one ``frames`` row each): number, target time, real pts, size, and
    ``change``: how much the picture changed since the previous sampled frame (``engine.shots``' content score,
    0..255; 0 for the first), from which the tracker finds shot cuts."""

    index: torch.Tensor  # int64 [N]
    target_s: torch.Tensor  # float64 [N]
    pts_s: torch.Tensor  # float64 [N]
    width: torch.Tensor  # int64 [N]
    height: torch.Tensor  # int64 [N]
    change: torch.Tensor | None = None  # float32 [N]

    @staticmethod
    def empty() -> Frames:
        long, f64 = torch.int64, torch.float64
        z = torch.zeros
        return Frames(z(0, dtype=long), z(0, dtype=f64), z(0, dtype=f64), z(0, dtype=long), z(0, dtype=long), z(0))

    @staticmethod
    def cat(parts: Sequence[Frames]) -> Frames:
        if not parts:
            return Frames.empty()
        out: dict[str, Any] = {}
        for f in fields(Frames):
            got = [getattr(p, f.name) for p in parts]
            out[f.name] = None if any(g is None for g in got) else torch.cat(got)
        return Frames(**out)


@dataclass
class VideoFaces:
    """What the faces stage found in one video, on the host: its sampled frames, their faces, the sampled frames
    with no face, and on request each frame's JPEG and every sampled frame (uint8, e.g. to look for a logo)."""

    frames: Frames = field(default_factory=Frames.empty)
    faces: Faces = field(default_factory=Faces.empty)
    noface_frames: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    frame_jpegs: dict[int, bytes] = field(default_factory=dict)
    sampled: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.faces)


@dataclass
class Tracks:
    """The tracks of one video's faces: ``of_face[i]`` is face ``i``'s track, dense ids from 0."""

    of_face: torch.Tensor  # int64 [F]

    @property
    def count(self) -> int:
        return 0 if self.of_face.numel() == 0 else int(self.of_face.max()) + 1


@dataclass
class StoredFaces(_TensorRows):
    """A challenge's stored faces as the cross-video step reads them: ``video`` indexes ``videos`` (sha256; file
    names in ``names``), ``track`` is the face's track within its video, ``phash`` 0 where ``has_phash`` is false,
    ``quality`` in [0, 1] and ``magnitude`` (``engine.faces.quality``)."""

    face_id: torch.Tensor  # int64 [F]
    video: torch.Tensor  # int64 [F]
    track: torch.Tensor  # int64 [F]
    frame_index: torch.Tensor  # int64 [F]
    boxes: torch.Tensor  # float32 [F, 4]
    embedding: torch.Tensor  # float32 [F, D]
    phash: torch.Tensor  # int64 [F]
    has_phash: torch.Tensor  # bool [F]
    quality: torch.Tensor  # float32 [F]
    magnitude: torch.Tensor  # float32 [F]: the embedder's descriptor magnitude, NaN where it was not stored
    videos: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


@dataclass
class TrackPairs(_TensorRows):
    """Sparse similarities between tracks: ``a[i] < b[i]`` index a track list, ``cosine[i]`` is the cosine
    between their quality-weighted mean directions over their voting faces; the pairs are those whose faces' mean
    pairwise cosine reaches the candidate floor (``engine.cluster.similar_pairs``)."""

    a: torch.Tensor  # int64 [P]
    b: torch.Tensor  # int64 [P]
    cosine: torch.Tensor  # float32 [P]


@dataclass
class Individuals:
    """The challenge's people: ``tracks`` names each track (video sha256, track in the video), ``of_track`` gives
    it its individual (dense ids from 0; -1: none, the track had no face good enough to vote), ``of_face`` each
    face; ``duplicate`` marks the faces whose crop repeats an earlier one of the same individual (and faces with no
    individual); ``pairs`` are the candidate track pairs the grouping used; ``voted`` the faces that voted."""

    tracks: list[tuple[str, int]]
    of_track: torch.Tensor  # int64 [T]
    of_face: torch.Tensor  # int64 [F]
    duplicate: torch.Tensor  # bool [F]
    pairs: TrackPairs
    voted: torch.Tensor  # bool [F]

    @property
    def count(self) -> int:
        return 0 if self.of_track.numel() == 0 else int(self.of_track.max()) + 1
