"""Videos spread over workers: the picklable job a worker builds its own stores and models from, the task it runs
per video (the sequential stages, its rows committed in one transaction), and the driver's view of the results.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace

from engine.config import Challenge, Settings, resolve_device
from engine.faces.batching import (
    FaceModels,
)
from engine.pipeline.context import RunContext
from engine.pipeline.prepare import PreparedVideo, prepare_video
from engine.pipeline.stages import complete_video, video_faces
from engine.pipeline.summary import Log, StageTimer, VideoOutcome
from engine.prompts import PromptTemplates
from engine.sources import SourceItem
from engine.store import Database, ObjectStore, open_stores


@dataclass(frozen=True)
class VideoJob:
    """What a worker needs to process a run's videos, as plain picklable values (no connection, no model), so a
    Ray actor can build its own database connection, object store and models from it."""

    settings: Settings
    challenge: Challenge
    run_id: int
    templates: PromptTemplates | None  # on the CPU when sent to workers; each moves them to its device


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
    device = resolve_device(job.settings.device, "process")
    settings = job.settings if device == job.settings.device else replace(job.settings, device=device)
    db, store = stores or open_stores(settings.db_url, settings.store_url, settings.s3_endpoint_url)
    models = models or FaceModels.load(device, job.challenge.faces)
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
        templates,
    )


def claim_video(prepared: PreparedVideo, ctx: RunContext) -> VideoOutcome | None:
    """Take a prepared video for this run before its frames are decoded (``Database.claim_video``): ``None`` when
    this run has it, else its outcome: ``claimed`` when another run sharing the database is computing it now (this
    run skips it rather than compute it twice), ``skipped`` when another run committed it since it was prepared."""
    item, sha = prepared.item, prepared.sha
    if not ctx.db.claim_video(sha):
        ctx.log(f"note   {item.name}: another run is processing it now; skipped in this run")
        return VideoOutcome(item.name, "claimed", sha)
    done = None if ctx.settings.force else ctx.db.video_stages(sha)
    if done is not None and set(prepared.needed) <= set(done):
        ctx.db.release_video(sha)
        return VideoOutcome(item.name, "skipped", sha)
    return None


def claimed_process_video(item: SourceItem, ctx: RunContext) -> VideoOutcome:
    """``engine.pipeline.stages.process_video`` with the video claimed for this run between preparing and decoding
    (:func:`claim_video`), so that two runs sharing a database never compute one video twice."""
    prepared = prepare_video(item, ctx)
    if isinstance(prepared, VideoOutcome):
        return prepared
    taken = claim_video(prepared, ctx)
    if taken is not None:
        return taken
    found = video_faces(prepared, ctx)
    if isinstance(found, VideoOutcome):
        return found
    return complete_video(prepared, found, ctx)


def video_task(ctx: RunContext, item: SourceItem) -> VideoResult:
    """Executor ``work``: one video through :func:`claimed_process_video` (its rows committed by the worker, in one
    transaction), returning its own stage times and buffered log lines for the driver."""
    buffered = isinstance(ctx.log, _LineBuffer)
    if buffered:
        ctx.log.clear()
    ctx.timer = StageTimer()
    outcome = claimed_process_video(item, ctx)
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


def collect_results(
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
