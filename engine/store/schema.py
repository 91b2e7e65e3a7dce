"""SQLAlchemy 2 models for every table of the challenge pipeline.

A video is keyed by the SHA-256 of its bytes, so the same file under any name or URL is one row, and every
per-video table hangs off that key: re-running a video replaces its rows inside one transaction instead of adding
new ones. Times are seconds (floats), boxes are pixels of the decoded (display-rotated) frame, and embeddings are
float32 vectors stored as raw little-endian bytes, which works on every SQL backend. The tables are created and
upgraded by the revisions of ``engine.store.migrations``: a change here comes with a new revision there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

SHA = String(64)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Float32Vector(TypeDecorator):
    """A float32 vector as raw bytes: portable across SQLite and PostgreSQL, exact, and compact."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> bytes | None:
        if value is None:
            return None
        if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU
            value = value.detach().to("cpu").numpy()
        return np.ascontiguousarray(value, dtype="<f4").tobytes()

    def process_result_value(self, value: bytes | None, dialect: Any) -> np.ndarray | None:
        if value is None:
            return None
        return np.frombuffer(value, dtype="<f4").copy()


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One invocation of the engine: what was asked, with which settings, and how it ended."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    challenge: Mapped[str] = mapped_column(String(200))
    runtype: Mapped[str] = mapped_column(String(16))
    device: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    videos_ok: Mapped[int] = mapped_column(Integer, default=0)
    videos_skipped: Mapped[int] = mapped_column(Integer, default=0)
    videos_failed: Mapped[int] = mapped_column(Integer, default=0)
    frames: Mapped[int] = mapped_column(Integer, default=0)
    stage_seconds: Mapped[dict] = mapped_column(JSON, default=dict)
    # Which process runs it (a "running" row whose process is gone was killed: engine.store.locks), and the one line
    # a failed or partial run ended with. Added by migration 0002.
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class Video(Base):
    """A stored video. ``object_key`` points at the (logo-covered) copy in the object store."""

    __tablename__ = "videos"
    sha256: Mapped[str] = mapped_column(SHA, primary_key=True)
    challenge: Mapped[str] = mapped_column(String(200), index=True)
    source_uri: Mapped[str] = mapped_column(Text)
    file_name: Mapped[str] = mapped_column(Text)
    object_key: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    container: Mapped[str | None] = mapped_column(String(64), nullable=True)
    video_codec: Mapped[str | None] = mapped_column(String(64), nullable=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    rotation: Mapped[float] = mapped_column(Float, default=0.0)
    fps: Mapped[float | None] = mapped_column(Float, nullable=True)
    num_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    video_start_s: Mapped[float] = mapped_column(Float)
    video_end_s: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    has_audio: Mapped[bool] = mapped_column(Boolean)
    audio_sample_rate: Mapped[int | None] = mapped_column(Integer, nullable=True)
    audio_channels: Mapped[int | None] = mapped_column(Integer, nullable=True)
    audio_start_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    logo_box: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # Source metadata when the source gives any (scraper JSON, yt-dlp info).
    source_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    author: Mapped[str | None] = mapped_column(String(200), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    sound_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    sample_interval_s: Mapped[float] = mapped_column(Float)
    stages_done: Mapped[list] = mapped_column(JSON, default=list)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Subvideo(Base):
    """Where one prompt of the baseline audio plays inside a video."""

    __tablename__ = "subvideos"
    __table_args__ = (UniqueConstraint("video_sha256", "prompt"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    video_sha256: Mapped[str] = mapped_column(ForeignKey("videos.sha256", ondelete="CASCADE"), index=True)
    prompt: Mapped[str] = mapped_column(String(200))
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)


class Frame(Base):
    """A frame sampled every ``sample_interval_s`` from the video stream's real start."""

    __tablename__ = "frames"
    __table_args__ = (UniqueConstraint("video_sha256", "frame_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    video_sha256: Mapped[str] = mapped_column(ForeignKey("videos.sha256", ondelete="CASCADE"), index=True)
    frame_index: Mapped[int] = mapped_column(Integer)  # k in start + k * interval
    target_s: Mapped[float] = mapped_column(Float)  # start + k * interval
    pts_s: Mapped[float] = mapped_column(Float)  # presentation time of the decoded frame
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str | None] = mapped_column(Text, nullable=True)


class Face(Base):
    """One detected face in a sampled frame, with its aligned crop in the object store."""

    __tablename__ = "faces"
    __table_args__ = (UniqueConstraint("frame_id", "face_index"), Index("ix_faces_video", "video_sha256"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"))
    video_sha256: Mapped[str] = mapped_column(ForeignKey("videos.sha256", ondelete="CASCADE"))
    face_index: Mapped[int] = mapped_column(Integer)
    pts_s: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    landmarks: Mapped[list] = mapped_column(JSON)  # 10 numbers: x, y of eyes, nose, mouth corners
    rotation: Mapped[int] = mapped_column(Integer, default=0)  # 0, 90 or 270: the retry that found it
    crop_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    phash: Mapped[str | None] = mapped_column(String(16), nullable=True)  # imagededup's PHash of the crop
    embedding: Mapped[np.ndarray | None] = mapped_column(Float32Vector, nullable=True)
    # Which network made ``embedding`` (``engine.faces.embedders``): descriptors of two embedders are never compared.
    embedder: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Face quality (``engine.faces.quality``, documented in docs/quality.md); ``quality`` in [0, 1] combines them.
    interocular_px: Mapped[float | None] = mapped_column(Float, nullable=True)
    sharpness: Mapped[float | None] = mapped_column(Float, nullable=True)
    yaw: Mapped[float | None] = mapped_column(Float, nullable=True)
    pitch: Mapped[float | None] = mapped_column(Float, nullable=True)
    roll: Mapped[float | None] = mapped_column(Float, nullable=True)
    exposure: Mapped[float | None] = mapped_column(Float, nullable=True)
    clipped: Mapped[float | None] = mapped_column(Float, nullable=True)
    magnitude: Mapped[float | None] = mapped_column(Float, nullable=True)  # the embedder's descriptor length
    quality: Mapped[float | None] = mapped_column(Float, nullable=True)


class NoFace(Base):
    """A sampled frame in which no face was found, even rotated."""

    __tablename__ = "nofaces"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"), unique=True)
    video_sha256: Mapped[str] = mapped_column(ForeignKey("videos.sha256", ondelete="CASCADE"), index=True)
    rotations_tried: Mapped[list] = mapped_column(JSON, default=list)


class FaceIntraInd(Base):
    """A face's track inside its own video (the seed's "intra-video individual")."""

    __tablename__ = "faces_with_intra_ind"
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    video_sha256: Mapped[str] = mapped_column(ForeignKey("videos.sha256", ondelete="CASCADE"), index=True)
    track: Mapped[int] = mapped_column(Integer)


class Similarity(Base):
    """A candidate pair of tracks of the grouping and its similarity (the cosine between the tracks' quality-weighted
    mean directions over their voting faces; pairs whose faces' mean pairwise cosine is under the candidate floor
    are not stored)."""

    __tablename__ = "similarities"
    __table_args__ = (UniqueConstraint("video_a", "track_a", "video_b", "track_b"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    video_a: Mapped[str] = mapped_column(ForeignKey("videos.sha256", ondelete="CASCADE"))
    track_a: Mapped[int] = mapped_column(Integer)
    video_b: Mapped[str] = mapped_column(ForeignKey("videos.sha256", ondelete="CASCADE"))
    track_b: Mapped[int] = mapped_column(Integer)
    cosine: Mapped[float] = mapped_column(Float)


class FaceFinalInd(Base):
    """A face's individual across all videos of the challenge (``None``: its track had no face good enough to vote);
    ``voted``: whether the face took part in deciding it (quality over the floor, agreeing with its track)."""

    __tablename__ = "faces_with_final_ind"
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    video_sha256: Mapped[str] = mapped_column(ForeignKey("videos.sha256", ondelete="CASCADE"), index=True)
    track: Mapped[int] = mapped_column(Integer)
    individual: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)
    voted: Mapped[bool] = mapped_column(Boolean, default=True)


class UniqueFace(Base):
    """A face crop that survived perceptual-hash deduplication."""

    __tablename__ = "unique_faces"
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    video_sha256: Mapped[str] = mapped_column(ForeignKey("videos.sha256", ondelete="CASCADE"), index=True)
    individual: Mapped[int | None] = mapped_column(Integer, nullable=True)
    phash: Mapped[str] = mapped_column(String(16))


class VideoError(Base):
    """A video (or path) that could not be processed at some stage, and why; the run goes on without it."""

    __tablename__ = "video_errors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True, index=True)
    source_uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(SHA, nullable=True)
    stage: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    fatal: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


#: Tables whose rows the challenge-wide step rebuilds from the faces on every run.
DERIVED_TABLES = (Similarity, FaceFinalInd, UniqueFace)

#: The per-video tables, children first: the order in which a video's rows are replaced.
PER_VIDEO_TABLES = (UniqueFace, FaceFinalInd, FaceIntraInd, NoFace, Face, Frame, Subvideo)
ALL_MODELS = (Run, Video, Subvideo, Frame, Face, NoFace, FaceIntraInd, Similarity, FaceFinalInd, UniqueFace, VideoError)


class MonitorVideo(Base):
    """A video the watch-list monitor has looked at, one row per source URI, so that neither a later poll nor a
    restarted monitor processes it again.

    ``status``: ``done`` (checked against the watch list), ``duplicate`` (same bytes as a video already checked under
    another URI), ``retry`` (failed, tried again at the next poll) or ``failed`` (gave up after the monitor's bounded
    number of attempts; ``message`` says why). ``size_bytes``/``mtime_ns`` of a local file tell a replaced file
    (checked anew) from an unchanged one; ``nearest`` keeps each watched person's best distance in the video.
    """

    __tablename__ = "monitor_videos"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_uri: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(SHA, nullable=True, index=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    nearest: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MonitorAlert(Base):
    """A watched person found in a video: at most one per (video content, person), whatever the video's name, so
    no alert is ever raised twice. ``deliver`` is set when a webhook was configured when it was raised; then
    ``delivered`` stays false until the webhook answered 2xx (undelivered alerts are retried at the next poll)."""

    __tablename__ = "monitor_alerts"
    __table_args__ = (UniqueConstraint("video_sha256", "person"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    video_sha256: Mapped[str] = mapped_column(SHA, index=True)
    person: Mapped[str] = mapped_column(String(200))
    source_uri: Mapped[str] = mapped_column(Text)
    video_name: Mapped[str] = mapped_column(Text)
    time_s: Mapped[float] = mapped_column(Float)
    distance: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    box: Mapped[list] = mapped_column(JSON)
    thumbnail_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    deliver: Mapped[bool] = mapped_column(Boolean, default=False)
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
