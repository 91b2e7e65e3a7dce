"""Film labelling (the seed ``facerec``): shots, face trajectories, trajectory features, clusters, gallery KNN.

A film is cut into ``N`` shards by frame number. Shard ``i`` owns frames ``[i·T/N, (i+1)·T/N)`` and decodes an
*overlap* on both sides: the shot detector and the tracker need context, and the overlap is where a trajectory
crossing the boundary is seen by both neighbours. Each shard writes its raw results (faces with descriptors and
shard-local track ids, cuts) under ``DIR/shards/``; :func:`merge` stitches them into the files a labelling tool
reads. An unsharded run is one shard merged by the same code, so "3 shards merged" and "one run" are the same
computation wherever the overlap covers the context (tested on the shared Ryan Reynolds clip).

Stitching: the tracker is causal and restarts at every shot cut, so after the overlap's warm-up a shard links faces
exactly as an unsharded run does. A trajectory of shard ``i`` that is still alive at the boundary is joined to the
trajectory of shard ``i + 1`` that holds its first face past the boundary (the same detection: same frame, same
rank in the frame).

Output formats are documented in the README ("Film labelling") and kept stable; ``label.json`` carries
``format_version``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.apps.people import PeopleError, knn_vote, load_gallery
from engine.apps.scan import scan_frames, stride_for
from engine.apps.shots import ShotSettings, shot_ids
from engine.cluster import DEFAULT_THRESHOLD, group_tracks, similar_pairs, track_means
from engine.faces.batching import FaceModels, FaceSettings
from engine.track import TrackerSettings, track_faces

FORMAT_VERSION = 1
OUTPUT_FILES = ("trajectories.jsonl", "features.jsonl", "scene_changes.json", "clusters.json", "label.json")
Log = Callable[[str], None]


class LabelError(ValueError):
    """Bad labelling input: shard numbers, incomplete or mismatched shard folders, an unusable gallery."""


@dataclass(frozen=True)
class LabelSettings:
    """How a film is labelled. ``interval`` = seconds between frames searched for faces (0: every frame, the
    seed's density; 0.2 is five times cheaper and still gives smooth trajectories). ``max_gap`` counts face
    samples a trajectory may miss before it ends. ``overlap_s`` must exceed the shot detector's context and a
    few samples (checked)."""

    interval: float = 0.0
    overlap_s: float = 4.0
    max_gap: int = 2
    cluster_threshold: float = DEFAULT_THRESHOLD
    knn_k: int = 5
    top: int = 3
    faces: FaceSettings = field(default_factory=lambda: FaceSettings(rotate=False))
    shots: ShotSettings = field(default_factory=ShotSettings)

    def public(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass(frozen=True)
class ShardSpec:
    """Frames ``[lo, hi)`` owned by shard ``index`` of ``count``; ``[ext_lo, ext_hi)`` is what it decodes."""

    film: str
    index: int
    count: int
    lo: int
    hi: int
    ext_lo: int
    ext_hi: int
    stride: int
    num_frames: int
    fps: float

    @property
    def name(self) -> str:
        return f"{self.index:04d}-of-{self.count:04d}"


def plan_shards(film: str | Path, count: int, settings: LabelSettings) -> list[ShardSpec]:
    """The ``count`` shards of a film (by frame number) with their overlaps."""
    from engine.media.decode import probe

    info = probe(film).video
    total = info.num_frames or 0
    if count < 1:
        raise LabelError("--shards must be at least 1")
    if total < count:
        raise LabelError(f"{Path(film).name} has {total} frames: it cannot be cut into {count} shards")
    fps = info.fps or (total / info.duration_s if info.duration_s > 0 else 25.0)
    stride = stride_for(settings.interval, fps)
    # Enough for the shot detector's context on both sides of every owned frame, plus tracker warm-up samples.
    overlap = max(math.ceil(settings.overlap_s * fps), settings.shots.context + (settings.max_gap + 2) * stride)
    if overlap < settings.shots.context + (settings.max_gap + 1) * stride:
        raise LabelError("overlap_s is too short for the shot detector's context and the tracker's gap")
    specs = []
    for i in range(count):
        lo, hi = i * total // count, (i + 1) * total // count
        specs.append(
            ShardSpec(str(film), i, count, lo, hi, max(0, lo - overlap), min(total, hi + overlap), stride, total, fps)
        )
    return specs


def shard_dir(out: Path, spec: ShardSpec) -> Path:
    return out / "shards" / spec.name


def label_shard(models: FaceModels, spec: ShardSpec, settings: LabelSettings, out: str | Path) -> dict[str, Any]:
    """Scan one shard's frames and write its raw results under ``out/shards/``; returns its summary."""
    out = Path(out)
    scan = scan_frames(
        spec.film, models, start=spec.ext_lo, stop=spec.ext_hi, stride=spec.stride, shot_settings=settings.shots
    )
    # Cuts are trusted only where the scan has full context around them (or touches the film's own ends).
    trust_lo = spec.ext_lo if spec.ext_lo == 0 else spec.ext_lo + settings.shots.context
    trust_hi = spec.ext_hi if spec.ext_hi == spec.num_frames else spec.ext_hi - settings.shots.context
    cuts = scan.cuts(settings.shots, trust_lo, trust_hi)
    faces = scan.faces.faces
    n = len(scan.faces)
    frame = faces.get("frame_index", torch.zeros(0, dtype=torch.long))
    tracker = TrackerSettings(max_gap=settings.max_gap * spec.stride, one_face_rule=False)
    track = (
        track_faces(frame, faces["boxes"], tracker, segment=shot_ids(frame, cuts), embeddings=faces["embedding"])
        if n
        else torch.zeros(0, dtype=torch.long)
    )
    folder = shard_dir(out, spec)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "frame": frame,
        "rank": faces.get("face_index", torch.zeros(0, dtype=torch.long)),
        "pts_s": faces.get("pts_s", torch.zeros(0, dtype=torch.float64)),
        "boxes": faces.get("boxes", torch.zeros((0, 4))),
        "scores": faces.get("scores", torch.zeros(0)),
        "landmarks": faces.get("landmarks", torch.zeros((0, 10))),
        "embedding": faces.get("embedding", torch.zeros((0, 128))),
        "track": track,
        "cuts": cuts,
        "cut_scores": scan.scores[(cuts - scan.first).clamp(min=0)] if len(cuts) else torch.zeros(0),
        "frame_pts": scan.pts_s,
        "first": torch.tensor(scan.first),
    }
    tmp = folder / ".faces.pt.partial"
    torch.save(payload, tmp)
    tmp.replace(folder / "faces.pt")
    meta = dict(
        format_version=FORMAT_VERSION,
        **asdict(spec),
        settings=settings.public(),
        faces=n,
        trajectories=int(track.max()) + 1 if n else 0,
        cuts=len(cuts),
        width=scan.info.width,
        height=scan.info.height,
        video_start_s=scan.info.start_s,
    )
    (folder / "shard.json").write_text(json.dumps(meta, indent=1))
    return meta


