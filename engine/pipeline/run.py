"""The run: stages wired together, with progress, per-video transactions and error rows.

Per video: fetch → hash (the video's identity) → probe → sample frames every ``interval`` seconds → faces (detect
with rotate-and-retry, align, embed, crop, PHash) → cover the logo → find the prompts in the audio → tracks → put the
(covered) video and the crops in the object store → commit every per-video row in one transaction.
Then, over all the challenge's videos: track similarities → individuals → unique faces, in one transaction.
A video that fails at any stage gets a ``video_errors`` row and a one-line message; the run goes on. A video whose
stages are already committed is skipped, so a re-run is cheap and changes no row count, and a run killed half-way is
resumed by running it again.

In this process the videos stream by default (``stream_videos``): a decoding thread prepares and decodes the next
videos, this thread runs the models (on a GPU, on batches packed across videos), and a flushing thread finishes and
stores the previous ones, all joined by bounded queues, so memory stays flat however many videos a run has.
``--no-stream`` (``Settings.stream``) runs each video through ``process_video``, one stage after another, as Ray
actors (``engine.pipeline.executor``) always do. The per-video stages are the same functions on every path
(``prepare_video``,
``video_frames`` + ``FaceBatcher``, ``finish_video``, ``flush_video``), and every video commits its own rows in one
transaction.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.cluster import ClusterSettings, cluster_settings, group_tracks, similar_pairs, track_means
from engine.config.settings import Challenge, ConfigError, Settings
from engine.dedup import duplicates_to_remove, hash_to_hex, hex_to_hashes
from engine.faces.batching import (
    ROTATIONS_TRIED,
    FaceBatcher,
    FaceModels,
    FaceSettings,
    VideoFaces,
    analyze_batches,
    assign_tracks,
    face_settings,
)
from engine.hashing import sha256_file
from engine.inference.runtime import share_malloc_arenas
from engine.logo import LogoSettings, cover_logo, logo_box, logo_settings
from engine.media import decode
from engine.media.decode import FrameBatch
from engine.pipeline.executor import Executor, LocalExecutor, worker_device
from engine.pipeline.threads import Flusher, prefetch
from engine.prompts import PromptTemplates, align_config, baseline_templates, find_prompts
from engine.sources import FetchError, SourceItem, fetch, list_sources
from engine.store import Database, ObjectStore, face_key, frame_key, open_object_store, redact, video_key

Log = Callable[[str], None]


@dataclass
class VideoOutcome:
    name: str
    status: str  # "ok" | "skipped" | "failed"
    sha256: str | None = None
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    prompts: int = 0
    message: str = ""


@dataclass
class RunSummary:
    """What a run did, for the CLI's summary and for tests."""

    run_id: int
    challenge: str
    db_url: str
    store_url: str
    device: str
    videos_found: int = 0
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    prompts: int = 0
    individuals: int = 0
    unique_faces: int = 0
    similarities: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    outcomes: list[VideoOutcome] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.ok + self.skipped

    @property
    def exit_code(self) -> int:
        """Non-zero only when nothing at all could be processed."""
        return 0 if self.processed > 0 else 1

    def lines(self) -> list[str]:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in self.stage_seconds.items())
        return [
            f"run {self.run_id} · challenge {self.challenge} · device {self.device}",
            f"videos: {self.videos_found} found, {self.ok} processed, {self.skipped} already stored, "
            f"{self.failed} failed",
            f"frames sampled: {self.frames} · prompts found: {self.prompts} · faces: {self.faces} · "
            f"tracks: {self.tracks}",
            f"individuals: {self.individuals} (from {self.similarities} similar track pairs) · unique faces: "
            f"{self.unique_faces}",
            f"time: {self.seconds:.2f}s ({stages})" if stages else f"time: {self.seconds:.2f}s",
            f"database: {redact(self.db_url)}",
            f"objects: {self.store_url}",
        ]


