"""The SQL side of the store: one :class:`Database` class, composed of one mixin per concern.

- ``database``: the connection (engine, sessions, ``dispose``), the store's errors, ``redact``;
- ``migrations``: the versioned schema, applied by :meth:`Database.connect`;
- ``locks``: what lets runs share a database (run liveness, video claims, the challenge lock);
- ``runs``: run bookkeeping (``start_run``, ``finish_run``, ``mark_runs_interrupted``, ``require_run``, ...);
- ``videos``: per-video writes (``video_stages``, ``write_video``, ``record_error``);
- ``individuals``: the challenge-wide stage (``challenge_faces``, ``write_individuals``);
- ``reads``: results for export, report and inspection (``unique_faces``, ``face_timeline``, ``videos``,
  ``subvideos``, ``last_run``, ``counts``);
- ``monitor_state``: the watch-list monitor's rows (``monitor_*``).

Every write that belongs to one video happens in one transaction that first removes whatever rows that video had,
so a crash never leaves half a video and a re-run never duplicates anything.
"""

from __future__ import annotations

from typing import Self

from sqlalchemy.exc import SQLAlchemyError

from .database import (
    DatabaseCore,
    NothingStored,
    StoreError,
    StoreLost,
    StoreUnreachable,
    first_line,
    make_engine,
    redact,
)
from .individuals import IndividualsMixin
from .locks import LocksMixin
from .migrations import upgrade
from .monitor_state import MonitorStateMixin
from .reads import ReadsMixin
from .runs import RunsMixin
from .videos import VideosMixin

__all__ = ["Database", "NothingStored", "StoreError", "StoreLost", "StoreUnreachable", "make_engine", "redact"]


class Database(RunsMixin, VideosMixin, IndividualsMixin, ReadsMixin, MonitorStateMixin, LocksMixin, DatabaseCore):
    """The engine's tables behind one SQLAlchemy URL (SQLite by default, PostgreSQL in prod)."""

    def connect(self) -> Self:
        """Check the database answers and bring its tables to the newest revision (created on first use, older ones
        migrated, concurrent starters serialised: ``engine.store.migrations``); ``StoreUnreachable`` with one clear
        line when it does not answer."""
        try:
            upgrade(self.engine)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnreachable(f"cannot reach database {redact(self.url)}: {first_line(exc)}") from exc
        return self
