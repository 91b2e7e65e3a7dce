"""Run bookkeeping: one ``runs`` row per run, its final status and counts, runs that died without one, and what a
challenge holds (for a run's summary, and for ``report``/``export`` of a challenge never run)."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import distinct, func, select

from engine.redact import redact_mapping, redact_text

from .database import NothingStored, redact
from .locks import LocksMixin
from .schema import Face, FaceIntraInd, Run, Video, VideoError

#: ``video_errors`` kinds that are a service's fault, not the input's: the video was fine, the object store failed
#: it. A run with such failures leaves its challenge partial (a re-run completes it).
SERVICE_FAILURES = ("upload_failed",)


class RunsMixin(LocksMixin):
    """``start_run``, ``finish_run``, ``mark_runs_interrupted``, ``service_failures``, ``challenge_totals``,
    ``require_run``."""

    def start_run(self, challenge: str, runtype: str, device: str, source: str, settings: dict) -> int:
        """Add the run's row, with the process that runs it (so that a later run can tell it from one that died).
        Its ``settings`` and ``source`` are stored with every secret masked (the database URL's password, a URL's
        userinfo, secret-named keys): whoever reads ``runs`` must not learn them."""
        settings = redact_mapping(settings)
        if isinstance(settings.get("db_url"), str):
            settings["db_url"] = redact(settings["db_url"])
        with self.session() as s:
            run = Run(
                challenge=challenge,
                runtype=runtype,
                device=device,
                source=redact_text(source),
                settings=settings,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
            )
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, status: str, message: str | None = None, **counts: Any) -> None:
        """Close the run's row: ``status`` (ok, partial, failed, interrupted), the line it ended with, its counts."""
        with self.session() as s:
            run = s.get(Run, run_id)
            run.status = status
            run.finished_at = datetime.now(UTC)
            run.message = None if message is None else redact_text(message)[:4000]
            for key, value in counts.items():
                setattr(run, key, value)

    def mark_runs_interrupted(self, challenge: str, before_run_id: int) -> int:
        """Mark the challenge's older runs still "running" whose process is gone as "interrupted"; return how many.

        A run killed without a chance to clean up (kill -9, a lost machine, its database gone) leaves its row
        "running"; the next run of the challenge is the first to know it ended. A run still going elsewhere (two
        runs at once) is left alone: on PostgreSQL its liveness lock is held, on SQLite its process still runs
        (``engine.store.locks``).
        """
        with self.session() as s:
            stale = s.scalars(
                select(Run).where(Run.challenge == challenge, Run.status == "running", Run.id < before_run_id)
            ).all()
            rows = [(run.id, run.host, run.pid) for run in stale]
        dead = [run_id for run_id, host, pid in rows if not self.run_alive(run_id, host, pid)]
        if dead:
            with self.session() as s:
                for run in s.scalars(select(Run).where(Run.id.in_(dead), Run.status == "running")):
                    run.status = "interrupted"
        return len(dead)

    def service_failures(self, run_id: int) -> int:
        """How many videos of this run failed for a service's fault (:data:`SERVICE_FAILURES`)."""
        stmt = select(func.count(distinct(VideoError.source_uri))).where(
            VideoError.run_id == run_id, VideoError.fatal, VideoError.kind.in_(SERVICE_FAILURES)
        )
        with self.session() as s:
            return int(s.scalar(stmt) or 0)

    def challenge_totals(self, challenge: str) -> dict[str, int]:
        """What the challenge holds over all its runs: stored videos, faces, tracks (a run's summary shows them
        apart from what the run itself did)."""
        in_challenge = select(Video.sha256).where(Video.challenge == challenge)
        tracks = (
            select(FaceIntraInd.video_sha256, FaceIntraInd.track)
            .where(FaceIntraInd.video_sha256.in_(in_challenge))
            .distinct()
            .subquery()
        )
        with self.session() as s:
            return {
                "videos": int(s.scalar(select(func.count()).select_from(Video).where(Video.challenge == challenge))),
                "faces": int(s.scalar(select(func.count()).where(Face.video_sha256.in_(in_challenge)))),
                "tracks": int(s.scalar(select(func.count()).select_from(tracks))),
            }

    def require_run(self, challenge: str) -> None:
        """Raise :class:`NothingStored` when ``challenge`` was never run against this database (no run, no video):
        a report or export of it would be empty, and the likely cause is a misspelt name or another ``--db``."""
        with self.session() as s:
            ran = s.scalar(select(Run.id).where(Run.challenge == challenge).limit(1))
            stored = s.scalar(select(Video.sha256).where(Video.challenge == challenge).limit(1))
        if ran is None and stored is None:
            raise NothingStored(
                f"challenge {challenge!r} has never been run against {redact(self.url)}: run it first "
                f"(`faceengine run -c {challenge} --videos ...`), or check --challenge and --db"
            )
