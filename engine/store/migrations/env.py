"""Alembic's environment for the engine's migrations: they run on the connection that
``engine.store.migrations.upgrade`` hands over, inside its transaction and under its lock (no ``alembic.ini``, no
offline mode)."""

from alembic import context

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