def _load_shards(out: Path) -> tuple[list[dict], list[dict[str, torch.Tensor]]]:
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
    tensors = [
        torch.load(out / "shards" / f"{m['index']:04d}-of-{m['count']:04d}" / "faces.pt", weights_only=True)
        for m in metas
    ]
    return metas, tensors


def _stitch(metas: list[dict], shards: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Faces owned by each shard, with global trajectory ids (see the module docstring)."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def root(x: tuple[int, int]) -> tuple[int, int]:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in range(len(metas) - 1):
        mine, nxt = shards[i], shards[i + 1]
        boundary = metas[i]["hi"]
        after = (mine["frame"] >= boundary).nonzero().flatten()
        if not len(after):
            continue
        key_next = {(f, r): t for f, r, t in zip(*(nxt[k].tolist() for k in ("frame", "rank", "track")), strict=True)}
        first_after: dict[int, int] = {}
        for j in after.tolist():  # faces come in frame order: the first one seen per track is its earliest
            first_after.setdefault(int(mine["track"][j]), j)
        alive = set(mine["track"][mine["frame"] < boundary].tolist())
        for t, j in first_after.items():
            other = key_next.get((int(mine["frame"][j]), int(mine["rank"][j])))
            if t in alive and other is not None:
                parent[root((i + 1, other))] = root((i, t))
    parts: dict[str, list[torch.Tensor]] = {}
    node: list[tuple[int, int]] = []
    for i, (meta, shard) in enumerate(zip(metas, shards, strict=True)):
        own = ((shard["frame"] >= meta["lo"]) & (shard["frame"] < meta["hi"])).nonzero().flatten()
        for k in ("frame", "rank", "pts_s", "boxes", "scores", "landmarks", "embedding"):
            parts.setdefault(k, []).append(shard[k][own])
        node += [root((i, t)) for t in shard["track"][own].tolist()]
    faces = {k: torch.cat(v) for k, v in parts.items()}
    # Global ids in order of first appearance (frame, then rank in the frame): independent of the shard count.
    order = torch.argsort(faces["frame"] * 1024 + faces["rank"], stable=True)
    faces = {k: v[order] for k, v in faces.items()}
    node = [node[j] for j in order.tolist()]
    ids: dict[tuple[int, int], int] = {}
    faces["trajectory"] = torch.tensor([ids.setdefault(x, len(ids)) for x in node], dtype=torch.long)
    return faces


def _cuts(metas: list[dict], shards: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    frames, scores = [], []
    for meta, shard in zip(metas, shards, strict=True):
        keep = (shard["cuts"] >= meta["lo"]) & (shard["cuts"] < meta["hi"])
        frames.append(shard["cuts"][keep])
        scores.append(shard["cut_scores"][keep])
    return torch.cat(frames), torch.cat(scores)


def _frame_time(metas: list[dict], shards: list[dict[str, torch.Tensor]], frames: torch.Tensor) -> list[float]:
    """pts of frame numbers (every shard keeps the pts of every frame it decoded)."""
    out = []
    for f in frames.tolist():
        for meta, shard in zip(metas, shards, strict=True):
            first = int(shard["first"])
            if meta["lo"] <= f < meta["hi"] and 0 <= f - first < len(shard["frame_pts"]):
                out.append(float(shard["frame_pts"][f - first]))
                break
        else:
            out.append(metas[0]["video_start_s"] + f / metas[0]["fps"])
    return out


def _r(values: Sequence[float], digits: int) -> list[float]:
    return [round(float(v), digits) for v in values]


def merge(
    out: str | Path,
    gallery: str | Path | None = None,
    models: FaceModels | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Stitch ``out/shards/*`` into the labelling files; with a gallery, KNN predictions per cluster."""
    out = Path(out)
    metas, shards = _load_shards(out)
    settings = metas[0]["settings"]
    faces = _stitch(metas, shards)
    cut_frames, cut_scores = _cuts(metas, shards)
    n_traj = int(faces["trajectory"].max()) + 1 if len(faces["frame"]) else 0
    shot_of_face = shot_ids(faces["frame"], cut_frames)
    cut_times = _frame_time(metas, shards, cut_frames)
    num_frames, fps = metas[0]["num_frames"], metas[0]["fps"]

    # trajectories.jsonl + features.jsonl
    traj_of = faces["trajectory"]
    embeddings = faces["embedding"].float()
    means = torch.nn.functional.normalize(track_means(traj_of, embeddings, n_traj), dim=1) if n_traj else embeddings
    with (out / "trajectories.jsonl").open("w") as ft, (out / "features.jsonl").open("w") as ff:
        # Faces grouped by trajectory once (stable: frame order inside each), not one scan per trajectory.
        by_traj = torch.argsort(traj_of, stable=True).split(torch.bincount(traj_of, minlength=n_traj).tolist())
        for t, idx in enumerate(by_traj):
            fr = faces["frame"][idx]
            traj = dict(
                id=t,
                shot=int(shot_of_face[idx[0]]),
                start_frame=int(fr[0]),
                end_frame=int(fr[-1]),
                start_s=round(float(faces["pts_s"][idx[0]]), 4),
                end_s=round(float(faces["pts_s"][idx[-1]]), 4),
                detections=[
                    dict(frame=int(f), time_s=round(float(p), 4), box=_r(b, 2), score=round(float(s), 4),
                         landmarks=_r(m, 2))
                    for f, p, b, s, m in zip(
                        fr, faces["pts_s"][idx], faces["boxes"][idx], faces["scores"][idx], faces["landmarks"][idx],
                        strict=True,
                    )
                ],
            )  # fmt: skip
            ft.write(json.dumps(traj) + "\n")
            ff.write(
                json.dumps(
                    dict(
                        id=t,
                        n_faces=len(idx),
                        mean=_r(means[t], 6),
                        embeddings=[_r(e, 6) for e in embeddings[idx]],
                    )
                )
                + "\n"
            )

    # scene_changes.json
    bounds = [0, *cut_frames.tolist(), num_frames]
    starts = [metas[0]["video_start_s"], *cut_times]
    shots = [
        dict(id=k, start_frame=bounds[k], end_frame=bounds[k + 1] - 1, start_s=round(starts[k], 4))
        for k in range(len(bounds) - 1)
    ]
    scene = dict(
        fps=fps,
        num_frames=num_frames,
        cuts=[
            dict(frame=int(f), time_s=round(t, 4), score=round(float(s), 3))
            for f, t, s in zip(cut_frames, cut_times, cut_scores, strict=True)
        ],
        shots=shots,
        settings=settings["shots"],
    )
    (out / "scene_changes.json").write_text(json.dumps(scene, indent=1))

    # clusters.json: every trajectory against every other (one film), never two trajectories on screen together.
    threshold = settings["cluster_threshold"]
    cluster_of = _cluster(faces, means, n_traj, threshold)
    n_clusters = int(cluster_of.max()) + 1 if n_traj else 0
    clusters = []
    for c in range(n_clusters):
        members = (cluster_of == c).nonzero().flatten().tolist()
        in_c = torch.isin(traj_of, torch.tensor(members))
        clusters.append(
            dict(
                id=c,
                trajectories=members,
                n_faces=int(in_c.sum()),
                shots=sorted(set(shot_of_face[in_c].tolist())),
            )
        )
    (out / "clusters.json").write_text(json.dumps(dict(threshold=threshold, clusters=clusters), indent=1))

    summary: dict[str, Any] = dict(
        format_version=FORMAT_VERSION,
        film=metas[0]["film"],
        num_frames=num_frames,
        fps=fps,
        shards=len(metas),
        faces=len(faces["frame"]),
        trajectories=n_traj,
        clusters=n_clusters,
        cuts=len(cut_frames),
        settings=settings,
    )
    if gallery is not None:
        if models is None:
            raise LabelError("predictions need the face models")
        try:
            people = load_gallery(gallery, models, log)
        except PeopleError as exc:
            raise LabelError(str(exc)) from exc
        predictions = [
            dict(
                cluster=c,
                top=knn_vote(embeddings[torch.isin(traj_of, torch.tensor(cl["trajectories"]))], people,
                             settings["knn_k"], settings["top"]),
            )
            for c, cl in enumerate(clusters)
        ]  # fmt: skip
        (out / "predictions.json").write_text(
            json.dumps(dict(gallery=str(gallery), people=people.unique_names, k=settings["knn_k"],
                            clusters=predictions), indent=1)
        )  # fmt: skip
        summary["predictions"] = len(predictions)
    (out / "label.json").write_text(json.dumps(summary, indent=1))
    return summary


def _cluster(faces: dict[str, torch.Tensor], means: torch.Tensor, n_traj: int, threshold: float) -> torch.Tensor:
    if n_traj == 0:
        return torch.zeros(0, dtype=torch.long)
    pairs = similar_pairs(means, torch.arange(n_traj))
    together: dict[int, set[int]] = {}
    for f, t in zip(faces["frame"].tolist(), faces["trajectory"].tolist(), strict=True):
        together.setdefault(f, set()).add(t)
    conflicts = {(x, y) for g in together.values() if len(g) > 1 for x in g for y in g if x < y}
    return group_tracks(n_traj, pairs, threshold, cannot_link=conflicts)


def load_models(device: str, settings: LabelSettings) -> FaceModels:
    """The models a labelling worker holds (picklable entry point for executors; inside a Ray actor the actor's
    own device wins over the driver's)."""
    from engine.pipeline.executor import worker_device

    return FaceModels.load(worker_device(device), settings.faces)


def label_film(
    film: str | Path,
    out: str | Path,
    *,
    settings: LabelSettings | None = None,
    shards: int = 1,
    shard: int | None = None,
    gallery: str | Path | None = None,
    device: str = "cpu",
    executor: Any = None,
    log: Log = print,
) -> dict[str, Any]:
    """``label FILM``: one shard (``shard`` given: a cluster job, no merge) or all shards then the merge."""
    from functools import partial

    settings = settings or LabelSettings()
    out = Path(out)
    specs = plan_shards(film, shards, settings)
    if shard is not None:
        if not 0 <= shard < shards:
            raise LabelError(f"--shard must be in 0..{shards - 1} (got {shard})")
        specs = [specs[shard]]
    if gallery is not None and not Path(gallery).is_dir():
        raise LabelError(f"gallery {gallery} is not a folder")
    if executor is None:
        from engine.pipeline.executor import get_executor

        executor = get_executor("local")
    metas = []
    for meta in executor.map(
        partial(load_models, device, settings), partial(_run_shard, settings, str(out)), specs, gpu=True
    ):
        log(
            f"shard {meta['index'] + 1}/{meta['count']}: frames {meta['lo']}..{meta['hi'] - 1}, {meta['faces']} faces, "
            f"{meta['trajectories']} trajectories, {meta['cuts']} cuts"
        )
        metas.append(meta)
    if shard is not None:
        return metas[0]
    return merge(out, gallery, load_models(device, settings) if gallery else None, log)


def _run_shard(settings: LabelSettings, out: str, models: FaceModels, spec: ShardSpec) -> dict[str, Any]:
    return label_shard(models, spec, settings, out)
