"""The SQL side of the store: one :class:`Database` class, composed of one mixin per concern.

- ``database``: the connection (engine, sessions, ``connect``/``dispose``), ``StoreUnreachable``, ``redact``;
- ``runs``: run bookkeeping (``start_run``, ``finish_run``, ``mark_runs_interrupted``);
- ``videos``: per-video writes (``video_stages``, ``write_video``, ``record_error``);
- ``individuals``: the challenge-wide stage (``challenge_faces``, ``write_individuals``);
- ``reads``: results for export, report and inspection (``unique_faces``, ``face_timeline``, ``videos``,
  ``subvideos``, ``last_run``, ``counts``);
- ``monitor_state``: the watch-list monitor's rows (``monitor_*``).

Every write that belongs to one video happens in one transaction that first removes whatever rows that video had,
so a crash never leaves half a video and a re-run never duplicates anything.
"""

from __future__ import annotations

from .database import DatabaseCore, StoreUnreachable, make_engine, redact
from .individuals import IndividualsMixin
from .monitor_state import MonitorStateMixin
from .reads import ReadsMixin
from .runs import RunsMixin
from .videos import VideosMixin

__all__ = ["Database", "StoreUnreachable", "make_engine", "redact"]


class Database(RunsMixin, VideosMixin, IndividualsMixin, ReadsMixin, MonitorStateMixin, DatabaseCore):
    """The engine's tables behind one SQLAlchemy URL (SQLite by default, PostgreSQL in prod)."""