class StageTimer:
    """Wall time spent per stage, summed over videos (and over the streaming pipeline's threads, which time their
    own stages into one timer: hence the lock)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            with self._lock:
                self.seconds[stage] += elapsed


@dataclass
class RunContext:
    settings: Settings
    challenge: Challenge
    db: Database
    store: ObjectStore
    run_id: int
    timer: StageTimer
    log: Log
    models: FaceModels
    logo: LogoSettings | None
    clustering: ClusterSettings
    templates: PromptTemplates | None
    align_threshold: float
    audio_rate: int


def _fail(
    ctx: RunContext, item: SourceItem, stage: str, kind: str, message: str, sha: str | None = None
) -> VideoOutcome:
    ctx.db.record_error(ctx.run_id, item.uri, stage, kind, message, sha256=sha)
    ctx.log(f"error  {item.name}: {message}")
    return VideoOutcome(item.name, "failed", sha, message=message)


@dataclass
class PreparedVideo:
    """A video fetched, hashed and probed, not stored yet: what its frames, faces and rows are made from."""

    item: SourceItem
    path: Path
    metadata: dict[str, Any]
    sha: str
    size: int
    info: decode.MediaInfo
    needed: list[str]  # the stages its committed row will say are done


@dataclass
class VideoRows:
    """One video's rows and objects, built and ready to be stored (:func:`flush_video`)."""

    prepared: PreparedVideo
    video: dict[str, Any]
    frames: list[dict[str, Any]]
    subvideos: list[dict[str, Any]]
    faces: list[dict[str, Any]]
    noface_frames: list[int]
    rotations_tried: list[int]
    video_key: str
    stored_path: Path  # the file stored as the video (the logo-covered copy when there is one)
    objects: list[tuple[str, bytes]]  # (key, JPEG): the crops, then the frames when they are saved
    tracks: int


def prepare_video(item: SourceItem, ctx: RunContext, claimed: set[str] | None = None) -> PreparedVideo | VideoOutcome:
    """Fetch, hash, skip check and probe, with the non-fatal notes (no audio, truncated): the video ready for its
    frames, or its outcome (skipped, or failed with its error row written). Never raises for a bad input.

    ``claimed``: the hashes this run has already taken (the streaming path prepares a video while earlier ones are
    still in flight, not committed yet): a copy of one of them is skipped as if it were stored; the hash is added.
    """
    s = ctx.settings
    with ctx.timer("fetch"):
        try:
            path, metadata = fetch(item, s.work_dir / "downloads", s.s3_endpoint_url)
        except FetchError as exc:
            return _fail(ctx, item, "fetch", "download_failed", str(exc))
    with ctx.timer("hash"):
        try:
            size = path.stat().st_size
            sha = sha256_file(path)
        except OSError as exc:
            return _fail(ctx, item, "read", "unreadable_path", f"cannot read {path}: {exc.strerror or exc}")
    if size == 0:
        return _fail(ctx, item, "probe", "empty_file", f"{item.name} is an empty (zero-byte) file", sha)

    needed = {"ingest", "frames", "faces", "tracks", "audio"}
    needed |= ({"frame_jpegs"} if s.save_frames else set()) | ({"logo"} if ctx.logo else set())
    if not s.force:
        if claimed is not None and sha in claimed:
            return VideoOutcome(item.name, "skipped", sha)
        done = ctx.db.video_stages(sha)
        if done is not None and needed <= set(done):
            return VideoOutcome(item.name, "skipped", sha)

    with ctx.timer("probe"):
        try:
            info = decode.probe(path)
        except decode.DecodeError as exc:
            return _fail(ctx, item, "probe", exc.kind, str(exc), sha)
    if claimed is not None:
        claimed.add(sha)
    video = info.video
    if not info.has_audio:
        ctx.db.record_error(
            ctx.run_id,
            item.uri,
            "audio",
            "no_audio",
            f"{item.name} has no audio stream: prompts cannot be aligned in it (its frames are still sampled)",
            sha256=sha,
            fatal=False,
        )
        ctx.log(f"note   {item.name}: no audio stream; frames are still sampled")
    if video.truncated_s > decode.TRUNCATION_TOLERANCE_S:
        ctx.db.record_error(
            ctx.run_id,
            item.uri,
            "decode",
            "truncated",
            f"{item.name} is truncated: {video.duration_s:.2f}s of video decodable, the header "
            f"says {video.header_duration_s:.2f}s; the decodable part is kept",
            sha256=sha,
            fatal=False,
        )
        ctx.log(f"note   {item.name}: truncated, keeping the first {video.duration_s:.2f}s")
    return PreparedVideo(item, path, metadata, sha, size, info, sorted(needed))


#: Frames per model batch (and decode chunk) when ``Settings.batch_frames`` is 0. A GPU takes a whole batch in one
#: network call, so bigger is better there; a CPU runs micro-batches of a few frames whatever it is given
#: (``engine.faces.detect.CPU_MICRO_BATCH``), so small batches cost nothing and keep less memory in flight.
GPU_BATCH_FRAMES = 64
CPU_BATCH_FRAMES = 16


