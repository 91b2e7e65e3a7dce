"""A film shard's results on disk, and how shards become one film: loading, stitching trajectories across
boundaries, the cuts each shard owns, and frame times.

A shard saves its faces (:class:`engine.types.Faces`, without crops), their shard-local tracks
(:class:`engine.types.Tracks`), its trusted cuts with their scores, and the pts of every frame it decoded, as
``faces.pt`` (tensors only, loaded with ``weights_only=True``) beside its ``shard.json`` summary, and the seed's
crop of every face it owns (``engine.apps.film_crops``) as ``crops/<frame>-<rank>.jpeg``.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.types import Faces, Tracks

#: Version of the labelling files (``docs/film.md``). 2: trajectories under the floors are marked and unclustered.
FORMAT_VERSION = 2


#: A shard's folder of face crops; one file per owned face, named by :func:`crop_name`.
CROPS_DIR = "crops"


def crop_name(frame: int, rank: int) -> str:
    """The file name of the crop of the face of rank ``rank`` in frame ``frame``, inside a shard's ``CROPS_DIR``."""
    return f"{frame}-{rank}.jpeg"


class LabelError(ValueError):
    """Bad labelling input: shard numbers, incomplete or mismatched shard folders, an unusable gallery."""


@dataclass
class ShardResult:
    """What one shard found over the frames it decoded (``first`` is the first of them)."""

    faces: Faces
    tracks: Tracks
    cuts: torch.Tensor  # int64 [C] frame numbers that start a shot, where the shard had full context
    cut_scores: torch.Tensor  # float32 [C]
    frame_pts: torch.Tensor  # float64 [N] pts of frames first .. first + N - 1
    first: int

    def save(self, folder: Path) -> None:
        """``folder/faces.pt``, written whole or not at all."""
        payload = {
            "faces": self.faces.state(),
            "tracks": self.tracks.of_face,
            "cuts": self.cuts,
            "cut_scores": self.cut_scores,
            "frame_pts": self.frame_pts,
            "first": torch.tensor(self.first),
        }
        tmp = folder / ".faces.pt.partial"
        torch.save(payload, tmp)
        tmp.replace(folder / "faces.pt")

    @staticmethod
    def load(folder: Path) -> ShardResult:
        p = torch.load(folder / "faces.pt", weights_only=True)
        return ShardResult(
            Faces.from_state(p["faces"]), Tracks(p["tracks"]), p["cuts"], p["cut_scores"], p["frame_pts"],
            int(p["first"]),
        )  # fmt: skip


def faces_by_track(tracks: Tracks) -> list[torch.Tensor]:
    """Face indices of each trajectory (in face order inside each), grouped once, not one scan per trajectory."""
    of = tracks.of_face
    return list(torch.argsort(of, stable=True).split(torch.bincount(of, minlength=tracks.count).tolist()))


def load_shards(out: Path) -> tuple[list[dict[str, Any]], list[ShardResult]]:
    """Every shard's summary and results under ``out/shards/``, in order; refuses mixed or incomplete sets."""
    folders = sorted((out / "shards").glob("*-of-*")) if (out / "shards").is_dir() else []
    metas = [json.loads((f / "shard.json").read_text()) for f in folders if (f / "shard.json").exists()]
    if not metas:
        raise LabelError(f"{out} holds no shard results (expected {out}/shards/NNNN-of-MMMM/shard.json)")
    counts = {m["count"] for m in metas}
    films = {(m["film"], m["num_frames"]) for m in metas}
    if len(counts) > 1 or len(films) > 1:
        raise LabelError(f"{out}/shards mixes runs (shard counts {sorted(counts)}, films {sorted(films)}): clean it")
    count = counts.pop()
    have = {m["index"] for m in metas}
    missing = sorted(set(range(count)) - have)
    if missing:
        raise LabelError(f"{out}: shard(s) {', '.join(map(str, missing))} of {count} are missing; run them first")
    metas.sort(key=lambda m: m["index"])
    results = [ShardResult.load(out / "shards" / f"{m['index']:04d}-of-{m['count']:04d}") for m in metas]
    return metas, results


