"""The run: stages wired together, with progress, per-video transactions and error rows.

Per video: fetch → hash (the video's identity) → probe → sample frames every ``interval`` seconds → put the video
(and optionally frame JPEGs) in the object store → commit the ``videos`` and ``frames`` rows in one transaction.
A video that fails at any stage gets a ``video_errors`` row and a one-line message; the run goes on. A video whose
stages are already committed is skipped, so a re-run is cheap and changes no row.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import decode
from .config import Challenge, Settings
from .hashing import sha256_file
from .sources import FetchError, SourceItem, fetch, list_sources
from .store import Database, ObjectStore, frame_key, open_object_store, redact, video_key

Log = Callable[[str], None]


@dataclass
class VideoOutcome:
    name: str
    status: str  # "ok" | "skipped" | "failed"
    sha256: str | None = None
    frames: int = 0
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
            f"frames sampled: {self.frames}",
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

    needed = {"ingest", "frames"} | ({"frame_jpegs"} if s.save_frames else set())
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

    frame_rows: list[dict] = []
    jpegs: list[tuple[str, bytes]] = []
    batches = decode.sample_frames(path, s.sample_interval, s.device)
    try:
        while True:
            with ctx.timer("decode"):
                batch = next(batches, None)
            if batch is None:
                break
            h, w = int(batch.frames.shape[-2]), int(batch.frames.shape[-1])
            keys = [frame_key(sha, k) for k in batch.index.tolist()] if s.save_frames else None
            if keys:
                with ctx.timer("jpeg"):
                    jpegs.extend(zip(keys, decode.encode_jpegs(batch.frames), strict=True))
            for j, (k, target, pts) in enumerate(
                zip(batch.index.tolist(), batch.target_s.tolist(), batch.pts_s.tolist(), strict=True)
            ):
                frame_rows.append(
                    dict(
                        frame_index=k,
                        target_s=target,
                        pts_s=pts,
                        width=w,
                        height=h,
                        object_key=keys[j] if keys else None,
                    )
                )
    except decode.DecodeError as exc:
        return _fail(ctx, item, "decode", exc.kind, str(exc), sha)

    suffix = path.suffix.lower() if path.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm", ".avi") else ".mp4"
    vkey = video_key(sha, suffix)
    with ctx.timer("store"):
        try:
            if not ctx.store.exists(vkey):
                ctx.store.put_file(vkey, path)
            for key, data in jpegs:
                ctx.store.put_bytes(key, data, "image/jpeg")
        except Exception as exc:  # noqa: BLE001 - a failed upload is this video's error, not the run's
            return _fail(ctx, item, "store", "upload_failed", f"uploading {item.name} failed: {exc}", sha)

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
        stages_done=sorted(needed),
        run_id=ctx.run_id,
        **{
            k: v
            for k, v in {**item.metadata, **metadata}.items()
            if k in ("source_id", "author", "description", "sound_id")
        },
    )
    with ctx.timer("sql"):
        ctx.db.write_video(row, frame_rows)
    return VideoOutcome(item.name, "ok", sha, frames=len(frame_rows))


def open_stores(settings: Settings) -> tuple[Database, ObjectStore]:
    """Connect to the database and the object store, or raise ``StoreUnreachable`` with one clear line."""
    db = Database(settings.db_url).connect()
    store = open_object_store(settings.store_url, settings.s3_endpoint_url)
    store.check()
    return db, store


def run_challenge(
    settings: Settings,
    challenge: Challenge,
    videos: str | Path,
    *,
    log: Log = print,
    progress: Callable[[list[SourceItem]], Iterator[SourceItem]] | None = None,
) -> RunSummary:
    """Run every stage this engine has on the videos of ``videos`` (folder, URL list or s3:// prefix)."""
    t0 = time.perf_counter()
    db, store = open_stores(settings)
    items = list_sources(videos, settings.s3_endpoint_url)
    if settings.max_videos is not None and len(items) > settings.max_videos:
        log(
            f"runtype test: processing the first {settings.max_videos} of {len(items)} videos "
            "(use --runtype prod for all)"
        )
        items = items[: settings.max_videos]
    run_id = db.start_run(challenge.name, settings.runtype, settings.device, str(videos), settings.public_dict())
    timer = StageTimer()
    ctx = RunContext(settings, challenge, db, store, run_id, timer, log)
    summary = RunSummary(
        run_id, challenge.name, settings.db_url, settings.store_url, settings.device, videos_found=len(items)
    )
    status = "interrupted"
    try:
        for item in progress(items) if progress else items:
            outcome = process_video(item, ctx)
            summary.outcomes.append(outcome)
            summary.frames += outcome.frames
            setattr(summary, outcome.status, getattr(summary, outcome.status) + 1)
        status = "ok" if summary.processed else "failed"
    finally:
        summary.seconds = time.perf_counter() - t0
        summary.stage_seconds = {k: round(v, 3) for k, v in timer.seconds.items()}
        db.finish_run(
            run_id,
            status,
            videos_ok=summary.ok,
            videos_skipped=summary.skipped,
            videos_failed=summary.failed,
            frames=summary.frames,
            stage_seconds=summary.stage_seconds,
        )
        db.dispose()
    return summary