def batch_frames(settings: Settings) -> int:
    """Frames per model batch and per decode chunk, on every path (sequential, streaming, Ray workers)."""
    if settings.batch_frames:
        return settings.batch_frames
    return GPU_BATCH_FRAMES if settings.device.startswith("cuda") else CPU_BATCH_FRAMES


def packs_videos(settings: Settings) -> bool:
    """Whether the stream packs frames of several videos into one model batch: by default on a GPU, where short
    videos would leave its batches half empty, and not on a CPU, where it gains nothing (micro-batches) and would
    move results' last bits away from what the sequential path and Ray workers compute (see :class:`FaceBatcher`)."""
    if settings.pack_videos is not None:
        return settings.pack_videos
    return settings.device.startswith("cuda")


def video_frames(prepared: PreparedVideo, ctx: RunContext, chunk: int | None = None) -> Iterator[FrameBatch]:
    """The video's sampled frames on the run's device, ``chunk`` (default :func:`batch_frames`) at a time
    (``decode.DecodeError`` when they cannot be decoded, raised where it happens)."""
    s = ctx.settings
    return decode.sample_frames(prepared.path, s.sample_interval, s.device, chunk or batch_frames(s))


def keeps_frames(ctx: RunContext) -> bool:
    """Whether the faces stage must keep every sampled frame on the host: to look for the logo in them."""
    return ctx.logo is not None and ctx.logo.box is None


def video_faces(prepared: PreparedVideo, ctx: RunContext) -> VideoFaces | VideoOutcome:
    """The faces stage on one video's frames, batch by batch as they are decoded (the sequential path)."""
    try:
        return analyze_batches(
            video_frames(prepared, ctx),
            ctx.models,
            timer=ctx.timer,
            keep_frames=keeps_frames(ctx),
            frame_jpegs=ctx.settings.save_frames,
        )
    except decode.DecodeError as exc:
        return _fail(ctx, prepared.item, "decode", exc.kind, str(exc), prepared.sha)