def stitch(metas: list[dict[str, Any]], shards: list[ShardResult]) -> tuple[Faces, Tracks]:
    """Faces owned by each shard, with global trajectory ids (``engine.apps.film``'s docstring says how)."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def root(x: tuple[int, int]) -> tuple[int, int]:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in range(len(metas) - 1):
        mine, nxt = shards[i], shards[i + 1]
        boundary = metas[i]["hi"]
        after = (mine.faces.frame_index >= boundary).nonzero().flatten()
        if not len(after):
            continue
        columns = (nxt.faces.frame_index, nxt.faces.face_index, nxt.tracks.of_face)
        key_next = {(f, r): t for f, r, t in zip(*(c.tolist() for c in columns), strict=True)}
        first_after: dict[int, int] = {}
        for j in after.tolist():  # faces come in frame order: the first one seen per track is its earliest
            first_after.setdefault(int(mine.tracks.of_face[j]), j)
        alive = set(mine.tracks.of_face[mine.faces.frame_index < boundary].tolist())
        for t, j in first_after.items():
            other = key_next.get((int(mine.faces.frame_index[j]), int(mine.faces.face_index[j])))
            if t in alive and other is not None:
                parent[root((i + 1, other))] = root((i, t))
    parts: list[Faces] = []
    node: list[tuple[int, int]] = []
    for i, (meta, shard) in enumerate(zip(metas, shards, strict=True)):
        frame = shard.faces.frame_index
        own = ((frame >= meta["lo"]) & (frame < meta["hi"])).nonzero().flatten()
        parts.append(shard.faces.select(own))
        node += [root((i, t)) for t in shard.tracks.of_face[own].tolist()]
    faces = Faces.cat(parts)
    # Global ids in order of first appearance (frame, then rank in the frame): independent of the shard count.
    order = torch.argsort(faces.frame_index * 1024 + faces.face_index, stable=True)
    faces = faces.select(order)
    node = [node[j] for j in order.tolist()]
    ids: dict[tuple[int, int], int] = {}
    return faces, Tracks(torch.tensor([ids.setdefault(x, len(ids)) for x in node], dtype=torch.long))


def owned_cuts(metas: list[dict[str, Any]], shards: list[ShardResult]) -> tuple[torch.Tensor, torch.Tensor]:
    """The cuts each shard owns (frame numbers) and their scores, in film order."""
    frames, scores = [], []
    for meta, shard in zip(metas, shards, strict=True):
        keep = (shard.cuts >= meta["lo"]) & (shard.cuts < meta["hi"])
        frames.append(shard.cuts[keep])
        scores.append(shard.cut_scores[keep])
    return torch.cat(frames), torch.cat(scores)


def frame_times(metas: list[dict[str, Any]], shards: list[ShardResult], frames: torch.Tensor) -> list[float]:
    """pts of frame numbers (every shard keeps the pts of every frame it decoded)."""
    out = []
    for f in frames.tolist():
        for meta, shard in zip(metas, shards, strict=True):
            first = shard.first
            if meta["lo"] <= f < meta["hi"] and 0 <= f - first < len(shard.frame_pts):
                out.append(float(shard.frame_pts[f - first]))
                break
        else:
            out.append(metas[0]["video_start_s"] + f / metas[0]["fps"])
    return out


def crop_files(out: Path, metas: list[dict[str, Any]], faces: Faces) -> list[Path] | None:
    """Where each (stitched) face's crop lies: in the folder of the shard that owns its frame; ``None`` when the
    shards were written without crops (before format 2's seed layout, or synthetic)."""
    if any("crops" not in m for m in metas):
        return None
    his = [m["hi"] for m in metas]
    folders = [out / "shards" / f"{m['index']:04d}-of-{m['count']:04d}" / CROPS_DIR for m in metas]
    return [
        folders[bisect_right(his, f)] / crop_name(f, r)
        for f, r in zip(faces.frame_index.tolist(), faces.face_index.tolist(), strict=True)
    ]
