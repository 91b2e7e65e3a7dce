"""Per-video writes: every row of one video replaced in one transaction, and ``video_errors`` rows.

Every write that belongs to one video happens in one transaction that first removes whatever rows that video had,
so a crash never leaves half a video and a re-run never duplicates anything. On PostgreSQL that transaction also
holds the video's write lock and its challenge's lock shared (``engine.store.locks``), so two runs writing one video
take turns, and neither writes while a cross-video step reads the challenge; a run's claim on the video ends when
its rows, or its fatal error, are committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete

from engine.redact import redact_text

from .locks import LocksMixin
from .schema import PER_VIDEO_TABLES, Face, FaceIntraInd, Frame, NoFace, Similarity, Subvideo, Video, VideoError


class VideosMixin(LocksMixin):
    """``video_stages``, ``write_video``, ``record_error``."""

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
        video = {**video, "source_uri": redact_text(video["source_uri"])}  # as record_error stores it
        with self.session() as s:
            self.video_write_lock(s, sha, video["challenge"])
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
        self.release_video(sha)

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

        The same failure of the same input is recorded once (the newest run wins), so a re-run adds no rows. A fatal
        error ends this run's claim on the video (another run may try it).
        """
        # Stored with passwords masked: a URL list's entry may carry them, and the message may quote it.
        source_uri, message = redact_text(source_uri), redact_text(message)
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
        if fatal:
            self.release_video(sha256)
