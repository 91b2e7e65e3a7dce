"""0003 · each face's descriptor magnitude (``faces.magnitude``): the embedder's output length before normalisation.

The HSE network's magnitude says how well it reads a face; the grouping lets faces it reads confidently vote from a
lower quality floor (``engine.faces.quality.vote_floors``). Rows stored before this revision keep NULL and the
ordinary floor.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Float

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("faces", Column("magnitude", Float, nullable=True))


def downgrade() -> None:
    op.drop_column("faces", "magnitude")