def finish_video(prepared: PreparedVideo, found: VideoFaces, ctx: RunContext) -> VideoRows | VideoOutcome:
    """Logo, audio prompts and tracks, then every row and object of the video: what :func:`flush_video` stores,
    or the video's outcome when covering its logo failed."""
    s, item, path, sha = ctx.settings, prepared.item, prepared.path, prepared.sha
    info = prepared.info
    video = info.video
    stored_path, covered_box = path, None
    if ctx.logo is not None:
        with ctx.timer("logo"):
            box = logo_box(ctx.logo, video.width, video.height, found.sampled)
            found.sampled = None
            if box is None:
                ctx.log(f"note   {item.name}: no static logo found; stored as it is")
            else:
                try:
                    covered = s.work_dir / "covered" / f"{sha}.mp4"
                    covered.parent.mkdir(parents=True, exist_ok=True)
                    stored_path = cover_logo(path, covered, box, ctx.logo.method)
                    covered_box = list(box.as_tuple())
                except (decode.DecodeError, ValueError) as exc:
                    return _fail(
                        ctx, item, "logo", "cover_failed", f"covering the logo of {item.name} failed: {exc}", sha
                    )

    subvideos: list[dict] = []
    if ctx.templates is not None and info.has_audio:
        with ctx.timer("audio"):
            try:
                track = decode.decode_audio(path, ctx.audio_rate)
                alignment = find_prompts(ctx.templates, [track], ctx.align_threshold)[0]
            except decode.DecodeError as exc:
                ctx.db.record_error(ctx.run_id, item.uri, "audio", exc.kind, str(exc), sha256=sha, fatal=False)
                alignment = None
        if alignment is not None:
            subvideos = [
                dict(prompt=m.prompt, start_s=m.start_s, end_s=m.end_s, score=m.score) for m in alignment.matches
            ]
            for name, score in alignment.absent.items():
                ctx.log(f"note   {item.name}: prompt {name!r} not found (best NCC {score:.3f} < {ctx.align_threshold})")

    with ctx.timer("track"):
        assign_tracks(found, ctx.clustering.breaks_for(item.name, sha))

    suffix = path.suffix.lower() if path.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm", ".avi") else ".mp4"
    vkey = video_key(sha, ".mp4" if covered_box else suffix)
    f = found.faces
    crop_keys = [face_key(sha, k, i) for k, i in zip(f["frame_index"].tolist(), f["face_index"].tolist(), strict=True)]
    objects = list(zip(crop_keys, found.crops, strict=True))
    objects += [(frame_key(sha, k), data) for k, data in found.frame_jpegs.items()]
    frame_rows = [
        {**row, "object_key": frame_key(sha, row["frame_index"]) if s.save_frames else None} for row in found.frames
    ]
    face_rows = [
        dict(
            frame_index=k,
            face_index=i,
            pts_s=t,
            x1=box[0],
            y1=box[1],
            x2=box[2],
            y2=box[3],
            score=score,
            landmarks=[round(v, 3) for v in marks],
            rotation=rot,
            crop_key=key,
            phash=hash_to_hex(h),
            embedding=emb,
            track=tr,
        )
        for k, i, t, box, score, marks, rot, key, h, emb, tr in zip(
            f["frame_index"].tolist(),
            f["face_index"].tolist(),
            f["pts_s"].tolist(),
            f["boxes"].tolist(),
            f["scores"].tolist(),
            f["landmarks"].tolist(),
            f["rotation"].tolist(),
            crop_keys,
            f["phash"].tolist(),
            f["embedding"].numpy(),
            f["track"].tolist(),
            strict=True,
        )
    ]

    audio = info.audio
    row = dict(
        sha256=sha,
        challenge=ctx.challenge.name,
        source_uri=item.uri,
        file_name=item.name,
        object_key=vkey,
        size_bytes=prepared.size,
        container=path.suffix.lower().lstrip(".") or None,
        video_codec=video.codec,
        width=video.width,
        height=video.height,
        rotation=video.rotation,
        fps=video.fps,
        num_frames=video.num_frames,
        video_start_s=video.start_s,
        video_end_s=video.end_s,
        duration_s=video.duration_s,
        has_audio=audio is not None,
        audio_sample_rate=audio.sample_rate if audio else None,
        audio_channels=audio.channels if audio else None,
        audio_start_s=audio.start_s if audio else None,
        sample_interval_s=s.sample_interval,
        logo_box=covered_box,
        stages_done=prepared.needed,
        run_id=ctx.run_id,
        **{
            k: v
            for k, v in {**item.metadata, **prepared.metadata}.items()
            if k in ("source_id", "author", "description", "sound_id")
        },
    )
    return VideoRows(
        prepared,
        row,
        frame_rows,
        subvideos,
        face_rows,
        found.noface_frames,
        ROTATIONS_TRIED if ctx.models.settings.rotate else [0],
        vkey,
        stored_path,
        objects,
        found.n_tracks,
    )


def flush_video(rows: VideoRows, ctx: RunContext) -> VideoOutcome:
    """Store the video's objects, then commit all its rows in one transaction: a run killed in between leaves
    objects without rows (rewritten by the next run), never rows without their objects."""
    item, sha = rows.prepared.item, rows.prepared.sha
    with ctx.timer("store"):
        try:
            if not ctx.store.exists(rows.video_key) or ctx.settings.force:
                ctx.store.put_file(rows.video_key, rows.stored_path)
            for key, data in rows.objects:
                ctx.store.put_bytes(key, data, "image/jpeg")
        except Exception as exc:  # noqa: BLE001 - a failed upload is this video's error, not the run's
            return _fail(ctx, item, "store", "upload_failed", f"uploading {item.name} failed: {exc}", sha)
    with ctx.timer("sql"):
        ctx.db.write_video(
            rows.video, rows.frames, rows.subvideos, rows.faces, rows.noface_frames, rows.rotations_tried
        )
    return VideoOutcome(
        item.name,
        "ok",
        sha,
        frames=len(rows.frames),
        faces=len(rows.faces),
        tracks=rows.tracks,
        prompts=len(rows.subvideos),
    )


def complete_video(prepared: PreparedVideo, found: VideoFaces, ctx: RunContext) -> VideoOutcome:
    """Everything after the faces stage: :func:`finish_video`, then :func:`flush_video`."""
    rows = finish_video(prepared, found, ctx)
    return rows if isinstance(rows, VideoOutcome) else flush_video(rows, ctx)


def process_video(item: SourceItem, ctx: RunContext) -> VideoOutcome:
    """One video through every per-video stage, one after the other (Ray workers and ``--no-stream``); never
    raises for a bad input (the error is recorded instead)."""
    prepared = prepare_video(item, ctx)
    if isinstance(prepared, VideoOutcome):
        return prepared
    found = video_faces(prepared, ctx)
    if isinstance(found, VideoOutcome):
        return found
    return complete_video(prepared, found, ctx)


