"""0001 · the schema before migrations existed: create it on a new database, or bring an older one up to it.

The tables are written out here as they were (not imported from ``engine.store.schema``, which moves on with later
revisions). A database made by an earlier version of the engine, with no revision recorded, is brought up to them
as ``upgrade_older_schema`` did: nullable columns added since are added to ``faces`` (their values stay empty until
the video is processed again), and the challenge-wide tables, which every run rebuilds from the faces, are dropped
and created afresh when their columns changed. Every stored row of the other tables is kept.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.engine import Connection

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SNAPSHOT = MetaData()

TABLES = (
    Table(
        "monitor_alerts",
        SNAPSHOT,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("video_sha256", String(64), nullable=False, index=True),
        Column("person", String(200), nullable=False),
        Column("source_uri", Text, nullable=False),
        Column("video_name", Text, nullable=False),
        Column("time_s", Float, nullable=False),
        Column("distance", Float, nullable=False),
        Column("score", Float, nullable=False),
        Column("box", JSON, nullable=False),
        Column("thumbnail_key", Text, nullable=True),
        Column("deliver", Boolean, nullable=False),
        Column("delivered", Boolean, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("last_error", Text, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("delivered_at", DateTime(timezone=True), nullable=True),
        UniqueConstraint("video_sha256", "person"),
    ),
    Table(
        "monitor_videos",
        SNAPSHOT,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("source_uri", Text, nullable=False, unique=True),
        Column("name", Text, nullable=False),
        Column("sha256", String(64), nullable=True, index=True),
        Column("size_bytes", BigInteger, nullable=True),
        Column("mtime_ns", BigInteger, nullable=True),
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("message", Text, nullable=True),
        Column("nearest", JSON, nullable=True),
        Column("seen_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    ),
    Table(
        "runs",
        SNAPSHOT,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("challenge", String(200), nullable=False),
        Column("runtype", String(16), nullable=False),
        Column("device", String(32), nullable=False),
        Column("source", Text, nullable=False),
        Column("settings", JSON, nullable=False),
        Column("status", String(16), nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True), nullable=True),
        Column("videos_ok", Integer, nullable=False),
        Column("videos_skipped", Integer, nullable=False),
        Column("videos_failed", Integer, nullable=False),
        Column("frames", Integer, nullable=False),
        Column("stage_seconds", JSON, nullable=False),
    ),
    Table(
        "video_errors",
        SNAPSHOT,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", Integer, ForeignKey("runs.id"), nullable=True, index=True),
        Column("source_uri", Text, nullable=False),
        Column("sha256", String(64), nullable=True),
        Column("stage", String(32), nullable=False),
        Column("kind", String(64), nullable=False),
        Column("message", Text, nullable=False),
        Column("fatal", Boolean, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    ),
    Table(
        "videos",
        SNAPSHOT,
        Column("sha256", String(64), primary_key=True),
        Column("challenge", String(200), nullable=False, index=True),
        Column("source_uri", Text, nullable=False),
        Column("file_name", Text, nullable=False),
        Column("object_key", Text, nullable=False),
        Column("size_bytes", BigInteger, nullable=False),
        Column("container", String(64), nullable=True),
        Column("video_codec", String(64), nullable=True),
        Column("width", Integer, nullable=False),
        Column("height", Integer, nullable=False),
        Column("rotation", Float, nullable=False),
        Column("fps", Float, nullable=True),
        Column("num_frames", Integer, nullable=True),
        Column("video_start_s", Float, nullable=False),
        Column("video_end_s", Float, nullable=False),
        Column("duration_s", Float, nullable=False),
        Column("has_audio", Boolean, nullable=False),
        Column("audio_sample_rate", Integer, nullable=True),
        Column("audio_channels", Integer, nullable=True),
        Column("audio_start_s", Float, nullable=True),
        Column("logo_box", JSON, nullable=True),
        Column("source_id", String(200), nullable=True),
        Column("author", String(200), nullable=True),
        Column("description", Text, nullable=True),
        Column("sound_id", String(200), nullable=True),
        Column("sample_interval_s", Float, nullable=False),
        Column("stages_done", JSON, nullable=False),
        Column("run_id", Integer, ForeignKey("runs.id"), nullable=True),
        Column("ingested_at", DateTime(timezone=True), nullable=False),
    ),
    Table(
        "frames",
        SNAPSHOT,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("video_sha256", String(64), ForeignKey("videos.sha256", ondelete="CASCADE"), nullable=False, index=True),
        Column("frame_index", Integer, nullable=False),
        Column("target_s", Float, nullable=False),
        Column("pts_s", Float, nullable=False),
        Column("width", Integer, nullable=False),
        Column("height", Integer, nullable=False),
        Column("object_key", Text, nullable=True),
        UniqueConstraint("video_sha256", "frame_index"),
    ),
    Table(
        "similarities",
        SNAPSHOT,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("video_a", String(64), ForeignKey("videos.sha256", ondelete="CASCADE"), nullable=False),
        Column("track_a", Integer, nullable=False),
        Column("video_b", String(64), ForeignKey("videos.sha256", ondelete="CASCADE"), nullable=False),
        Column("track_b", Integer, nullable=False),
        Column("cosine", Float, nullable=False),
        UniqueConstraint("video_a", "track_a", "video_b", "track_b"),
    ),
    Table(
        "subvideos",
        SNAPSHOT,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("video_sha256", String(64), ForeignKey("videos.sha256", ondelete="CASCADE"), nullable=False, index=True),
        Column("prompt", String(200), nullable=False),
        Column("start_s", Float, nullable=False),
        Column("end_s", Float, nullable=False),
        Column("score", Float, nullable=False),
        UniqueConstraint("video_sha256", "prompt"),
    ),
    Table(
        "faces",
        SNAPSHOT,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("frame_id", Integer, ForeignKey("frames.id", ondelete="CASCADE"), nullable=False),
        Column("video_sha256", String(64), ForeignKey("videos.sha256", ondelete="CASCADE"), nullable=False),
        Column("face_index", Integer, nullable=False),
        Column("pts_s", Float, nullable=False),
        Column("x1", Float, nullable=False),
        Column("y1", Float, nullable=False),
        Column("x2", Float, nullable=False),
        Column("y2", Float, nullable=False),
        Column("score", Float, nullable=False),
        Column("landmarks", JSON, nullable=False),
        Column("rotation", Integer, nullable=False),
        Column("crop_key", Text, nullable=True),
        Column("phash", String(16), nullable=True),
        Column("embedding", LargeBinary, nullable=True),
        Column("embedder", String(16), nullable=True),
        Column("interocular_px", Float, nullable=True),
        Column("sharpness", Float, nullable=True),
        Column("yaw", Float, nullable=True),
        Column("pitch", Float, nullable=True),
        Column("roll", Float, nullable=True),
        Column("exposure", Float, nullable=True),
        Column("clipped", Float, nullable=True),
        Column("quality", Float, nullable=True),
        UniqueConstraint("frame_id", "face_index"),
        Index("ix_faces_video", "video_sha256"),
    ),
    Table(
        "nofaces",
        SNAPSHOT,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("frame_id", Integer, ForeignKey("frames.id", ondelete="CASCADE"), nullable=False, unique=True),
        Column("video_sha256", String(64), ForeignKey("videos.sha256", ondelete="CASCADE"), nullable=False, index=True),
        Column("rotations_tried", JSON, nullable=False),
    ),
    Table(
        "faces_with_final_ind",
        SNAPSHOT,
        Column("face_id", Integer, ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True),
        Column("video_sha256", String(64), ForeignKey("videos.sha256", ondelete="CASCADE"), nullable=False, index=True),
        Column("track", Integer, nullable=False),
        Column("individual", Integer, nullable=True, index=True),
        Column("voted", Boolean, nullable=False),
    ),
    Table(
        "faces_with_intra_ind",
        SNAPSHOT,
        Column("face_id", Integer, ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True),
        Column("video_sha256", String(64), ForeignKey("videos.sha256", ondelete="CASCADE"), nullable=False, index=True),
        Column("track", Integer, nullable=False),
    ),
    Table(
        "unique_faces",
        SNAPSHOT,
        Column("face_id", Integer, ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True),
        Column("video_sha256", String(64), ForeignKey("videos.sha256", ondelete="CASCADE"), nullable=False, index=True),
        Column("individual", Integer, nullable=True),
        Column("phash", String(16), nullable=False),
    ),
)

#: Tables every run rebuilds from the faces: safe to drop and create afresh when an older database has other columns.
DERIVED = ("similarities", "faces_with_final_ind", "unique_faces")


def add_missing_face_columns(conn: Connection) -> None:
    """An older ``faces`` table gets the nullable columns added since (quality, embedder, ...), rows kept."""
    faces = SNAPSHOT.tables["faces"]
    have = {c["name"] for c in inspect(conn).get_columns("faces")}
    for column in faces.columns:
        if column.name not in have and column.nullable:
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE faces ADD COLUMN {column.name} {kind}"))


def drop_changed_derived(conn: Connection, present: set[str]) -> None:
    """Drop a challenge-wide table whose columns differ from this schema (or that forbids an empty value this schema
    allows): :func:`upgrade` creates it afresh and the next run fills it again."""
    for name in DERIVED:
        if name not in present:
            continue
        have = {c["name"]: c["nullable"] for c in inspect(conn).get_columns(name)}
        wanted = SNAPSHOT.tables[name].columns
        loosened = any(c.nullable and not have.get(c.name, True) for c in wanted if not c.primary_key)
        if set(have) != set(wanted.keys()) or loosened:
            SNAPSHOT.tables[name].drop(conn)


def upgrade() -> None:
    """Bring what an older version left up to this schema, then create every table still missing."""
    conn = op.get_bind()
    present = set(inspect(conn).get_table_names())
    if "faces" in present:
        add_missing_face_columns(conn)
    drop_changed_derived(conn, present)
    SNAPSHOT.create_all(conn, checkfirst=True)


def downgrade() -> None:
    raise NotImplementedError("the first revision is not undone: drop the database instead")
