"""The engine's public surface, one function per verb: what ``cli.py`` calls and what a notebook user imports.

Each function takes plain values (paths, names, flags; ``None`` means "the environment's ``ENGINE_*`` value, else
the default", read once in ``engine.config``), builds the settings, and calls the stage or application that does
the work. Errors a user can fix are raised as one of :data:`USER_ERRORS`, each with a one-line message.
Everything else in the package is private to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.apps.film_shards import LabelError
from engine.apps.people import PeopleError
from engine.config import Challenge, ConfigError, Settings, faces_only, load_challenge, resolve_device
from engine.inference.weights import WeightError
from engine.media import DecodeError
from engine.pipeline.executor import ExecutorUnavailable, get_executor
from engine.sources import SourceError
from engine.store import Database, ObjectStore, StoreError, open_stores
from engine.tools.bench import BenchError

if TYPE_CHECKING:
    from engine.apps.monitor import Monitor
    from engine.pipeline.summary import RunSummary
    from engine.prompts import Alignment
    from engine.sources import SourceItem
    from engine.tools.doctor import Check
    from engine.tools.export import ExportSummary
    from engine.types import Tick

Log = Callable[[str], None]
Progress = Callable[[Collection["SourceItem"]], Iterator["SourceItem"]]
#: The errors whose message tells the user what to fix (bad input, settings, weights or services).
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    SourceError,
    StoreError,  # unreachable, lost mid-run, or nothing stored for what was asked
    WeightError,
    ExecutorUnavailable,
    DecodeError,
    LabelError,
    PeopleError,
    BenchError,
)


def run(
    challenge: str | Path | None,
    videos: str | Path | None = None,
    *,
    log: Log = print,
    progress: Progress | None = None,
    embedder: str | None = None,
    allow_partial: bool = False,
    **settings: Any,
) -> RunSummary:
    """Every stage of a challenge on its videos (``videos``, else the TOML's ``videos`` key, relative to it);
    ``embedder`` overrides the TOML's ``[faces] embedder``; ``settings`` are :meth:`engine.config.Settings.load`'s
    keywords (db_url, store_url, runtype, device, ...).

    ``challenge`` ``None``: a faces-only run on ``videos`` (:func:`engine.config.faces_only`: every stage but the
    prompts, under a name of its own, so it never shares rows with a challenge; all videos unless ``runtype`` says
    ``test``). ``allow_partial``: group individuals even when the object store failed some videos (by default the
    cross-video step waits for a complete challenge)."""
    from engine.pipeline.run import run_challenge

    if challenge is None:
        if videos is None:
            raise ConfigError("nothing to run: give --challenge NAME|TOML, or --videos SOURCE for a faces-only run")
        ch = with_embedder(faces_only(videos), embedder)
        settings = {**settings, "runtype": settings.get("runtype") or "prod"}
    else:
        ch = with_embedder(load_challenge(challenge), embedder)
    config = Settings.load(ch.name, **settings)
    source = videos or ch.videos
    if not source:
        raise ConfigError(
            "no videos given: pass --videos FOLDER|URLFILE|s3://... (or set `videos` in the challenge TOML)"
        )
    if ch.path is not None and videos is None and not str(source).startswith(("s3://", "http")):
        source = str((ch.path.parent / source).resolve())
    with get_executor(config.executor, config.ray_address) as pool:
        return run_challenge(config, ch, source, log=log, progress=progress, executor=pool, allow_partial=allow_partial)


def with_embedder(ch: Challenge, embedder: str | None) -> Challenge:
    """The challenge with its ``[faces] embedder`` replaced (``None``: unchanged); an unknown name is a
    ``ConfigError``."""
    if embedder is None:
        return ch
    from engine.config.sections import parse_faces

    faces = parse_faces({**dataclasses.asdict(ch.faces), "embedder": embedder}, ch.name)
    return dataclasses.replace(ch, faces=faces)


def align(
    challenge: str | Path, videos: Sequence[Path], *, threshold: float | None = None, device: str | None = None,
    log: Log | None = None,
) -> list[Alignment]:  # fmt: skip
    """Where each prompt of the challenge's baseline plays in each video; a bundled challenge's baseline is looked
    up beside the first video."""
    from engine.prompts import align_files

    ch = load_challenge(challenge)
    dev = resolve_device(device or "auto")
    return align_files(ch, videos, videos_dir=videos[0].parent, device=dev, threshold=threshold, log=log)


def detect(
    images: Sequence[str | Path], *, long_side: int | None = None, threshold: float = 0.5, rotate: bool = False,
    device: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Faces in still images: path → list of {box, score, landmarks}, or {error} for an unreadable file."""
    from engine.faces.detect import FaceDetector
    from engine.faces.photos import detect_files

    detector = FaceDetector(device=resolve_device(device or "auto"))
    return detect_files([str(p) for p in images], detector, long_side, threshold, rotate)


def embed(
    images: Sequence[str | Path], *, long_side: int | None = None, threshold: float = 0.5, rotate: bool = False,
    device: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Like :func:`detect`, each face also with its 128-d ``embedding`` (one person: distance < 0.6)."""
    from engine.faces.detect import FaceDetector
    from engine.faces.embed import FaceEmbedder
    from engine.faces.photos import embed_files

    dev = resolve_device(device or "auto")
    paths = [str(p) for p in images]
    return embed_files(paths, FaceDetector(device=dev), FaceEmbedder(device=dev), long_side, threshold, rotate)


def label(
    film: str | Path, out: str | Path, *, gallery: str | Path | None = None, shards: int = 1,
    shard: int | None = None, interval: float = 0.0, cluster_threshold: float | None = None,
    min_score: float | None = None, min_face_px: float | None = None, device: str | None = None,
    executor: str | None = None, ray_address: str | None = None, movie_id: int | None = None, log: Log = print,
    progress: Tick | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Film labelling: shots, trajectories, features, clusters and (with a gallery: a folder of photos or the seed's
    actor database) predictions, in our files and in the seed's ``OUT/<movie_id>-data/`` (the video-labeler's);
    one shard only when ``shard`` is given (merge them with :func:`merge`). ``movie_id``: the film's id, else the
    digits that start its file name (``12345-Title.mp4``). ``min_score`` / ``min_face_px``: the floors a
    trajectory must reach to be clustered (``None``: the seed's 0.95 and 50 px)."""
    from engine.apps.film import LabelSettings, label_film

    given = dict(cluster_threshold=cluster_threshold, min_score=min_score, min_face_px=min_face_px)
    settings = LabelSettings(interval=interval, **{k: v for k, v in given.items() if v is not None})
    cfg = Settings.load("label", device=device, executor=executor, ray_address=ray_address)
    with get_executor(cfg.executor, cfg.ray_address) as pool:
        return label_film(
            film, out, settings=settings, shards=shards, shard=shard, gallery=gallery, device=cfg.device,
            executor=pool, log=log, movie_id=movie_id, progress=progress,
        )  # fmt: skip


def merge(
    out: str | Path, *, gallery: str | Path | None = None, device: str | None = None, movie_id: int | None = None,
    log: Log = print,
) -> dict[str, Any]:  # fmt: skip
    """Stitch the shards of ``label --shard`` jobs into the files one run writes (``movie_id``: overrides the one
    the shards were labelled with)."""
    from engine.apps.film import LabelSettings, load_models
    from engine.apps.film import merge as merge_shards

    models = load_models(resolve_device(device or "auto"), LabelSettings()) if gallery else None
    return merge_shards(out, gallery, models, log=log, movie_id=movie_id)


def search(
    reference: str | Path, videos: Sequence[str | Path], out: str | Path, *, threshold: float | None = None,
    interval: float = 0.2, max_gap: float = 1.0, clips: bool = True, device: str | None = None,
    executor: str | None = None, ray_address: str | None = None, embedder: str | None = None, log: Log = print,
    clip_kind: str = "face", progress: Tick | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The reference photo's person in videos: one clip per appearance and metadata per video (the seed's
    ``<stem>-metadata.json`` and the sidecar ``<stem>.json``, returned). ``embedder``: hse (default) or dlib;
    ``threshold``: the largest robust track distance that may match (``None``: the embedder's); ``clip_kind``:
    ``"face"`` (face-crop clips, the seed's) or ``"frame"`` (full frames with audio)."""
    from engine.apps.search import SearchSettings
    from engine.apps.search import search as search_videos
    from engine.config import FaceSettings
    from engine.faces.embedders import embedder_spec

    faces = FaceSettings() if embedder is None else FaceSettings(embedder=embedder_spec(embedder).name)
    settings = SearchSettings(
        interval=interval, threshold=threshold, max_gap_s=max_gap, clips=clips, clip_kind=clip_kind, faces=faces
    )
    cfg = Settings.load("search", device=device, executor=executor, ray_address=ray_address)
    with get_executor(cfg.executor, cfg.ray_address) as pool:
        return search_videos(
            reference, videos, out, settings=settings, device=cfg.device, executor=pool, log=log, progress=progress
        )


def monitor(watch: Sequence[str | Path], source: str, *, emit: Callable[[dict], None], log: Log = print,
            webhook: str | None = None, threshold: float | None = None, settle_s: float | None = None,
            embedder: str | None = None, **settings: Any) -> Monitor:  # fmt: skip
    """An open watch-list monitor over ``source`` (call ``run(interval, once=...)``, then ``close()``); state lives
    where a challenge named "monitor" keeps it. ``embedder``: hse (default) or dlib; ``threshold``: the largest
    robust track distance that may alert (``None``: the embedder's)."""
    from engine.apps.monitor import DEFAULT_SETTLE_S, Monitor
    from engine.faces.embedders import embedder_spec

    if embedder is not None:
        embedder_spec(embedder)
    return Monitor.open(
        Settings.load("monitor", **settings), watch, source, emit=emit, log=log, webhook=webhook,
        threshold=threshold, embedder=embedder, settle_s=DEFAULT_SETTLE_S if settle_s is None else settle_s,
    )  # fmt: skip


def _stored(
    challenge: str | Path, db_url: str | None, store_url: str | None, s3_endpoint_url: str | None
) -> tuple[str, Database, ObjectStore]:
    """The challenge's name and its stores, as a run with the same options would find them."""
    ch = load_challenge(challenge)
    cfg = Settings.load(ch.name, db_url=db_url, store_url=store_url, s3_endpoint_url=s3_endpoint_url, resolve=False)
    return ch.name, *open_stores(cfg.db_url, cfg.store_url, cfg.s3_endpoint_url)


def export(
    challenge: str | Path, out: Path, fmt: str = "imagefolder", *, db_url: str | None = None,
    store_url: str | None = None, s3_endpoint_url: str | None = None, log: Log = print, progress: Tick | None = None,
) -> ExportSummary:  # fmt: skip
    """Every unique face crop labelled with its prompt, individual, video and time (imagefolder or parquet)."""
    from engine.tools.export import export_dataset

    name, db, store = _stored(challenge, db_url, store_url, s3_endpoint_url)
    return export_dataset(db, store, name, out, fmt, log=log, progress=progress)


def report(
    challenge: str | Path, out: Path, *, db_url: str | None = None, store_url: str | None = None,
    s3_endpoint_url: str | None = None, log: Log = print, progress: Tick | None = None,
) -> Path:  # fmt: skip
    """A self-contained HTML report of the challenge's stored results."""
    from engine.tools.report import write_report

    name, db, store = _stored(challenge, db_url, store_url, s3_endpoint_url)
    cluster = load_challenge(challenge).cluster
    return write_report(db, store, name, out, log=log, cluster=cluster, progress=progress)


def doctor(challenge: str = "demo", **stores: str | None) -> list[Check]:
    """Every installation check (FFmpeg, packages, CUDA, weights, database, object store), in fixing order."""
    from engine.tools.doctor import run_checks

    return run_checks(challenge=challenge, **stores)


def bench(videos: Path, *, peers: Sequence[str] | None = None, device: str | None = None, interval: float = 0.5,
          log: Log = print, end_to_end: bool = False, challenge: Path | None = None,
          sampling: str = "exact") -> dict[str, Any]:  # fmt: skip
    """Decode-only, detector-only, embedder-only, the full pipeline and peers, in one run on the same frames;
    ``end_to_end``: the pipeline on a real challenge (``challenge``), its figures under ``end_to_end``."""
    from engine.tools.bench import DEFAULT_PEERS, run_bench

    dev = resolve_device(device or "auto")
    return run_bench(videos, peers=list(peers or DEFAULT_PEERS), device=dev, interval=interval, log=log,
                     end_to_end=end_to_end, challenge=challenge, sampling=sampling)  # fmt: skip


def export_onnx(out: Path, opset: int = 17) -> Path:
    """The detector network as ONNX (dynamic batch, height, width)."""
    from engine.inference.onnx_export import export_retinaface
    from engine.inference.weights import resolve
    from engine.models.retinaface import load_retinaface

    return export_retinaface(load_retinaface(resolve("retinaface_mnet025")), out, opset)


def bench_table(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The rows of :func:`bench`'s table: what, ms per sampled frame, sampled frames per second."""
    from engine.tools.bench import table_rows

    return table_rows(result)


def weights_status() -> list[tuple[Any, Any]]:
    """Each weight file of the manifest with where it would be loaded from and whether its sha256 matches."""
    from engine.inference import weights

    return [(spec, weights.check(spec)) for spec in weights.load_manifest().values()]


def pull_weights() -> list[Any]:
    """Make every weight file available (mirror folder, package, or upstream URL), each checked by sha256."""
    from engine.inference import weights

    return list(weights.pull())