def individuals_stage(
    db: Database, challenge: str, clustering: ClusterSettings, device: str = "cpu"
) -> tuple[int, int, int]:
    """Similarities, individuals and unique faces over every stored video of the challenge (one transaction).

    Returns (similar track pairs, individuals, unique faces). Two tracks of one video that share a frame are two
    people and never grouped; duplicates are looked for within each individual (imagededup's PHash rule, in time
    order), so two different people can never remove each other's crops.
    """
    rows = [r for r in db.challenge_faces(challenge) if r["embedding"] is not None]
    if not rows:
        db.write_individuals(challenge, [], [], [])
        return 0, 0, 0
    videos = sorted({r["video_sha256"] for r in rows})
    video_id = {v: i for i, v in enumerate(videos)}
    track_key: dict[tuple[str, int], int] = {}
    face_track = torch.tensor([track_key.setdefault((r["video_sha256"], r["track"]), len(track_key)) for r in rows])
    keys = list(track_key)
    embeddings = torch.from_numpy(np.stack([r["embedding"] for r in rows])).to(device)
    means = track_means(face_track.to(device), embeddings, len(keys))
    track_video = torch.tensor([video_id[v] for v, _ in keys], device=device)
    pairs = similar_pairs(means, track_video, clustering.floor)
    # Tracks of one video seen in the same frame are different people.
    in_frame: dict[tuple[str, int], set[int]] = {}
    for r, t in zip(rows, face_track.tolist(), strict=True):
        in_frame.setdefault((r["video_sha256"], r["frame_index"]), set()).add(t)
    conflicts = {(x, y) for group in in_frame.values() if len(group) > 1 for x in group for y in group if x < y}
    individual = group_tracks(len(keys), pairs, clustering.threshold, clustering.floor, conflicts)
    face_individual = individual[face_track]
    hashes = hex_to_hashes([r["phash"] or "0" * 16 for r in rows])
    drop = duplicates_to_remove(hashes, groups=face_individual).cpu()
    similarities = [
        dict(video_a=keys[a][0], track_a=keys[a][1], video_b=keys[b][0], track_b=keys[b][1], cosine=c)
        for a, b, c in zip(pairs.a.tolist(), pairs.b.tolist(), pairs.cosine.tolist(), strict=True)
    ]
    final = [
        dict(face_id=r["id"], video_sha256=r["video_sha256"], track=r["track"], individual=i)
        for r, i in zip(rows, face_individual.tolist(), strict=True)
    ]
    unique = [
        dict(face_id=r["id"], video_sha256=r["video_sha256"], individual=i, phash=r["phash"])
        for r, i, d in zip(rows, face_individual.tolist(), drop.tolist(), strict=True)
        if not d and r["phash"]
    ]
    db.write_individuals(challenge, similarities, final, unique)
    return len(similarities), int(individual.max()) + 1, len(unique)


def prompt_setup(
    challenge: Challenge, videos: str | Path, device: str, log: Log
) -> tuple[PromptTemplates | None, float, int]:
    """The baseline's prompt templates (once per run), the NCC threshold and the audio rate.

    A challenge without prompts has nothing to align; a baseline that cannot be read is reported once and the run
    goes on without the prompt stage (every other stage still runs).
    """
    cfg = align_config(challenge)
    if not challenge.prompts:
        return None, cfg.threshold, cfg.rate
    folder = Path(videos) if "://" not in str(videos) and Path(videos).is_dir() else None
    try:
        return baseline_templates(challenge, folder, cfg.rate, device), cfg.threshold, cfg.rate
    except ConfigError as exc:
        log(f"error  {exc}; prompts will not be aligned in this run")
        return None, cfg.threshold, cfg.rate


def open_stores(settings: Settings) -> tuple[Database, ObjectStore]:
    """Connect to the database and the object store, or raise ``StoreUnreachable`` with one clear line."""
    db = Database(settings.db_url).connect()
    store = open_object_store(settings.store_url, settings.s3_endpoint_url)
    store.check()
    return db, store


def _concrete_device(device: str) -> str:
    """``auto``/``cuda`` as this process can honour them (the Ray driver and workers resolve their own devices)."""
    if device == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return "cuda" if device == "auto" else device


