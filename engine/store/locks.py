"""Locks between runs that share one database, so that two ``run`` processes on one challenge never collide.

On PostgreSQL they are advisory locks (``pg_advisory_*``), which the server drops by itself when the process holding
them dies (even ``kill -9``), so no lock outlives its run:

- **schema**: migrations run under one transaction lock, so two processes starting on a new database do not both
  create its tables (``engine.store.migrations``);
- **run**: a run holds a lock named after its id for its whole life; a ``running`` row whose lock is free belongs to
  a process that is gone, and is marked ``interrupted`` (:meth:`LocksMixin.run_alive`);
- **video**: a run claims a video before decoding it (:meth:`LocksMixin.claim_video`); a second run skips a video
  claimed by another instead of computing it again, and every write of a video's rows holds its lock too;
- **challenge**: the cross-video step holds its challenge's lock exclusively, and each video's write holds it
  shared, so the step never reads faces that a write replaces under it.

SQLite has no such locks: there a run holds an exclusive lock on a file beside the database
(``<db>.run.lock``), so a second run on the same file stops at once with one line instead of racing the first;
migrations are serialised by a second file lock (``<db>.schema.lock``). Keys are 32-bit hashes of the names, mixed
with the database and schema in use, so runs in two schemas of one server never wait for each other.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .database import DatabaseCore, StoreUnreachable, is_lost

#: Advisory-lock namespaces (the first of the two 32-bit keys), one per kind of lock.
#: A video's claim (held by the run computing it) and its write (held by the transaction writing its rows) are two
#: locks: the run that claimed a video must still be able to write it from another connection.
NS_SCHEMA, NS_RUN, NS_CHALLENGE, NS_VIDEO, NS_WRITE = 0x46450001, 0x46450002, 0x46450003, 0x46450004, 0x46450005


def lock_key(*parts: object) -> int:
    """A signed 32-bit key for ``parts`` (stable across processes and machines, unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def sqlite_file(engine: Engine) -> Path | None:
    """The SQLite database's file, or ``None`` (another backend, or an in-memory database)."""
    url = make_url(str(engine.url))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


@contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[IO[str] | None]:
    """An exclusive ``flock`` on ``path`` (created if needed) for the block; with ``blocking=False`` the block gets
    ``None`` when another process holds it. The kernel releases it when the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 - held for the block
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield fh
    finally:
        fh.close()


def schema_lock(conn: Connection) -> None:
    """Serialise migrations on PostgreSQL: a transaction lock held until ``conn``'s transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :k)"), {"ns": NS_SCHEMA, "k": lock_key(_scope(conn))})


def _scope(conn: Connection | Session) -> str:
    """Which database and schema a connection works in (mixed into every key)."""
    return "/".join(str(v) for v in conn.execute(text("SELECT current_database(), current_schema()")).one())


def process_alive(host: str | None, pid: int | None) -> bool | None:
    """Whether process ``pid`` of ``host`` still runs; ``None`` when this machine cannot tell (another host)."""
    if pid is None:
        return False  # a row from before runs recorded their process: that version is not running any more
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocksMixin(DatabaseCore):
    """``hold_run``, ``run_alive``, ``claim_video``, ``release_video``, ``challenge_lock``, ``video_write_lock``,
    ``release_locks``."""

    def _holding(self) -> Connection:
        """The connection holding this process's session locks (autocommit: it never sits in a transaction)."""
        if self._holder is None:
            self._holder = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._scope_name = _scope(self._holder)
        return self._holder

    def _locked(self, sql: str, ns: int, *name: object) -> Any:
        """Run one advisory-lock function on the holding connection (from any thread)."""
        try:
            with self._mutex:
                holder = self._holding()
                return holder.execute(text(sql), {"ns": ns, "k": lock_key(self._scope_name, *name)}).scalar()
        except SQLAlchemyError as exc:
            raise (self.lost(exc) if is_lost(exc) else exc) from exc

    def hold_run(self, run_id: int) -> None:
        """Hold this run's liveness lock until :meth:`release_locks` (PostgreSQL; SQLite uses :meth:`sole_run`)."""
        if self.is_postgres:
            self._locked("SELECT pg_advisory_lock(:ns, :k)", NS_RUN, run_id)

    @contextmanager
    def sole_run(self) -> Iterator[None]:
        """On SQLite, the one run allowed on the file at a time: a second stops with one line (``StoreUnreachable``)
        instead of racing the first for its writes. Nothing to do on PostgreSQL, where runs share by locks."""
        path = sqlite_file(self.engine)
        if path is None:
            yield
            return
        with file_lock(path.with_name(path.name + ".run.lock"), blocking=False) as held:
            if held is None:
                raise StoreUnreachable(
                    f"another run is using the SQLite database {path}: wait for it to finish, or use PostgreSQL "
                    "(--db postgresql://...) to run several at once"
                )
            yield

    def run_alive(self, run_id: int, host: str | None, pid: int | None) -> bool:
        """Whether the run of a ``running`` row is still going: on PostgreSQL, whether its lock is held; on SQLite,
        whether its process still runs (a row of another machine counts as alive: this one cannot tell)."""
        if self.is_postgres and pid is not None:
            free = self._locked("SELECT pg_try_advisory_lock(:ns, :k)", NS_RUN, run_id)
            if free:
                self._locked("SELECT pg_advisory_unlock(:ns, :k)", NS_RUN, run_id)
            return not free
        alive = process_alive(host, pid)
        return alive is not False

    def claim_video(self, sha: str) -> bool:
        """Take video ``sha`` for this run (PostgreSQL); ``False`` when another run holds it. Always ``True`` on
        SQLite, where one run at a time uses the file. Released when its rows or its error are written."""
        if not self.is_postgres:
            return True
        if sha in self._claims:
            return True
        got = bool(self._locked("SELECT pg_try_advisory_lock(:ns, :k)", NS_VIDEO, sha))
        if got:
            self._claims.add(sha)
        return got

    def release_video(self, sha: str | None) -> None:
        """Give video ``sha`` back (its rows or its error are committed); nothing if this run did not claim it."""
        if sha and self._holder is not None and sha in self._claims:
            self._claims.discard(sha)
            self._locked("SELECT pg_advisory_unlock(:ns, :k)", NS_VIDEO, sha)

    @contextmanager
    def challenge_lock(self, challenge: str) -> Iterator[None]:
        """Hold ``challenge`` exclusively for the block (the cross-video step), on a connection of its own: video
        writes of other runs wait until it ends (PostgreSQL; SQLite's file has one run at a time)."""
        if not self.is_postgres:
            yield
            return
        try:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            raise (self.lost(exc) if is_lost(exc) else exc) from exc
        try:
            key = {"ns": NS_CHALLENGE, "k": lock_key(_scope(conn), challenge)}
            conn.execute(text("SELECT pg_advisory_lock(:ns, :k)"), key)
            yield
            conn.execute(text("SELECT pg_advisory_unlock(:ns, :k)"), key)
        except SQLAlchemyError as exc:
            raise (self.lost(exc) if is_lost(exc) else exc) from exc
        finally:
            conn.close()

    def video_write_lock(self, session: Session, sha: str, challenge: str) -> None:
        """Inside a video's write transaction (PostgreSQL): the video's lock, so two writers of one video take turns
        (the second then replaces the first's rows instead of failing on their keys), and its challenge's lock
        shared, so the write waits while a cross-video step reads and groups the challenge's faces."""
        if not self.is_postgres:
            return
        scope = _scope(session)
        params = {"ns": NS_CHALLENGE, "k": lock_key(scope, challenge)}
        session.execute(text("SELECT pg_advisory_xact_lock_shared(:ns, :k)"), params)
        session.execute(text("SELECT pg_advisory_xact_lock(:ns, :k)"), {"ns": NS_WRITE, "k": lock_key(scope, sha)})

    def release_locks(self) -> None:
        """Let go of every session lock (the run's liveness lock, claims left): the run has ended."""
        holder, self._holder = self._holder, None
        if holder is not None:
            with suppress(SQLAlchemyError):  # the database is gone: so are the locks
                holder.close()  # closing the session drops all its advisory locks
