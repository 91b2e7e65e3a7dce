"""What a run reports: each video's outcome, the run's summary (the CLI's closing lines), and wall time per
stage."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from engine.redact import redact_text
from engine.store import redact

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

    def add(self, outcome: VideoOutcome) -> None:
        """Count one video's outcome in."""
        self.outcomes.append(outcome)
        self.frames += outcome.frames
        self.faces += outcome.faces
        self.tracks += outcome.tracks
        self.prompts += outcome.prompts
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)

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
            f"objects: {redact_text(self.store_url)}",
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