@dataclass(frozen=True)
class VideoJob:
    """What a worker needs to process a run's videos, as plain picklable values (no connection, no model), so a
    Ray actor can build its own database connection, object store and models from it."""

    settings: Settings
    challenge: Challenge
    run_id: int
    faces: FaceSettings
    logo: LogoSettings | None
    clustering: ClusterSettings
    templates: PromptTemplates | None  # on the CPU when sent to workers; each moves them to its device
    align_threshold: float
    audio_rate: int


@dataclass
class VideoResult:
    """One video's outcome from a worker, with what the driver sums (stage times) and shows (log lines)."""

    item: SourceItem
    outcome: VideoOutcome
    stage_seconds: dict[str, float]
    lines: list[str]
    device: str


class _LineBuffer(list):
    """A worker's log: lines kept for the driver to print (a Ray actor's own output is not relayed)."""

    def __call__(self, line: str) -> None:
        self.append(line)


def video_worker(
    job: VideoJob,
    log: Log | None = None,
    models: FaceModels | None = None,
    stores: tuple[Database, ObjectStore] | None = None,
) -> RunContext:
    """Executor ``setup``: one worker's RunContext. Pieces not given are built from ``job`` (a Ray actor holds its
    own connection, object store and models, on the device the executor gave it); an in-process run passes the
    driver's, so it behaves exactly as it always has."""
    device = _concrete_device(worker_device(job.settings.device))
    settings = job.settings if device == job.settings.device else replace(job.settings, device=device)
    db, store = stores or open_stores(settings)
    models = models or FaceModels.load(device, job.faces)
    templates = None if job.templates is None else job.templates.to(device)
    return RunContext(
        settings,
        job.challenge,
        db,
        store,
        job.run_id,
        StageTimer(),
        log or _LineBuffer(),
        models,
        job.logo,
        job.clustering,
        templates,
        job.align_threshold,
        job.audio_rate,
    )


def video_task(ctx: RunContext, item: SourceItem) -> VideoResult:
    """Executor ``work``: one video through :func:`process_video` (its rows committed by the worker, in one
    transaction), returning its own stage times and buffered log lines for the driver."""
    buffered = isinstance(ctx.log, _LineBuffer)
    if buffered:
        ctx.log.clear()
    ctx.timer = StageTimer()
    outcome = process_video(item, ctx)
    lines = list(ctx.log) if buffered else []
    return VideoResult(item, outcome, dict(ctx.timer.seconds), lines, ctx.settings.device)


class _Completed:
    """The items in the order their results arrive (``last`` is the newest result): a progress display that wraps
    a collection of items then advances as videos complete, whichever worker finished them."""

    def __init__(self, items: Sequence[SourceItem], results: Iterator[VideoResult]) -> None:
        self.items, self.results = items, results
        self.last: VideoResult | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: object) -> bool:
        return item in self.items

    def __iter__(self) -> Iterator[SourceItem]:
        for result in self.results:
            self.last = result
            yield result.item


def _results(
    items: Sequence[SourceItem],
    results: Iterator[VideoResult],
    ordered: bool,
    progress: Callable[[Collection[SourceItem]], Iterator[SourceItem]] | None,
) -> Iterator[VideoResult]:
    """The executor's results, driving ``progress``. In order (in-process), the display names the video being
    processed, as it always has; unordered (Ray), it advances on each completion and names the video just done."""
    if ordered:
        for _item in progress(items) if progress else items:
            yield next(results)
        return
    done = _Completed(items, results)
    for _item in progress(done) if progress else done:
        assert done.last is not None
        yield done.last


#: Events the decoding thread sends the model thread, one video after another.
_OUTCOME, _START, _FRAMES, _END, _FAILED = "outcome", "start", "frames", "end", "failed"


@dataclass
class _Event:
    """From the decoding thread: video ``n`` needs no decoding (``outcome``: skipped or failed), or its frames
    start, come (``batch``), end, or failed to decode (``error``)."""

    n: int
    kind: str
    item: SourceItem
    prepared: PreparedVideo | None = None
    outcome: VideoOutcome | None = None
    batch: FrameBatch | None = None
    error: decode.DecodeError | None = None


def _decode_ahead(items: Sequence[SourceItem], ctx: RunContext, chunk: int) -> Iterator[_Event]:
    """The streaming pipeline's first stage (its own thread): prepare each video, then decode its frames."""
    claimed: set[str] = set()
    for n, item in enumerate(items):
        prepared = prepare_video(item, ctx, claimed)
        if isinstance(prepared, VideoOutcome):
            yield _Event(n, _OUTCOME, item, outcome=prepared)
            continue
        yield _Event(n, _START, item, prepared)
        batches = video_frames(prepared, ctx, chunk)
        try:
            while True:
                with ctx.timer("decode"):
                    batch = next(batches, None)
                if batch is None:
                    break
                yield _Event(n, _FRAMES, item, prepared, batch=batch)
        except decode.DecodeError as exc:
            yield _Event(n, _FAILED, item, prepared, error=exc)
            continue
        finally:
            batches.close()
        yield _Event(n, _END, item, prepared)


