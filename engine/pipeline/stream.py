"""The streaming run: decoding, models and storage overlapped, memory flat however many videos a run has.

A decoding thread prepares the next videos and decodes their frames, sending events (a video needs no decoding,
its frames start, come, end, or failed to decode); this thread runs the models on batches (packed across videos on a
GPU); a flushing thread finishes and stores completed videos. The stages are the sequential path's own functions
(``engine.pipeline.prepare`` and ``engine.pipeline.stages``), so both give the same tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

from engine import media
from engine.faces.batching import FaceBatcher
from engine.media import FrameBatch
from engine.pipeline.context import RunContext, fail_video
from engine.pipeline.prepare import PreparedVideo, prepare_video
from engine.pipeline.stages import batch_frames, complete_video, keeps_frames, packs_videos, video_frames
from engine.pipeline.summary import VideoOutcome
from engine.pipeline.threads import Flusher, prefetch
from engine.pipeline.workers import VideoResult, claim_video
from engine.sources import SourceItem
from engine.types import VideoFaces

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
    error: media.DecodeError | None = None


def _decode_ahead(items: Sequence[SourceItem], ctx: RunContext, chunk: int) -> Iterator[_Event]:
    """The streaming pipeline's first stage (its own thread): prepare and claim each video, then decode its
    frames."""
    claimed: set[str] = set()
    for n, item in enumerate(items):
        prepared = prepare_video(item, ctx, claimed)
        if isinstance(prepared, VideoOutcome):
            yield _Event(n, _OUTCOME, item, outcome=prepared)
            continue
        taken = claim_video(prepared, ctx)  # another run sharing the database may be computing it
        if taken is not None:
            yield _Event(n, _OUTCOME, item, outcome=taken)
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
        except media.DecodeError as exc:
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
                slots[n].outcome = fail_video(ctx, event.item, "decode", event.error.kind, str(event.error), p.sha)
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
