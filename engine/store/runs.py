"""Run bookkeeping: one ``runs`` row per run, its final status and counts, and runs that died without one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from engine.redact import redact_mapping, redact_text

from .database import DatabaseCore, redact
from .schema import Run


class RunsMixin(DatabaseCore):
    """``start_run``, ``finish_run``, ``mark_runs_interrupted``."""

    def start_run(self, challenge: str, runtype: str, device: str, source: str, settings: dict) -> int:
        """Add the run's row. Its ``settings`` and ``source`` are stored with every secret masked (the database
        URL's password, a URL's userinfo, secret-named keys): whoever reads ``runs`` must not learn them."""
        settings = redact_mapping(settings)
        if isinstance(settings.get("db_url"), str):
            settings["db_url"] = redact(settings["db_url"])
        with self.session() as s:
            run = Run(
                challenge=challenge, runtype=runtype, device=device, source=redact_text(source), settings=settings
            )
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, status: str, **counts: Any) -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            run.status = status
            run.finished_at = datetime.now(UTC)
            for key, value in counts.items():
                setattr(run, key, value)

    def mark_runs_interrupted(self, challenge: str, before_run_id: int) -> int:
        """Mark the challenge's older runs still "running" as "interrupted"; return how many there were.

        A run killed without a chance to clean up (kill -9, a lost machine) leaves its row "running" for good; the
        next run of the challenge is the first to know it ended. A run that is in fact still going elsewhere writes
        its own final status when it finishes, so the mark is wrong at most while both run.
        """
        with self.session() as s:
            stale = s.scalars(
                select(Run).where(Run.challenge == challenge, Run.status == "running", Run.id < before_run_id)
            ).all()
            for run in stale:
                run.status = "interrupted"
            return len(stale)
