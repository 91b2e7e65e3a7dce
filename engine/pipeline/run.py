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
from engine.store import Database, open_stores


def prompt_setup(challenge: Challenge, videos: str | Path, device: str, log: Log) -> PromptTemplates | None:
    """The baseline's prompt templates, once per run (the threshold and rate are ``challenge.align``'s).

    A challenge without prompts has nothing to align; a baseline that cannot be read is reported once and the run
    goes on without the prompt stage (every other stage still runs).
    """
    if not challenge.prompts:
        return None
    folder = Path(videos) if "://" not in str(videos) and Path(videos).is_dir() else None
    try:
        return baseline_templates(challenge, folder, challenge.align.rate, device)
    except ConfigError as exc:
        log(f"error  {exc}; prompts will not be aligned in this run")
        return None


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
    """The run's row; earlier runs of the challenge left ``running`` (killed) are marked interrupted."""
    # Which descriptors this run makes, and the numbers its grouping decides with (the report shows them).
    grouping = dataclasses.asdict(grouping_for(challenge.faces.embedder, challenge.cluster))
    recorded = {**settings.public_dict(), "embedder": challenge.faces.embedder, "grouping": grouping}
    run_id = db.start_run(challenge.name, settings.runtype, settings.device, str(videos), recorded)
    stale = db.mark_runs_interrupted(challenge.name, run_id)
    if stale:
        log(
            f"note   {stale} earlier run(s) of {challenge.name} never finished (killed?): marked interrupted; "
            "the videos they committed are kept and skipped"
        )
    return run_id


def finish_run(db: Database, summary: RunSummary, status: str, timer: StageTimer, seconds: float) -> None:
    """Close the run's row with its status, counts and stage times (also when the run was stopped early)."""
    summary.seconds = seconds
    summary.stage_seconds = {k: round(v, 3) for k, v in timer.seconds.items()}
    db.finish_run(
        summary.run_id,
        status,
        device=summary.device,
        videos_ok=summary.ok,
        videos_skipped=summary.skipped,
        videos_failed=summary.failed,
        frames=summary.frames,
        stage_seconds=summary.stage_seconds,
    )


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
    ``engine.pipeline.stream``: decoding, models and storage overlap and model batches span videos; without it,
    each video goes through ``process_video`` in turn. Both give the same tables. ``executor``
    (``engine.pipeline.executor``) can instead spread the videos over workers: each one builds its own connection,
    object store and models from a picklable ``VideoJob`` and runs the same ``process_video``, so every video's rows
    still land in one transaction. The driver sums the outcomes and stage times (with Ray: worker-seconds, which can
    exceed the wall time), advances ``progress``, then runs the challenge-wide individuals stage itself. Videos
    already committed are skipped, so a run killed half-way is resumed by running it again; the killed run's row,
    left "running", is marked "interrupted".
    """
    t0 = time.perf_counter()
    executor = executor or LocalExecutor()
    in_process = executor.kind == "local"
    streaming = in_process and settings.stream
    if streaming:
        share_malloc_arenas()  # before the models start their threads (engine.inference.runtime)
    db, store = open_stores(settings.db_url, settings.store_url, settings.s3_endpoint_url)
    items = run_items(settings, videos, log)
    device = resolve_device(settings.device, "process")
    templates = prompt_setup(challenge, videos, device, log)
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
    devices: set[str] = set()
    status = "interrupted"
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
        with timer("individuals"):
            summary.similarities, summary.individuals, summary.unique_faces = individuals_stage(
                db, challenge.name, challenge.cluster, challenge.faces.embedder, device
            )
        status = "ok" if summary.processed else "failed"
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # stops a Ray pool's actors at once when the run ends early
        if devices:
            summary.device = ", ".join(sorted(devices))
        finish_run(db, summary, status, timer, time.perf_counter() - t0)
        db.dispose()
    return summary
