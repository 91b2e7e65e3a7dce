"""The SQL side of the store: one engine per URL, per-video transactions, runs and error rows.

Every write that belongs to one video happens in one transaction that first removes whatever rows that video had,
so a crash never leaves half a video and a re-run never duplicates anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, func, inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .schema import (
    ALL_MODELS,
    PER_VIDEO_TABLES,
    Base,
    Face,
    FaceFinalInd,
    FaceIntraInd,
    Frame,
    MonitorAlert,
    MonitorVideo,
    NoFace,
    Run,
    Similarity,
    Subvideo,
    UniqueFace,
    Video,
    VideoError,
)


class StoreUnreachable(RuntimeError):
    """The database or the object store cannot be used at all: the run cannot start."""


def redact(url: str) -> str:
    """A URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL we cannot parse is shown as given, it holds no parsed password
        return url


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


class Database:
    """The engine's tables behind one SQLAlchemy URL (SQLite by default, PostgreSQL in prod)."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreUnreachable(f"database URL {redact(url)!r} is not usable: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def connect(self) -> Database:
        """Check the database answers and create missing tables; raise ``StoreUnreachable`` with a clear line."""
        try:
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

    # --- runs -----------------------------------------------------------------------------------------------
    def start_run(self, challenge: str, runtype: str, device: str, source: str, settings: dict) -> int:
        with self.session() as s:
            run = Run(challenge=challenge, runtype=runtype, device=device, source=source, settings=settings)
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, status: str, **counts: Any) -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            run.status = status
            run.finished_at = datetime.now(UTC)
            for key, value in counts.items():
                setattr(run, key, value)

    def mark_runs_interrupted(self, challenge: str, before_run_id: int) -> int:
        """Mark the challenge's older runs still "running" as "interrupted"; return how many there were.

        A run killed without a chance to clean up (kill -9, a lost machine) leaves its row "running" for good; the
        next run of the challenge is the first to know it ended. A run that is in fact still going elsewhere writes
        its own final status when it finishes, so the mark is wrong at most while both run.
        """
        with self.session() as s:
            stale = s.scalars(
                select(Run).where(Run.challenge == challenge, Run.status == "running", Run.id < before_run_id)
            ).all()
            for run in stale:
                run.status = "interrupted"
            return len(stale)

    # --- videos ---------------------------------------------------------------------------------------------
    def video_stages(self, sha256: str) -> list[str] | None:
        """Stages already committed for this video, or ``None`` if the video is not stored."""
        with self.session() as s:
            video = s.get(Video, sha256)
            return None if video is None else list(video.stages_done or [])

    def write_video(
        self,
        video: Mapping[str, Any],
        frames: Iterable[Mapping[str, Any]],
        subvideos: Iterable[Mapping[str, Any]] = (),
        faces: Iterable[Mapping[str, Any]] = (),
        noface_frames: Iterable[int] = (),
        rotations_tried: list[int] | None = None,
    ) -> None:
        """Replace one video's row and all its per-video rows in a single transaction.

        ``faces`` rows carry ``frame_index`` (to find their frame) and ``track`` (their ``faces_with_intra_ind``
        row); ``noface_frames`` are frame indices where no face was found with ``rotations_tried``. The video's
        cross-video rows (similarities, individuals, unique faces) go too: the challenge stage rebuilds them.
        """
        sha = video["sha256"]
        with self.session() as s:
            s.execute(delete(Similarity).where((Similarity.video_a == sha) | (Similarity.video_b == sha)))
            for model in PER_VIDEO_TABLES:
                s.execute(delete(model).where(model.video_sha256 == sha))
            # A video that now succeeds no longer needs its old fatal error rows.
            s.execute(delete(VideoError).where(VideoError.source_uri == video["source_uri"], VideoError.fatal))
            s.merge(Video(**video))
            s.flush()
            frame_rows = [Frame(video_sha256=sha, **frame) for frame in frames]
            s.add_all(frame_rows)
            s.add_all(Subvideo(video_sha256=sha, **row) for row in subvideos)
            s.flush()
            frame_id = {f.frame_index: f.id for f in frame_rows}
            s.add_all(
                NoFace(frame_id=frame_id[k], video_sha256=sha, rotations_tried=rotations_tried or [0])
                for k in noface_frames
            )
            face_rows, tracks = [], []
            for row in faces:
                row = dict(row)
                tracks.append(row.pop("track"))
                face_rows.append(Face(video_sha256=sha, frame_id=frame_id[row.pop("frame_index")], **row))
            s.add_all(face_rows)
            s.flush()
            s.add_all(
                FaceIntraInd(face_id=f.id, video_sha256=sha, track=t) for f, t in zip(face_rows, tracks, strict=True)
            )

    def _rows(self, stmt: Any) -> list[dict[str, Any]]:
        """A read-only query's rows as plain dicts (stages exchange plain data, never ORM objects)."""
        with self.session() as s:
            return [row._asdict() for row in s.execute(stmt)]

    # --- the challenge-wide stage ---------------------------------------------------------------------------
    def challenge_faces(self, challenge: str) -> list[dict[str, Any]]:
        """Every face of the challenge's videos with its track, frame, time, descriptor and PHash (video order by
        file name, then time), for the cross-video stages."""
        stmt = (
            select(
                Face.id,
                Face.video_sha256,
                FaceIntraInd.track,
                Frame.frame_index,
                Face.pts_s,
                Face.embedding,
                Face.phash,
                Video.file_name,
            )
            .join(FaceIntraInd, FaceIntraInd.face_id == Face.id)
            .join(Frame, Frame.id == Face.frame_id)
            .join(Video, Video.sha256 == Face.video_sha256)
            .where(Video.challenge == challenge)
            .order_by(Video.file_name, Video.sha256, Face.pts_s, Face.face_index)
        )
        return self._rows(stmt)

    def write_individuals(
        self,
        challenge: str,
        similarities: Iterable[Mapping[str, Any]],
        final: Iterable[Mapping[str, Any]],
        unique: Iterable[Mapping[str, Any]],
    ) -> None:
        """Replace the challenge's similarities, individuals and unique faces in one transaction."""
        videos = select(Video.sha256).where(Video.challenge == challenge)
        with self.session() as s:
            s.execute(delete(Similarity).where(Similarity.video_a.in_(videos) | Similarity.video_b.in_(videos)))
            s.execute(delete(FaceFinalInd).where(FaceFinalInd.video_sha256.in_(videos)))
            s.execute(delete(UniqueFace).where(UniqueFace.video_sha256.in_(videos)))
            s.flush()
            s.add_all(Similarity(**row) for row in similarities)
            s.add_all(FaceFinalInd(**row) for row in final)
            s.add_all(UniqueFace(**row) for row in unique)

    # --- reading results (export, report) ------------------------------------------------------------------
    def unique_faces(self, challenge: str) -> list[dict[str, Any]]:
        """Every unique face of the challenge with its individual, track, video, time, box and crop key."""
        stmt = (
            select(
                Face.id.label("face_id"),
                Face.video_sha256,
                Video.file_name,
                Face.pts_s,
                Face.x1,
                Face.y1,
                Face.x2,
                Face.y2,
                Face.score,
                Face.crop_key,
                UniqueFace.individual,
                UniqueFace.phash,
                FaceIntraInd.track,
            )
            .join(UniqueFace, UniqueFace.face_id == Face.id)
            .join(FaceIntraInd, FaceIntraInd.face_id == Face.id)
            .join(Video, Video.sha256 == Face.video_sha256)
            .where(Video.challenge == challenge)
            .order_by(UniqueFace.individual, Video.file_name, Face.pts_s, Face.face_index)
        )
        return self._rows(stmt)

    def face_timeline(self, challenge: str) -> list[dict[str, Any]]:
        """Every face's video, time and individual (for timelines)."""
        stmt = (
            select(Face.video_sha256, Face.pts_s, FaceFinalInd.individual)
            .join(FaceFinalInd, FaceFinalInd.face_id == Face.id)
            .join(Video, Video.sha256 == Face.video_sha256)
            .where(Video.challenge == challenge)
            .order_by(Face.video_sha256, Face.pts_s)
        )
        return self._rows(stmt)

    def videos(self, challenge: str) -> list[dict[str, Any]]:
        """The challenge's stored videos (a few columns), by file name."""
        stmt = (
            select(Video.sha256, Video.file_name, Video.duration_s, Video.width, Video.height, Video.logo_box)
            .where(Video.challenge == challenge)
            .order_by(Video.file_name)
        )
        return self._rows(stmt)

    def subvideos(self, challenge: str) -> list[dict[str, Any]]:
        """Every prompt found in the challenge's videos."""
        stmt = (
            select(Subvideo.video_sha256, Subvideo.prompt, Subvideo.start_s, Subvideo.end_s, Subvideo.score)
            .join(Video, Video.sha256 == Subvideo.video_sha256)
            .where(Video.challenge == challenge)
            .order_by(Subvideo.video_sha256, Subvideo.start_s)
        )
        return self._rows(stmt)

    def last_run(self, challenge: str) -> dict[str, Any] | None:
        """The newest run of the challenge (its status, counts and stage timings)."""
        with self.session() as s:
            run = s.scalars(select(Run).where(Run.challenge == challenge).order_by(Run.id.desc()).limit(1)).first()
            if run is None:
                return None
            return {c.key: getattr(run, c.key) for c in Run.__table__.columns}

    def record_error(
        self,
        run_id: int | None,
        source_uri: str,
        stage: str,
        kind: str,
        message: str,
        sha256: str | None = None,
        fatal: bool = True,
    ) -> None:
        """One ``video_errors`` row, committed on its own so it survives whatever fails next.

        The same failure of the same input is recorded once (the newest run wins), so a re-run adds no rows.
        """
        with self.session() as s:
            s.execute(
                delete(VideoError).where(
                    VideoError.source_uri == source_uri, VideoError.stage == stage, VideoError.kind == kind
                )
            )
            s.add(
                VideoError(
                    run_id=run_id,
                    source_uri=source_uri,
                    sha256=sha256,
                    stage=stage,
                    kind=kind,
                    message=message[:4000],
                    fatal=fatal,
                )
            )

    # --- inspection -----------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Row count of every table (tables not created yet count 0)."""
        present = set(inspect(self.engine).get_table_names())
        out = {}
        with self.session() as s:
            for model in ALL_MODELS:
                name = model.__tablename__
                out[name] = s.scalar(select(func.count()).select_from(model)) if name in present else 0
        return out

    # --- the watch-list monitor -----------------------------------------------------------------------------
    @staticmethod
    def _monitor_dict(row: Any) -> dict[str, Any]:
        return {c.key: getattr(row, c.key) for c in row.__table__.columns}

    @staticmethod
    def _monitor_upsert(s: Session, source_uri: str, values: Mapping[str, Any]) -> None:
        row = s.scalars(select(MonitorVideo).where(MonitorVideo.source_uri == source_uri)).first()
        if row is None:
            row = MonitorVideo(source_uri=source_uri, attempts=0)
            s.add(row)
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = datetime.now(UTC)

    def monitor_videos(self) -> dict[str, dict[str, Any]]:
        """Every video the monitor has looked at, by source URI: one query per poll, not one per listed file."""
        with self.session() as s:
            return {row.source_uri: self._monitor_dict(row) for row in s.scalars(select(MonitorVideo))}

    def monitor_video_by_sha(self, sha256: str) -> dict[str, Any] | None:
        """The first video with these bytes that the monitor checked (``done``) or gave up on (``failed``)."""
        stmt = (
            select(MonitorVideo)
            .where(MonitorVideo.sha256 == sha256, MonitorVideo.status.in_(("done", "failed")))
            .order_by(MonitorVideo.id)
            .limit(1)
        )
        with self.session() as s:
            row = s.scalars(stmt).first()
            return None if row is None else self._monitor_dict(row)

    def monitor_save_video(self, source_uri: str, **values: Any) -> None:
        """Create or update the monitor's row of one source URI, committed at once (it must outlive a crash)."""
        with self.session() as s:
            self._monitor_upsert(s, source_uri, values)

    def monitor_finish_video(
        self, source_uri: str, video: Mapping[str, Any], alerts: Iterable[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Mark a video checked and add its alerts in one transaction; return only the alerts that are new.

        An alert whose (video sha256, person) is already stored (the same bytes seen before, under any name or by an
        earlier monitor process) is neither added nor returned, so the caller never announces it twice.
        """
        with self.session() as s:
            self._monitor_upsert(s, source_uri, video)
            new = []
            for alert in alerts:
                known = s.scalar(
                    select(MonitorAlert.id).where(
                        MonitorAlert.video_sha256 == alert["video_sha256"], MonitorAlert.person == alert["person"]
                    )
                )
                if known is None:
                    row = MonitorAlert(**alert)
                    s.add(row)
                    new.append(row)
            s.flush()
            return [self._monitor_dict(row) for row in new]

    def monitor_alerts(self, undelivered: bool = False) -> list[dict[str, Any]]:
        """Alerts in the order they were raised; ``undelivered``: only those still owed to the webhook."""
        stmt = select(MonitorAlert).order_by(MonitorAlert.id)
        if undelivered:
            stmt = stmt.where(MonitorAlert.deliver.is_(True), MonitorAlert.delivered.is_(False))
        with self.session() as s:
            return [self._monitor_dict(row) for row in s.scalars(stmt)]

    def monitor_mark_delivery(self, alert_id: int, delivered: bool, attempts: int, error: str | None = None) -> None:
        """Count ``attempts`` more webhook requests for an alert and record whether one of them got through."""
        with self.session() as s:
            row = s.get(MonitorAlert, alert_id)
            row.attempts = (row.attempts or 0) + attempts
            row.delivered = delivered
            row.last_error = None if delivered else (error or "")[:2000]
            if delivered:
                row.delivered_at = datetime.now(UTC)
