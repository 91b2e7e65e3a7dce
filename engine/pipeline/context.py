"""What every per-video stage of a run reads: its settings, stores, models, prompt templates, log and timer; and
the one way a stage records a video's failure."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import Challenge, ClusterSettings, LogoSettings, Settings
from engine.faces.batching import FaceModels
from engine.pipeline.summary import Log, StageTimer, VideoOutcome
from engine.prompts import PromptTemplates
from engine.sources import SourceItem
from engine.store import Database, ObjectStore


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


def fail_video(
    ctx: RunContext, item: SourceItem, stage: str, kind: str, message: str, sha: str | None = None
) -> VideoOutcome:
    ctx.db.record_error(ctx.run_id, item.uri, stage, kind, message, sha256=sha)
    ctx.log(f"error  {item.name}: {message}")
    return VideoOutcome(item.name, "failed", sha, message=message)
