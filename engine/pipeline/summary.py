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
    status: str  # "ok" | "skipped" (already stored) | "claimed" (another run is computing it) | "failed"
    sha256: str | None = None
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    prompts: int = 0
    message: str = ""


#: Exit codes of a run (``RunSummary.exit_code``; docs/cli.md). A run that cannot start, or whose database stops
#: working, raises one of the engine's user errors instead, which the CLI also ends with :data:`EXIT_SERVICE`.
EXIT_OK, EXIT_NOTHING, EXIT_SERVICE, EXIT_PARTIAL = 0, 1, 2, 3


@dataclass
class RunSummary:
    """What a run did (this run's videos), what its challenge now holds over all its runs, and how it ended: for the
    CLI's summary and exit code, and for tests."""

    run_id: int
    challenge: str
    db_url: str
    store_url: str
    device: str
    videos_found: int = 0
    ok: int = 0
    skipped: int = 0
    claimed: int = 0
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
    #: Videos of this run that failed for a service's fault (the object store): the challenge is partial.
    unstored: int = 0
    #: Whether the cross-video step ran (not on a partial challenge, unless the run allowed it).
    grouped: bool = False
    #: Why the baseline could not be read (no prompt was aligned in this run), or ``None``.
    baseline_error: str | None = None
    #: The challenge over all its runs: stored videos, faces, tracks (``None`` until the run has ended).
    totals: dict[str, int] | None = None

    @property
    def processed(self) -> int:
        """Videos the challenge has at the end of this run, by this run or another (stored, or being stored)."""
        return self.ok + self.skipped + self.claimed

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
        """0: every video is stored or was refused as bad input (each with its ``video_errors`` row); 1: nothing
        could be processed; 2: the baseline could not be read (a configuration error: no prompt was aligned);
        3: some videos could not be stored for a service's fault, so the challenge is partial (run again)."""
        if self.processed == 0 and not self.unstored:
            return EXIT_NOTHING
        if self.baseline_error:
            return EXIT_SERVICE
        return EXIT_PARTIAL if self.unstored else EXIT_OK

    @property
    def status(self) -> str:
        """The ``runs`` row's final status: ok, partial (incomplete: see :attr:`problem`) or failed (nothing done)."""
        return {EXIT_OK: "ok", EXIT_NOTHING: "failed"}.get(self.exit_code, "partial")

    @property
    def problem(self) -> str | None:
        """The one line that explains a non-zero :attr:`exit_code` (``None`` for 0), for stderr and ``runs``."""
        code = self.exit_code
        if code == EXIT_NOTHING:
            return "nothing could be processed: see the messages above and the video_errors table"
        if code == EXIT_SERVICE:
            return (
                f"{self.baseline_error}; no prompt was aligned in this run (every other stage ran): fix the "
                "challenge's `baseline` (or run without a challenge to find faces only)"
            )
        if code == EXIT_PARTIAL:
            grouping = (
                "individuals were grouped over the videos stored (partial allowed)"
                if self.grouped
                else "individuals were not recomputed on a partial challenge"
            )
            return (
                f"{self.unstored} video(s) could not be stored (the object store failed); {grouping}: run the same "
                "command again to finish them"
            )
        return None

    def lines(self) -> list[str]:
        """The closing lines: this run's videos, then the challenge's totals over all its runs."""
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in self.stage_seconds.items())
        others = f", {self.claimed} taken by another run" if self.claimed else ""
        out = [
            f"run {self.run_id} · challenge {self.challenge} · device {self.device}",
            f"this run · videos: {self.videos_found} found, {self.ok} processed, {self.skipped} already stored"
            f"{others}, {self.failed} failed",
            f"this run · frames sampled: {self.frames} · prompts found: {self.prompts} · faces: {self.faces} · "
            f"tracks: {self.tracks}",
        ]
        totals = self.totals or {}
        held = f"{totals['videos']} videos, {totals['faces']} faces, {totals['tracks']} tracks · " if totals else ""
        if self.grouped:
            grouping = (
                f"individuals: {self.individuals} (from {self.similarities} similar track pairs) · unique faces: "
                f"{self.unique_faces}"
            )
        else:
            grouping = "individuals: not recomputed (partial challenge)"
        out += [
            f"challenge {self.challenge} · {held}{grouping}",
            f"time: {self.seconds:.2f}s ({stages})" if stages else f"time: {self.seconds:.2f}s",
            f"database: {redact(self.db_url)}",
            f"objects: {redact_text(self.store_url)}",
        ]
        return out


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
