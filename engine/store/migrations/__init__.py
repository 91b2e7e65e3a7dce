"""Versioned migrations of the engine's tables (Alembic), applied by ``Database.connect``.

Every database, new or made by an older version, is brought to the newest revision the same way: revision
``0001`` is the schema as it was before migrations existed (it creates the tables of a new database and brings an
older one up to that schema, as ``upgrade_older_schema`` always did), and each later revision is one change on top.
A change to ``engine/store/schema.py`` therefore comes with a new file in ``versions/`` (copy the newest one, set
``revision`` and ``down_revision``, write ``upgrade()`` with ``alembic.op``), never with a bare ``create_all``, so an
existing production database is upgraded in place instead of breaking.

Two processes that start on one database at once do not race: on PostgreSQL the whole upgrade runs in one
transaction under an advisory lock (DDL is transactional there, so the second process waits, then finds the tables
at the newest revision); on SQLite it runs under a file lock beside the database. There is no ``alembic.ini``:
``engine.store.migrations.env`` takes the connection this module hands it.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from ..locks import file_lock, schema_lock, sqlite_file

HERE = Path(__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for these migrations, without a file; ``connection``: the one to migrate."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config


@cache
def head() -> str:
    """The newest revision (read once from ``versions/``)."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None, "no migration in engine/store/migrations/versions"
    return revision


def current(conn: Connection) -> str | None:
    """The revision a database is at (``None``: new, or made before migrations existed)."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database behind ``engine`` to :func:`head`: nothing to do when it is there already; otherwise every
    missing revision in order, in one transaction, with concurrent starters serialised (see the module's doc)."""
    path = sqlite_file(engine)
    with file_lock(path.with_name(path.name + ".schema.lock")) if path else nullcontext(), engine.begin() as conn:
        schema_lock(conn)
        if current(conn) != head():
            command.upgrade(alembic_config(conn), "head")
