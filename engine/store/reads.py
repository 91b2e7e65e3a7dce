"""Reading results back (export, report, inspection): plain dicts, never ORM objects."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, inspect, select

from .database import DatabaseCore
from .schema import ALL_MODELS, Face, FaceFinalInd, FaceIntraInd, Run, Similarity, Subvideo, UniqueFace, Video


class ReadsMixin(DatabaseCore):
    """``unique_faces``, ``face_timeline``, ``similarities``, ``videos``, ``subvideos``, ``last_run``, ``counts``."""

    def unique_faces(self, challenge: str) -> list[dict[str, Any]]:
        """Every unique face of the challenge with its individual, track, video, time, box, crop key, quality
        (``None`` for faces stored before it was measured), whether it voted for its individual, and its descriptor
        (``embedding``: float32 array, with the ``embedder`` that made it; ``None`` where none was stored)."""
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
                Face.quality,
                Face.magnitude,
                func.coalesce(FaceFinalInd.voted, True).label("voted"),
                Face.embedding,
                Face.embedder,
            )
            .join(UniqueFace, UniqueFace.face_id == Face.id)
            .join(FaceIntraInd, FaceIntraInd.face_id == Face.id)
            .outerjoin(FaceFinalInd, FaceFinalInd.face_id == Face.id)
            .join(Video, Video.sha256 == Face.video_sha256)
            .where(Video.challenge == challenge)
            .order_by(UniqueFace.individual, Video.file_name, Face.pts_s, Face.face_index)
        )
        return self._rows(stmt)

    def face_timeline(self, challenge: str) -> list[dict[str, Any]]:
        """Every grouped face's video, time, track and individual (``None``: its track had no face good enough to
        vote), whether it voted, its quality and crop key (for timelines and the report's track crops)."""
        stmt = (
            select(
                Face.id.label("face_id"),
                Face.video_sha256,
                Face.pts_s,
                FaceFinalInd.track,
                FaceFinalInd.individual,
                FaceFinalInd.voted,
                Face.quality,
                Face.magnitude,
                Face.crop_key,
            )
            .join(FaceFinalInd, FaceFinalInd.face_id == Face.id)
            .join(Video, Video.sha256 == Face.video_sha256)
            .where(Video.challenge == challenge)
            .order_by(Face.video_sha256, Face.pts_s)
        )
        return self._rows(stmt)

    def similarities(self, challenge: str) -> list[dict[str, Any]]:
        """The challenge's candidate track pairs (``video_a``, ``track_a``, ``video_b``, ``track_b``, ``cosine``: the
        cosine between their mean directions), most similar first."""
        stmt = (
            select(Similarity.video_a, Similarity.track_a, Similarity.video_b, Similarity.track_b, Similarity.cosine)
            .join(Video, Video.sha256 == Similarity.video_a)
            .where(Video.challenge == challenge)
            .order_by(Similarity.cosine.desc(), Similarity.id)
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

    def counts(self) -> dict[str, int]:
        """Row count of every table (tables not created yet count 0)."""
        present = set(inspect(self.engine).get_table_names())
        out = {}
        with self.session() as s:
            for model in ALL_MODELS:
                name = model.__tablename__
                out[name] = s.scalar(select(func.count()).select_from(model)) if name in present else 0
        return out
