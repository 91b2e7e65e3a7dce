"""Film labelling (the seed ``facerec``): shots, face trajectories, trajectory features, clusters, gallery KNN.

A film is cut into ``N`` shards by frame number. Shard ``i`` owns frames ``[i·T/N, (i+1)·T/N)`` and decodes an
*overlap* on both sides: the shot detector and the tracker need context, and the overlap is where a trajectory
crossing the boundary is seen by both neighbours. Each shard writes its raw results (faces with descriptors and
shard-local track ids, cuts, the seed's crop of each face it owns) under ``DIR/shards/``
(``engine.apps.film_shards``, ``engine.apps.film_crops``); ``engine.apps.film_merge.merge`` stitches them into our
files and the seed's ``DIR/<movie_id>-data/``, the folder the labeller reads (``engine.apps.film_facerec``). An
unsharded run is one shard merged by the same code, so "3 shards merged" and "one run" are the same computation
wherever the overlap covers the context (tested on the shared Ryan Reynolds clip; the seed's folder byte for byte
on the Hamilton clip).

Stitching: the tracker is causal and restarts at every shot cut, so after the overlap's warm-up a shard links faces
exactly as an unsharded run does. A trajectory of shard ``i`` that is still alive at the boundary is joined to the
trajectory of shard ``i + 1`` that holds its first face past the boundary (the same detection: same frame, same
rank in the frame).

Floors: a trajectory is clustered only when its median detector score and median face size reach
``LabelSettings.min_score`` / ``min_face_px`` (the seed's 0.95 and 50 px); the others are written and marked, never
clustered (``engine.apps.film_merge``).

Output formats are documented in ``docs/film.md`` ("Files") and kept stable; ``label.json`` carries ``format_version``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from engine.apps.film_actors import is_actor_database
from engine.apps.film_crops import cut_crops
from engine.apps.film_facerec import resolve_movie_id
from engine.apps.film_merge import MIN_FACE_PX, MIN_SCORE, merge
from engine.apps.film_shards import CROPS_DIR, FORMAT_VERSION, LabelError, ShardResult
from engine.apps.scan import frame_ticker, scan_frames, stride_for
from engine.config import FaceSettings, resolve_device
from engine.faces.batching import FaceModels
from engine.shots import PICTURE_SHOTS, ShotSettings, shot_ids
from engine.track import TrackerSettings, track_faces
from engine.types import Tick, Tracks

OUTPUT_FILES = ("trajectories.jsonl", "features.jsonl", "scene_changes.json", "clusters.json", "label.json")
Log = Callable[[str], None]


@dataclass(frozen=True)
class LabelSettings:
    """How a film is labelled. ``interval`` = seconds between frames searched for faces (0: every frame, the
    seed's density; 0.2 is five times cheaper and still gives smooth trajectories). ``max_gap`` counts face
    samples a trajectory may miss before it ends. ``overlap_s`` must exceed the shot detector's context and a
    few samples (checked). ``cluster_threshold`` ``None`` is the embedder's own (``engine.faces.embedders``).
    ``min_score`` and ``min_face_px`` are the floors a trajectory's median detector score and
    median face size (box short side, frame pixels) must reach for it to be clustered (0 turns a floor off)."""

    interval: float = 0.0
    overlap_s: float = 4.0
    max_gap: int = 2
    cluster_threshold: float | None = None
    knn_k: int = 5
    top: int = 3
    min_score: float = MIN_SCORE
    min_face_px: float = MIN_FACE_PX
    #: No picture crop: a shard would decide its bars from its own first frames, and shards must decide as one run.
    faces: FaceSettings = field(default_factory=lambda: FaceSettings(rotate=False, crop_bars=False))
    shots: ShotSettings = PICTURE_SHOTS

    def __post_init__(self) -> None:
        if not 0 <= self.min_score <= 1:
            raise LabelError(f"min_score must be between 0 and 1 (got {self.min_score})")
        if self.min_face_px < 0:
            raise LabelError(f"min_face_px must be 0 or more (got {self.min_face_px})")

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
    movie_id: int | None = None  # the seed's id of the film (``engine.apps.film_facerec``)

    @property
    def name(self) -> str:
        return f"{self.index:04d}-of-{self.count:04d}"


def plan_shards(film: str | Path, count: int, settings: LabelSettings) -> list[ShardSpec]:
    """The ``count`` shards of a film (by frame number) with their overlaps."""
    from engine.media import probe

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


def label_shard(
    models: FaceModels,
    spec: ShardSpec,
    settings: LabelSettings,
    out: str | Path,
    on_frames: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Scan one shard's frames and write its raw results under ``out/shards/`` (with the crops of the faces it
    owns, ``engine.apps.film_crops``); returns its summary."""
    out = Path(out)
    scan = scan_frames(
        spec.film, models, start=spec.ext_lo, stop=spec.ext_hi, stride=spec.stride, shot_settings=settings.shots,
        on_frames=on_frames,
    )  # fmt: skip
    # Cuts are trusted only where the scan has full context around them (or touches the film's own ends).
    trust_lo = spec.ext_lo if spec.ext_lo == 0 else spec.ext_lo + settings.shots.context
    trust_hi = spec.ext_hi if spec.ext_hi == spec.num_frames else spec.ext_hi - settings.shots.context
    cuts = scan.cuts(settings.shots, trust_lo, trust_hi)
    faces = scan.faces.faces
    n = len(faces)
    frame = faces.frame_index
    tracker = TrackerSettings.for_embedder(
        settings.faces.embedder, max_gap=settings.max_gap * spec.stride, one_face_rule=False
    )
    track = (
        track_faces(frame, faces.boxes, tracker, segment=shot_ids(frame, cuts), embeddings=faces.embedding)
        if n
        else torch.zeros(0, dtype=torch.long)
    )
    folder = shard_dir(out, spec)
    folder.mkdir(parents=True, exist_ok=True)
    cut_scores = scan.scores[(cuts - scan.first).clamp(min=0)] if len(cuts) else torch.zeros(0)
    ShardResult(faces, Tracks(track), cuts, cut_scores, scan.pts_s, scan.first).save(folder)
    owned = ((frame >= spec.lo) & (frame < spec.hi)).nonzero().flatten()
    width, height = scan.info.width, scan.info.height
    crops = cut_crops(spec.film, faces.select(owned), folder / CROPS_DIR, width, height, str(models.detector.device))
    meta = dict(
        format_version=FORMAT_VERSION,
        **asdict(spec),
        settings=settings.public(),
        faces=n,
        trajectories=int(track.max()) + 1 if n else 0,
        cuts=len(cuts),
        crops=crops,
        width=width,
        height=height,
        video_start_s=scan.info.start_s,
    )
    (folder / "shard.json").write_text(json.dumps(meta, indent=1))
    return meta


def load_models(device: str, settings: LabelSettings) -> FaceModels:
    """The models a labelling worker holds (picklable entry point for executors; inside a Ray actor the actor's
    own device wins over the driver's)."""
    return FaceModels.load(resolve_device(device, "worker"), settings.faces)


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
    movie_id: int | None = None,
    progress: Tick | None = None,
) -> dict[str, Any]:
    """``label FILM``: one shard (``shard`` given: a cluster job, no merge) or all shards then the merge.
    ``movie_id``: the seed's id of the film, else the digits that start its file name; with neither, only our own
    files are written (the seed's folder is named after the id), and an actor-database gallery is refused up front."""
    from functools import partial

    settings = settings or LabelSettings()
    out = Path(out)
    specs = plan_shards(film, shards, settings)  # a film that cannot be read says so before its name is checked
    movie_id = resolve_movie_id(film, movie_id)
    if movie_id is None and gallery is not None and is_actor_database(Path(gallery)):
        raise LabelError(
            f"actor database {gallery}: its cast is found by the film's movie id, and {Path(film).name} has none"
            " (name it <id>-<title>, 12345-CoolMovieFilm.mp4, or give --movie-id)"
        )
    specs = [replace(s, movie_id=movie_id) for s in specs]
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
    on_frames = frame_ticker(progress, executor, sum(s.ext_hi - s.ext_lo for s in specs))
    if progress is not None:
        progress("shards", 0, len(specs))  # the bar shows from the start
    for meta in executor.map(
        partial(load_models, device, settings),
        partial(_run_shard, settings, str(out), on_frames=on_frames),
        specs,
        gpu=True,
    ):
        if progress is not None:
            progress("shards", 1, len(specs))
        log(
            f"shard {meta['index'] + 1}/{meta['count']}: frames {meta['lo']}..{meta['hi'] - 1}, {meta['faces']} faces, "
            f"{meta['trajectories']} trajectories, {meta['cuts']} cuts"
        )
        metas.append(meta)
    if shard is not None:
        return metas[0]
    return merge(out, gallery, load_models(device, settings) if gallery else None, log, movie_id)


def _run_shard(
    settings: LabelSettings,
    out: str,
    models: FaceModels,
    spec: ShardSpec,
    on_frames: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    return label_shard(models, spec, settings, out, on_frames)