@dataclass
class _Slot:
    """One video of a streaming run, until its outcome is handed out (in the videos' order)."""

    item: SourceItem
    outcome: VideoOutcome | Future[VideoOutcome] | None = None

    @property
    def done(self) -> bool:
        return isinstance(self.outcome, VideoOutcome) or (self.outcome is not None and self.outcome.done())

    def result(self) -> VideoOutcome:
        """The outcome; a flush that raised (the database went away) raises here, as it would in process_video."""
        assert self.outcome is not None
        return self.outcome if isinstance(self.outcome, VideoOutcome) else self.outcome.result()


def stream_videos(
    ctx: RunContext, items: Sequence[SourceItem], *, prefetch_batches: int = 2, flush_depth: int = 2
) -> Iterator[VideoResult]:
    """Every video of ``items`` through the same stages as :func:`process_video`, with the stages overlapped.

    Three threads, joined by bounded queues: a decoding thread prepares the next videos (fetch, hash, skip check,
    probe) and decodes their frames, at most ``prefetch_batches`` decode chunks ahead; this thread runs the models
    (:class:`FaceBatcher`) on batches of :func:`batch_frames`, packed across consecutive videos where
    :func:`packs_videos` says so, else each video's own, as :func:`process_video` runs them (the results are then
    bit-identical to it); a flushing thread finishes each completed video (logo, prompts, tracks, rows) and stores
    it (objects, then one SQL transaction), at most ``flush_depth`` videos waiting. Memory is bounded by those
    depths, not by the number of videos. Outcomes come out in the videos' order; a video's failure is its
    ``video_errors`` row, as in the sequential path, and never stops the run. Stage times go to ``ctx.timer``
    (summed over threads, so they add up to more than the wall time).
    """
    device = ctx.settings.device
    batch = batch_frames(ctx.settings)
    batcher: FaceBatcher[int] = FaceBatcher(
        ctx.models,
        batch_frames=batch,
        pack=packs_videos(ctx.settings),
        timer=ctx.timer,
        keep_frames=keeps_frames(ctx),
        frame_jpegs=ctx.settings.save_frames,
    )
    slots: dict[int, _Slot] = {}  # videos not handed out yet, in order
    prepared: dict[int, PreparedVideo] = {}
    flusher: Flusher[VideoOutcome] = Flusher(flush_depth, name="flush")
    events = prefetch(_decode_ahead(items, ctx, batch), prefetch_batches, name="decode")

    def flush(completed: list[tuple[int, VideoFaces]]) -> None:
        for n, found in completed:
            slots[n].outcome = flusher.submit(partial(complete_video, prepared.pop(n), found, ctx))

    def handed_out() -> Iterator[VideoResult]:
        while slots:
            n, slot = next(iter(slots.items()))
            if not slot.done:
                return
            del slots[n]
            yield VideoResult(slot.item, slot.result(), {}, [], device)

    try:
        for event in events:
            n = event.n
            if event.kind == _OUTCOME:
                slots[n] = _Slot(event.item, event.outcome)
            elif event.kind == _START:
                slots[n] = _Slot(event.item)
                prepared[n] = event.prepared
            elif event.kind == _FRAMES:
                flush(batcher.add(n, event.batch))
            elif event.kind == _END:
                flush(batcher.end(n))
            else:
                flush(batcher.drop(n))
                p = prepared.pop(n)
                slots[n].outcome = _fail(ctx, event.item, "decode", event.error.kind, str(event.error), p.sha)
            yield from handed_out()
        flush(batcher.finish())
        for slot in slots.values():
            assert slot.outcome is not None, f"{slot.item.name}: never completed"
            if isinstance(slot.outcome, Future):
                slot.outcome.exception()  # blocks until its flush has run (an error is raised below, in order)
        yield from handed_out()
    finally:
        events.close()
        flusher.close(cancel=True)  # after a normal end nothing is left to cancel


