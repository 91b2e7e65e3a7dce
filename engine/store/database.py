"""The SQL connection: one engine per URL, sessions that commit or roll back whole, the store's errors and URL
redaction every caller shows.

:class:`DatabaseCore` is the base the concern mixins (``runs``, ``videos``, ``individuals``, ``reads``,
``monitor_state``) build on; ``db.Database`` composes them into the one class the engine uses. Its tables are
created and upgraded by versioned migrations (``engine.store.migrations``, Alembic), never by a bare
``create_all``, so a later schema change upgrades an existing database instead of breaking it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from engine.redact import redact_text

#: Seconds a PostgreSQL connection attempt may take before the database counts as gone (psycopg waits forever by
#: default, which would hang a run whose database host vanished instead of ending it with one line).
PG_CONNECT_TIMEOUT_S = 10


class StoreError(RuntimeError):
    """A problem with the database or the object store that the user can fix: its message is one line."""


class StoreUnreachable(StoreError):
    """The database or the object store cannot be used at all: the run cannot start."""


class StoreLost(StoreUnreachable):
    """The database stopped working in the middle of a run (connection refused or dropped, disk full): the run
    stops with this one line; the videos committed so far are kept and a re-run goes on from them."""


class NothingStored(StoreError):
    """A challenge asked about (``report``, ``export``) was never run against this database: nothing to show."""


def redact(url: str) -> str:
    """A database URL with its password hidden, for messages, logs and the ``runs`` table.

    SQLAlchemy's own parser first (it finds a password holding a ``/``, which the generic rule cannot), then the
    engine's one rule for URLs (:func:`engine.redact.redact_text`) for whatever it could not parse.
    """
    try:
        return redact_text(make_url(url).render_as_string(hide_password=True))
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: the generic rule still masks a userinfo
        return redact_text(url)


def first_line(exc: BaseException) -> str:
    """The driver's own message (not SQLAlchemy's wrapper with the SQL and a link), first line, secrets masked."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)


def is_lost(exc: BaseException) -> bool:
    """Whether a database error means the database itself failed (connection refused or dropped, disk full, I/O),
    rather than a statement or its data: the first ends the run, the second is a bug or a conflict to raise as is."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def make_engine(url: str) -> Engine:
    """Create an SQLAlchemy engine; for SQLite, create the folder and switch on foreign keys and WAL; for
    PostgreSQL, bound the connection attempt (:data:`PG_CONNECT_TIMEOUT_S`) unless the URL sets one."""
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
    connect_args = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


class DatabaseCore:
    """The engine's tables behind one SQLAlchemy URL (SQLite by default, PostgreSQL in prod): connection only."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreUnreachable(f"database URL {redact(url)!r} is not usable: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        # The session locks of engine.store.locks: one connection holds them, shared by the run's threads.
        self._holder: Connection | None = None
        self._claims: set[str] = set()
        self._scope_name = ""
        self._mutex = threading.Lock()

    def dispose(self) -> None:
        self.engine.dispose()

    def lost(self, exc: BaseException) -> StoreLost:
        """The one-line error of a database that failed mid-run (see :func:`is_lost`)."""
        return StoreLost(f"the database {redact(self.url)} stopped working: {first_line(exc)}")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error. A database that fails under
        it (connection lost, disk full) raises :class:`StoreLost`, one line instead of the driver's traceback."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            if is_lost(exc):
                raise self.lost(exc) from exc
            raise

    def _rows(self, stmt: Any) -> list[dict[str, Any]]:
        """A read-only query's rows as plain dicts (stages exchange plain data, never ORM objects)."""
        with self.session() as s:
            return [row._asdict() for row in s.execute(stmt)]
