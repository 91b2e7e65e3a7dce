"""What every per-video stage of a run reads: its settings, stores, models, prompt templates, log and timer; and
the one way a stage records a video's failure."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import Challenge, Settings
from engine.faces.batching import FaceModels
from engine.pipeline.summary import Log, StageTimer, VideoOutcome
from engine.prompts import PromptTemplates
from engine.redact import redact_text
from engine.sources import SourceItem
from engine.store import Database, ObjectStore


@dataclass
class RunContext:
    """One worker's (or the streaming run's) view of a run: the challenge carries every stage's settings."""

    settings: Settings
    challenge: Challenge
    db: Database
    store: ObjectStore
    run_id: int
    timer: StageTimer
    log: Log
    models: FaceModels
    templates: PromptTemplates | None  # the baseline's prompts, on the models' device; None: no prompt stage


def fail_video(
    ctx: RunContext, item: SourceItem, stage: str, kind: str, message: str, sha: str | None = None
) -> VideoOutcome:
    """Record a video's fatal error (its ``video_errors`` row and a log line) and return its outcome; the message
    is shown with any URL's password masked (an exception's text may quote the URL it was fetching)."""
    message = redact_text(message)
    ctx.db.record_error(ctx.run_id, item.shown, stage, kind, message, sha256=sha)
    ctx.log(f"error  {item.name}: {message}")
    return VideoOutcome(item.name, "failed", sha, message=message)
