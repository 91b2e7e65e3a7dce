"""The run: stages wired together, with progress, per-video transactions and error rows.

Per video: fetch → hash (the video's identity) → probe → sample frames every ``interval`` seconds → faces (detect
with rotate-and-retry, align, embed, crop, PHash) → cover the logo → find the prompts in the audio → tracks → put the
(covered) video and the crops in the object store → commit every per-video row in one transaction.
Then, over all the challenge's videos: track similarities → individuals → unique faces, in one transaction.
A video that fails at any stage gets a ``video_errors`` row and a one-line message; the run goes on. A video whose
stages are already committed is skipped, so a re-run is cheap and changes no row count, and a run killed half-way is
resumed by running it again. Videos run in this process or on Ray actors (``engine.executor``): either way each one
goes through the same ``process_video`` and commits its own rows.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from . import decode
from .analyze import ROTATIONS_TRIED, FaceModels, FaceSettings, analyze_batches, assign_tracks, face_settings
from .audio import PromptTemplates, align_config, baseline_templates, find_prompts
from .cluster import ClusterSettings, cluster_settings, group_tracks, similar_pairs, track_means
from .config import Challenge, ConfigError, Settings
from .dedup import duplicates_to_remove, hash_to_hex, hex_to_hashes
from .executor import Executor, LocalExecutor, worker_device
from .hashing import sha256_file
from .logo import LogoSettings, cover_logo, logo_box, logo_settings
from .sources import FetchError, SourceItem, fetch, list_sources
from .store import Database, ObjectStore, face_key, frame_key, open_object_store, redact, video_key

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
    """Wall time spent per stage, summed over videos."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0


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


def process_video(item: SourceItem, ctx: RunContext) -> VideoOutcome:
    """Ingest and sample one video; never raises for a bad input (the error is recorded instead)."""
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
    done = ctx.db.video_stages(sha)
    if done is not None and needed <= set(done) and not s.force:
        return VideoOutcome(item.name, "skipped", sha)

    with ctx.timer("probe"):
        try:
            info = decode.probe(path)
        except decode.DecodeError as exc:
            return _fail(ctx, item, "probe", exc.kind, str(exc), sha)
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

    batches = decode.sample_frames(path, s.sample_interval, s.device)
    keep = ctx.logo is not None and ctx.logo.box is None
    try:
        found = analyze_batches(batches, ctx.models, timer=ctx.timer, keep_frames=keep, frame_jpegs=s.save_frames)
    except decode.DecodeError as exc:
        return _fail(ctx, item, "decode", exc.kind, str(exc), sha)

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
    with ctx.timer("store"):
        try:
            if not ctx.store.exists(vkey) or s.force:
                ctx.store.put_file(vkey, stored_path)
            for key, data in zip(crop_keys, found.crops, strict=True):
                ctx.store.put_bytes(key, data, "image/jpeg")
            for k, data in found.frame_jpegs.items():
                ctx.store.put_bytes(frame_key(sha, k), data, "image/jpeg")
        except Exception as exc:  # noqa: BLE001 - a failed upload is this video's error, not the run's
            return _fail(ctx, item, "store", "upload_failed", f"uploading {item.name} failed: {exc}", sha)
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
        size_bytes=size,
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
        stages_done=sorted(needed),
        run_id=ctx.run_id,
        **{
            k: v
            for k, v in {**item.metadata, **metadata}.items()
            if k in ("source_id", "author", "description", "sound_id")
        },
    )
    with ctx.timer("sql"):
        ctx.db.write_video(
            row,
            frame_rows,
            subvideos,
            face_rows,
            found.noface_frames,
            ROTATIONS_TRIED if ctx.models.settings.rotate else [0],
        )
    return VideoOutcome(
        item.name,
        "ok",
        sha,
        frames=len(frame_rows),
        faces=len(face_rows),
        tracks=found.n_tracks,
        prompts=len(subvideos),
    )


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

    ``executor`` (``engine.executor``; default: this process, in order) spreads the videos over workers: each one
    builds its own connection, object store and models from a picklable :class:`VideoJob` and runs the same
    :func:`process_video`, so every video's rows still land in one transaction. The driver sums the outcomes and
    stage times (with Ray: worker-seconds, which can exceed the wall time), advances ``progress``, then runs the
    challenge-wide individuals stage itself. Videos already committed are skipped, so a run killed half-way is
    resumed by running it again; the killed run's row, left "running", is marked "interrupted".
    """
    t0 = time.perf_counter()
    executor = executor or LocalExecutor()
    in_process = executor.kind == "local"
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
    results = executor.map(setup, video_task, items, gpu=settings.device != "cpu")
    try:
        for result in _results(items, results, executor.ordered, progress):
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
