"""The run: a challenge's videos through every stage, then the challenge-wide individuals, with progress.

Per video: fetch → hash → probe → sample frames every ``interval`` seconds → faces (detect with rotate-and-retry,
align, embed, crop, PHash) → cover the logo → find the prompts in the audio → tracks → objects, then every row in one
transaction. Then, over all the challenge's videos: similarities → individuals → unique faces, in one transaction.
A video that fails at any stage gets a ``video_errors`` row and a one-line message; the run goes on. A video whose
stages are already committed is skipped, so a re-run is cheap and a run killed half-way resumes by running it again.

In this process the videos stream by default (``engine.pipeline.stream``); ``--no-stream`` runs each video through
``engine.pipeline.stages.process_video``, as Ray workers (``engine.pipeline.workers``) always do.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Iterator
from functools import partial
from pathlib import Path

from engine.config import Challenge, ConfigError, Settings, resolve_device
from engine.faces.batching import (
    FaceModels,
)
from engine.inference.runtime import share_malloc_arenas
from engine.pipeline.executor import Executor, LocalExecutor
from engine.pipeline.individuals import grouping_for, individuals_stage
from engine.pipeline.stream import stream_videos
from engine.pipeline.summary import Log, RunSummary, StageTimer
from engine.pipeline.workers import VideoJob, collect_results, video_task, video_worker
from engine.prompts import PromptTemplates, baseline_templates
from engine.sources import SourceItem, list_sources
from engine.store import Database, ObjectStore, StoreError, StoreLost, open_stores


def prompt_setup(
    challenge: Challenge, videos: str | Path, device: str, log: Log
) -> tuple[PromptTemplates | None, str | None]:
    """The baseline's prompt templates, once per run (the threshold and rate are ``challenge.align``'s), and why
    they could not be made (``None`` when they could, or when the challenge has no prompts).

    A baseline that cannot be read is said once and the run goes on without the prompt stage (every other stage
    still runs); the run then ends with a non-zero exit code (``RunSummary.exit_code``), never as if all went well.
    """
    if not challenge.prompts:
        return None, None
    folder = Path(videos) if "://" not in str(videos) and Path(videos).is_dir() else None
    try:
        return baseline_templates(challenge, folder, challenge.align.rate, device), None
    except ConfigError as exc:
        log(f"error  {exc}; prompts will not be aligned in this run")
        return None, str(exc)


def run_items(settings: Settings, videos: str | Path, log: Log) -> list[SourceItem]:
    """The videos this run processes: all of them, or the first few for a test run (said once)."""
    items = list_sources(videos, settings.s3_endpoint_url)
    if settings.max_videos is not None and len(items) > settings.max_videos:
        log(
            f"runtype test: processing the first {settings.max_videos} of {len(items)} videos "
            "(use --runtype prod for all)"
        )
        items = items[: settings.max_videos]
    return items


def start_run(db: Database, settings: Settings, challenge: Challenge, videos: str | Path, log: Log) -> int:
    """The run's row, held as alive for the run's life (``Database.hold_run``); earlier runs of the challenge left
    ``running`` whose process is gone (killed, or lost its database) are marked interrupted."""
    # Which descriptors this run makes, and the numbers its grouping decides with (the report shows them).
    grouping = dataclasses.asdict(grouping_for(challenge.faces.embedder, challenge.cluster))
    recorded = {**settings.public_dict(), "embedder": challenge.faces.embedder, "grouping": grouping}
    run_id = db.start_run(challenge.name, settings.runtype, settings.device, str(videos), recorded)
    db.hold_run(run_id)
    stale = db.mark_runs_interrupted(challenge.name, run_id)
    if stale:
        log(
            f"note   {stale} earlier run(s) of {challenge.name} never finished (killed?): marked interrupted; "
            "the videos they committed are kept and skipped"
        )
    return run_id


def finish_run(
    db: Database, summary: RunSummary, status: str, message: str | None, timer: StageTimer, seconds: float, log: Log
) -> None:
    """Close the run's row with its status, the line it ended with, its counts and stage times (also when the run
    was stopped early). A database that is gone by then cannot take it: the row stays "running" and the next run of
    the challenge, seeing its process gone, marks it interrupted."""
    summary.seconds = seconds
    summary.stage_seconds = {k: round(v, 3) for k, v in timer.seconds.items()}
    try:
        db.finish_run(
            summary.run_id,
            status,
            message,
            device=summary.device,
            videos_ok=summary.ok,
            videos_skipped=summary.skipped + summary.claimed,
            videos_failed=summary.failed,
            frames=summary.frames,
            stage_seconds=summary.stage_seconds,
        )
    except StoreError as exc:
        log(f"note   run {summary.run_id} could not record how it ended ({exc}); the next run marks it interrupted")


def group_challenge(
    db: Database, challenge: Challenge, summary: RunSummary, timer: StageTimer, device: str, allow_partial: bool,
    log: Log,
) -> None:  # fmt: skip
    """The cross-video step over every stored video of the challenge, under the challenge's lock (another run's
    video writes wait for it, ``engine.store.locks``). Not on a partial challenge (videos of this run that a service
    failed, ``Database.service_failures``) unless ``allow_partial``: individuals grouped without them would be
    reported as if complete. Then the challenge's totals over all its runs, for the summary."""
    summary.unstored = db.service_failures(summary.run_id)
    if summary.unstored and not allow_partial:
        log(
            f"error  {summary.unstored} video(s) could not be stored: individuals are not recomputed on a partial "
            "challenge (run again to finish it, or allow a partial grouping)"
        )
    else:
        with timer("individuals"), db.challenge_lock(challenge.name):
            summary.similarities, summary.individuals, summary.unique_faces = individuals_stage(
                db, challenge.name, challenge.cluster, challenge.faces.embedder, device
            )
        summary.grouped = True
    summary.totals = db.challenge_totals(challenge.name)


