"""The revisions, one file each, applied in the order their ``down_revision`` chain gives (loaded by Alembic)."""
