"""The SQL connection: one engine per URL, sessions that commit or roll back whole, and the errors and URL redaction
every caller shows.

:class:`DatabaseCore` is the base the concern mixins (``runs``, ``videos``, ``individuals``, ``reads``,
``monitor_state``) build on; ``db.Database`` composes them into the one class the engine uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from engine.redact import redact_text

from .schema import DERIVED_TABLES, Base, Face


class StoreUnreachable(RuntimeError):
    """The database or the object store cannot be used at all: the run cannot start."""


def redact(url: str) -> str:
    """A database URL with its password hidden, for messages, logs and the ``runs`` table.

    SQLAlchemy's own parser first (it finds a password holding a ``/``, which the generic rule cannot), then the
    engine's one rule for URLs (:func:`engine.redact.redact_text`) for whatever it could not parse.
    """
    try:
        return redact_text(make_url(url).render_as_string(hide_password=True))
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: the generic rule still masks a userinfo
        return redact_text(url)


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


def upgrade_older_schema(engine: Engine) -> None:
    """Bring a database made by an older version up to the current tables, keeping every stored row: nullable
    columns added since are added to ``faces`` (their values stay empty until the video is processed again), and the
    challenge-wide tables (rebuilt from the faces by every run) are dropped when their columns changed, to be
    created afresh. A full migration history (Alembic) replaces this once the schema needs more than additions."""
    names = set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        if Face.__tablename__ in names:
            have = {c["name"] for c in inspect(conn).get_columns(Face.__tablename__)}
            for column in Face.__table__.columns:
                if column.name not in have and column.nullable:
                    kind = column.type.compile(dialect=conn.dialect)
                    conn.execute(text(f"ALTER TABLE {Face.__tablename__} ADD COLUMN {column.name} {kind}"))
        for model in DERIVED_TABLES:
            if model.__tablename__ in names:
                have = {c["name"]: c["nullable"] for c in inspect(conn).get_columns(model.__tablename__)}
                wanted = model.__table__.columns
                loosened = any(c.nullable and not have.get(c.name, True) for c in wanted if not c.primary_key)
                if set(have) != set(wanted.keys()) or loosened:
                    model.__table__.drop(conn)


class DatabaseCore:
    """The engine's tables behind one SQLAlchemy URL (SQLite by default, PostgreSQL in prod): connection only."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreUnreachable(f"database URL {redact(url)!r} is not usable: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def connect(self) -> Self:
        """Check the database answers and create missing tables; raise ``StoreUnreachable`` with a clear line."""
        try:
            upgrade_older_schema(self.engine)
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

    def _rows(self, stmt: Any) -> list[dict[str, Any]]:
        """A read-only query's rows as plain dicts (stages exchange plain data, never ORM objects)."""
        with self.session() as s:
            return [row._asdict() for row in s.execute(stmt)]