def run_challenge(
    settings: Settings,
    challenge: Challenge,
    videos: str | Path,
    *,
    log: Log = print,
    progress: Callable[[Collection[SourceItem]], Iterator[SourceItem]] | None = None,
    executor: Executor | None = None,
) -> RunSummary:
    """Run every stage this engine has on the videos of ``videos`` (folder, URL list or s3:// prefix).

    In this process (the default executor) with ``settings.stream`` (the default), the videos go through
    :func:`stream_videos`: decoding, models and storage overlap and model batches span videos; without it, each
    video goes through :func:`process_video` in turn. Both give the same tables. ``executor``
    (``engine.pipeline.executor``)
    can instead spread the videos over workers: each one builds its own connection, object store and models from a
    picklable :class:`VideoJob` and runs the same :func:`process_video`, so every video's rows still land in one
    transaction. The driver sums the outcomes and
    stage times (with Ray: worker-seconds, which can exceed the wall time), advances ``progress``, then runs the
    challenge-wide individuals stage itself. Videos already committed are skipped, so a run killed half-way is
    resumed by running it again; the killed run's row, left "running", is marked "interrupted".
    """
    t0 = time.perf_counter()
    executor = executor or LocalExecutor()
    in_process = executor.kind == "local"
    streaming = in_process and settings.stream
    if streaming:
        share_malloc_arenas()  # before the models start their threads (engine.inference.runtime)
    db, store = open_stores(settings)
    items = list_sources(videos, settings.s3_endpoint_url)
    if settings.max_videos is not None and len(items) > settings.max_videos:
        log(
            f"runtype test: processing the first {settings.max_videos} of {len(items)} videos "
            "(use --runtype prod for all)"
        )
        items = items[: settings.max_videos]
    logo = logo_settings(challenge.raw)
    clustering = cluster_settings(challenge.raw)
    faces_cfg = face_settings(challenge)
    device = _concrete_device(settings.device)
    templates, threshold, rate = prompt_setup(challenge, videos, device, log)
    # In process, models load before the run is logged, so missing weights stop it before it starts (as always).
    models = FaceModels.load(device, faces_cfg) if in_process else None
    run_id = db.start_run(challenge.name, settings.runtype, settings.device, str(videos), settings.public_dict())
    stale = db.mark_runs_interrupted(challenge.name, run_id)
    if stale:
        log(
            f"note   {stale} earlier run(s) of {challenge.name} never finished (killed?): marked interrupted; "
            "the videos they committed are kept and skipped"
        )
    timer = StageTimer()
    shipped = templates if in_process or templates is None else templates.to("cpu")
    job = VideoJob(settings, challenge, run_id, faces_cfg, logo, clustering, shipped, threshold, rate)
    setup = (
        partial(video_worker, job, log=log, models=models, stores=(db, store))
        if in_process
        else partial(video_worker, job)
    )
    summary = RunSummary(run_id, challenge.name, settings.db_url, settings.store_url, device, videos_found=len(items))
    devices: set[str] = set()
    status = "interrupted"
    if streaming:
        ctx = setup()
        ctx.timer = timer  # every thread of the stream times its stages into the run's timer
        results = stream_videos(ctx, items)
    else:
        results = executor.map(setup, video_task, items, gpu=settings.device != "cpu")
    try:
        for result in _results(items, results, executor.ordered or streaming, progress):
            for line in result.lines:
                log(line)
            for stage, seconds in result.stage_seconds.items():
                timer.seconds[stage] += seconds
            devices.add(result.device)
            outcome = result.outcome
            summary.outcomes.append(outcome)
            summary.frames += outcome.frames
            summary.faces += outcome.faces
            summary.tracks += outcome.tracks
            summary.prompts += outcome.prompts
            setattr(summary, outcome.status, getattr(summary, outcome.status) + 1)
        with timer("individuals"):
            summary.similarities, summary.individuals, summary.unique_faces = individuals_stage(
                db, challenge.name, clustering, device
            )
        status = "ok" if summary.processed else "failed"
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # stops a Ray pool's actors at once when the run ends early
        if devices:
            summary.device = ", ".join(sorted(devices))
        summary.seconds = time.perf_counter() - t0
        summary.stage_seconds = {k: round(v, 3) for k, v in timer.seconds.items()}
        db.finish_run(
            run_id,
            status,
            device=summary.device,
            videos_ok=summary.ok,
            videos_skipped=summary.skipped,
            videos_failed=summary.failed,
            frames=summary.frames,
            stage_seconds=summary.stage_seconds,
        )
        db.dispose()
    return summary
