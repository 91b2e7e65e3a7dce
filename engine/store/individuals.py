"""The challenge-wide stage's rows: every face of a challenge in, similarities, individuals and unique faces out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

from sqlalchemy import delete, insert, select

from .database import DatabaseCore
from .schema import Face, FaceFinalInd, FaceIntraInd, Frame, Similarity, UniqueFace, Video


class IndividualsMixin(DatabaseCore):
    """``challenge_faces``, ``write_individuals``."""

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
                Face.x1,
                Face.y1,
                Face.x2,
                Face.y2,
                Face.embedding,
                Face.embedder,
                Face.quality,
                Face.magnitude,
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
            for model, rows in ((Similarity, similarities), (FaceFinalInd, final), (UniqueFace, unique)):
                _insert_batches(s, model, rows)


#: Rows per INSERT of the challenge-wide write. The rows go in as plain parameter batches (SQLAlchemy Core's
#: executemany), not ORM objects: a challenge of 400 videos of the same few people has 670,000 candidate track pairs;
#: rebuilding its individuals peaked at 2817 MiB in 65 s with one ORM object per row, 1694 MiB in 25 s in batches
#: (benchmarks/RESULTS.md, eighth session).
WRITE_BATCH = 10_000


def _insert_batches(session: Any, model: type, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert ``rows`` into ``model``'s table ``WRITE_BATCH`` at a time (``rows`` may be a generator)."""
    it = iter(rows)
    while batch := [dict(r) for r in islice(it, WRITE_BATCH)]:
        session.execute(insert(model.__table__), batch)