def run_challenge(
    settings: Settings,
    challenge: Challenge,
    videos: str | Path,
    *,
    log: Log = print,
    progress: Callable[[Collection[SourceItem]], Iterator[SourceItem]] | None = None,
    executor: Executor | None = None,
    allow_partial: bool = False,
) -> RunSummary:
    """Run every stage this engine has on the videos of ``videos`` (folder, URL list or s3:// prefix).

    In this process (the default executor) with ``settings.stream`` (the default), the videos go through
    ``engine.pipeline.stream``: decoding, models and storage overlap and model batches span videos; without it,
    each video goes through ``process_video`` in turn. Both give the same tables. ``executor``
    (``engine.pipeline.executor``) can instead spread the videos over workers: each one builds its own connection,
    object store and models from a picklable ``VideoJob`` and runs the same ``process_video``, so every video's rows
    still land in one transaction. The driver sums the outcomes and stage times (with Ray: worker-seconds, which can
    exceed the wall time), advances ``progress``, then runs the challenge-wide individuals stage itself (not when
    the object store failed some videos, unless ``allow_partial``). Videos already committed are skipped, so a run
    killed half-way is resumed by running it again; the killed run's row, left "running", is marked "interrupted".

    Runs may share a PostgreSQL database: each claims a video before computing it and skips those another run holds
    (``engine.store.locks``); on SQLite a second run on the same file stops with ``StoreUnreachable``. A database
    that stops working mid-run raises ``StoreLost`` (one line; the videos committed so far are kept).
    """
    executor = executor or LocalExecutor()
    if executor.kind == "local" and settings.stream:
        share_malloc_arenas()  # before the models start their threads (engine.inference.runtime)
    db, store = open_stores(settings.db_url, settings.store_url, settings.s3_endpoint_url)
    try:
        with db.sole_run():
            return _run(db, store, settings, challenge, videos, log, progress, executor, allow_partial)
    finally:
        db.release_locks()
        db.dispose()


def _run(
    db: Database, store: ObjectStore, settings: Settings, challenge: Challenge, videos: str | Path, log: Log,
    progress: Callable[[Collection[SourceItem]], Iterator[SourceItem]] | None, executor: Executor,
    allow_partial: bool,
) -> RunSummary:  # fmt: skip
    """:func:`run_challenge` once its stores are open: set up, every video, the cross-video step, the run's row."""
    t0 = time.perf_counter()
    in_process = executor.kind == "local"
    streaming = in_process and settings.stream
    items = run_items(settings, videos, log)
    device = resolve_device(settings.device, "process")
    templates, baseline_error = prompt_setup(challenge, videos, device, log)
    # In process, models load before the run is logged, so missing weights stop it before it starts (as always).
    models = FaceModels.load(device, challenge.faces, mirror=settings.weights_mirror) if in_process else None
    run_id = start_run(db, settings, challenge, videos, log)
    timer = StageTimer()
    job = VideoJob(settings, challenge, run_id, templates if in_process or templates is None else templates.to("cpu"))
    setup = (
        partial(video_worker, job, log=log, models=models, stores=(db, store))
        if in_process
        else partial(video_worker, job)
    )
    summary = RunSummary(run_id, challenge.name, settings.db_url, settings.store_url, device, videos_found=len(items))
    summary.baseline_error = baseline_error
    devices: set[str] = set()
    status, message = "interrupted", None
    if streaming:
        ctx = setup()
        ctx.timer = timer  # every thread of the stream times its stages into the run's timer
        results = stream_videos(ctx, items)
    else:
        results = executor.map(setup, video_task, items, gpu=settings.device != "cpu")
    try:
        for result in collect_results(items, results, executor.ordered or streaming, progress):
            for line in result.lines:
                log(line)
            for stage, seconds in result.stage_seconds.items():
                timer.seconds[stage] += seconds
            devices.add(result.device)
            summary.add(result.outcome)
        group_challenge(db, challenge, summary, timer, device, allow_partial, log)
        status, message = summary.status, summary.problem
    except StoreLost as exc:
        status, message = "failed", str(exc)
        raise StoreLost(f"{exc}; the videos committed before are kept: run the same command again") from exc
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # stops a Ray pool's actors at once when the run ends early
        if devices:
            summary.device = ", ".join(sorted(devices))
        finish_run(db, summary, status, message, timer, time.perf_counter() - t0, log)
    return summary
