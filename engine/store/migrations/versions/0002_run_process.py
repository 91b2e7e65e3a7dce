"""0002 · which process a run is (``runs.host``, ``runs.pid``) and why it ended (``runs.message``).

The next run tells a ``running`` row whose process is gone (killed, or lost its database) from one still going
(a concurrent run), and marks only the first ``interrupted``; ``message`` keeps the one line a failed or partial run
ended with (the database lost, videos the object store refused).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Integer, String, Text

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", Column("host", String(255), nullable=True))
    op.add_column("runs", Column("pid", Integer, nullable=True))
    op.add_column("runs", Column("message", Text, nullable=True))


def downgrade() -> None:
    for name in ("message", "pid", "host"):
        op.drop_column("runs", name)
