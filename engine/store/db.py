"""The SQL side of the store: one engine per URL, per-video transactions, runs and error rows.

Every write that belongs to one video happens in one transaction that first removes whatever rows that video had,
so a crash never leaves half a video and a re-run never duplicates anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, func, inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .schema import ALL_MODELS, PER_VIDEO_TABLES, Base, Frame, Run, Video, VideoError


class StoreUnreachable(RuntimeError):
    """The database or the object store cannot be used at all: the run cannot start."""


def redact(url: str) -> str:
    """A URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is shown as given, it holds no parsed password
        return url


def make_engine(url: str) -> Engine:
    """Create an SQLAlchemy engine; for SQLite, create the folder and switch on foreign keys and WAL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """The engine's tables behind one SQLAlchemy URL (SQLite by default, PostgreSQL in prod)."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreUnreachable(f"database URL {redact(url)!r} is not usable: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def connect(self) -> Database:
        """Check the database answers and create missing tables; raise ``StoreUnreachable`` with a clear line."""
        try:
            Base.metadata.create_all(self.engine)
        except (SQLAlchemyError, OSError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StoreUnreachable(f"cannot reach database {redact(self.url)}: {reason}") from exc
        return self

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    # --- runs -----------------------------------------------------------------------------------------------
    def start_run(self, challenge: str, runtype: str, device: str, source: str, settings: dict) -> int:
        with self.session() as s:
            run = Run(challenge=challenge, runtype=runtype, device=device, source=source, settings=settings)
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

    # --- videos ---------------------------------------------------------------------------------------------
    def video_stages(self, sha256: str) -> list[str] | None:
        """Stages already committed for this video, or ``None`` if the video is not stored."""
        with self.session() as s:
            video = s.get(Video, sha256)
            return None if video is None else list(video.stages_done or [])

    def write_video(self, video: Mapping[str, Any], frames: Iterable[Mapping[str, Any]]) -> None:
        """Replace one video's row and all its per-video rows in a single transaction."""
        sha = video["sha256"]
        with self.session() as s:
            for model in PER_VIDEO_TABLES:
                s.execute(delete(model).where(model.video_sha256 == sha))
            # A video that now succeeds no longer needs its old fatal error rows.
            s.execute(delete(VideoError).where(VideoError.source_uri == video["source_uri"], VideoError.fatal))
            s.merge(Video(**video))
            s.flush()
            s.add_all(Frame(video_sha256=sha, **frame) for frame in frames)

    def record_error(
        self,
        run_id: int | None,
        source_uri: str,
        stage: str,
        kind: str,
        message: str,
        sha256: str | None = None,
        fatal: bool = True,
    ) -> None:
        """One ``video_errors`` row, committed on its own so it survives whatever fails next.

        The same failure of the same input is recorded once (the newest run wins), so a re-run adds no rows.
        """
        with self.session() as s:
            s.execute(
                delete(VideoError).where(
                    VideoError.source_uri == source_uri, VideoError.stage == stage, VideoError.kind == kind
                )
            )
            s.add(
                VideoError(
                    run_id=run_id,
                    source_uri=source_uri,
                    sha256=sha256,
                    stage=stage,
                    kind=kind,
                    message=message[:4000],
                    fatal=fatal,
                )
            )

    # --- inspection -----------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Row count of every table (tables not created yet count 0)."""
        present = set(inspect(self.engine).get_table_names())
        out = {}
        with self.session() as s:
            for model in ALL_MODELS:
                name = model.__tablename__
                out[name] = s.scalar(select(func.count()).select_from(model)) if name in present else 0
        return out
