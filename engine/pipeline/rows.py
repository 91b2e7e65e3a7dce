"""The one place where the stages' typed results become table rows and object keys.

Everything a video's transaction writes (``videos``, ``frames``, ``subvideos``, ``faces``, ``nofaces``) and what the
challenge-wide step writes (``similarities``, ``faces_with_final_ind``, ``unique_faces``) is built here from
:mod:`engine.types` dataclasses, so the column names live in ``engine/store/schema.py`` and here only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.dedup import hash_to_hex
from engine.pipeline.prepare import PreparedVideo
from engine.prompts import PromptMatch
from engine.store import face_key, frame_key, video_key
from engine.types import QUALITY_COLUMNS, Faces, Frames, Individuals, StoredFaces, Tracks, VideoFaces

Row = dict[str, Any]
#: Containers a stored video keeps its own suffix for; anything else (and every covered copy) is stored as .mp4.
KEPT_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
#: Source metadata (from a URL list or a downloader) copied into the ``videos`` row.
METADATA_COLUMNS = ("source_id", "author", "description", "sound_id")


@dataclass
class VideoRows:
    """One video's rows and objects, built and ready to be stored (``engine.pipeline.stages.flush_video``)."""

    prepared: PreparedVideo
    video: Row
    frames: list[Row]
    subvideos: list[Row]
    faces: list[Row]
    noface_frames: list[int]
    rotations_tried: list[int]
    video_key: str
    stored_path: Path  # the file stored as the video (the logo-covered copy when there is one)
    objects: list[tuple[str, bytes]]  # (key, JPEG): the crops, then the frames when they are saved
    tracks: int


def frame_rows(frames: Frames, sha: str, saved: bool) -> list[Row]:
    """One ``frames`` row per sampled frame; ``object_key`` names its JPEG when frames are saved."""
    return [
        dict(frame_index=k, target_s=t, pts_s=p, width=w, height=h, object_key=frame_key(sha, k) if saved else None)
        for k, t, p, w, h in zip(
            *(x.tolist() for x in (frames.index, frames.target_s, frames.pts_s, frames.width, frames.height)),
            strict=True,
        )
    ]


def crop_keys(faces: Faces, sha: str) -> list[str]:
    """The object key of each face's crop."""
    return [face_key(sha, k, i) for k, i in zip(faces.frame_index.tolist(), faces.face_index.tolist(), strict=True)]


def face_rows(faces: Faces, tracks: Tracks, keys: list[str], embedder: str) -> list[Row]:
    """One ``faces`` row per face, with its crop's key, PHash (hex), track, descriptor (and the embedder that made
    it) and quality columns."""
    assert faces.phash is not None, "a challenge run makes crops and hashes for every face"
    columns = (
        faces.frame_index.tolist(),
        faces.face_index.tolist(),
        faces.pts_s.tolist(),
        faces.boxes.tolist(),
        faces.scores.tolist(),
        faces.landmarks.tolist(),
        faces.rotation.tolist(),
        keys,
        faces.phash.tolist(),
        faces.embedding.numpy(),
        tracks.of_face.tolist(),
        _quality_rows(faces),
    )
    return [
        dict(
            frame_index=k,
            face_index=i,
            pts_s=t,
            x1=box[0],
            y1=box[1],
            x2=box[2],
            y2=box[3],
            score=score,
            landmarks=[round(v, 3) for v in marks],
            rotation=rot,
            crop_key=key,
            phash=hash_to_hex(h),
            embedding=emb,
            embedder=embedder,
            track=tr,
            **q,
        )
        for k, i, t, box, score, marks, rot, key, h, emb, tr, q in zip(*columns, strict=True)
    ]


def _quality_rows(faces: Faces) -> list[dict[str, float | None]]:
    if faces.quality is None:
        return [dict.fromkeys(QUALITY_COLUMNS) for _ in range(len(faces))]
    return [dict(zip(QUALITY_COLUMNS, (round(v, 4) for v in row), strict=True)) for row in faces.quality.tolist()]


def subvideo_rows(matches: list[PromptMatch]) -> list[Row]:
    """One ``subvideos`` row per prompt found in the video's audio."""
    return [dict(prompt=m.prompt, start_s=m.start_s, end_s=m.end_s, score=m.score) for m in matches]


def video_row(
    prepared: PreparedVideo, key: str, covered_box: list[float] | None, challenge: str, run_id: int, interval: float
) -> Row:
    """The ``videos`` row: identity, container and stream facts, the logo box covered, the stages done."""
    item, path, video, audio = prepared.item, prepared.path, prepared.info.video, prepared.info.audio
    metadata = {**item.metadata, **prepared.metadata}
    return dict(
        sha256=prepared.sha,
        challenge=challenge,
        source_uri=item.shown,  # a URL's password is never stored
        file_name=item.name,
        object_key=key,
        size_bytes=prepared.size,
        container=path.suffix.lower().lstrip(".") or None,
        video_codec=video.codec,
        width=video.width,
        height=video.height,
        rotation=video.rotation,
        fps=video.fps,
        num_frames=video.num_frames,
        video_start_s=video.start_s,
        video_end_s=video.end_s,
        duration_s=video.duration_s,
        has_audio=audio is not None,
        audio_sample_rate=audio.sample_rate if audio else None,
        audio_channels=audio.channels if audio else None,
        audio_start_s=audio.start_s if audio else None,
        sample_interval_s=interval,
        logo_box=covered_box,
        stages_done=prepared.needed,
        run_id=run_id,
        **{k: v for k, v in metadata.items() if k in METADATA_COLUMNS},
    )


def stored_video_key(prepared: PreparedVideo, covered: bool) -> str:
    """Where the video is stored: by its hash, as .mp4 when covered, else with its own (known) suffix."""
    suffix = prepared.path.suffix.lower()
    return video_key(prepared.sha, ".mp4" if covered or suffix not in KEPT_SUFFIXES else suffix)


def individual_rows(faces: StoredFaces, individuals: Individuals) -> tuple[Iterator[Row], list[Row], list[Row]]:
    """``similarities``, ``faces_with_final_ind`` and ``unique_faces`` rows of the challenge-wide step. The
    similarities come as a generator: there is one per candidate track pair, up to hundreds of thousands, and the
    store writes them in batches."""
    keys, pairs = individuals.tracks, individuals.pairs
    similarities = (
        dict(video_a=keys[a][0], track_a=keys[a][1], video_b=keys[b][0], track_b=keys[b][1], cosine=c)
        for a, b, c in zip(pairs.a.tolist(), pairs.b.tolist(), pairs.cosine.tolist(), strict=True)
    )
    columns = (faces.face_id.tolist(), [faces.videos[v] for v in faces.video.tolist()], faces.track.tolist())
    of_face = individuals.of_face.tolist()
    voted = individuals.voted.tolist()
    final = [
        dict(face_id=f, video_sha256=v, track=t, individual=None if i < 0 else i, voted=w)
        for f, v, t, i, w in zip(*columns, of_face, voted, strict=True)
    ]
    kept = (~individuals.duplicate & faces.has_phash).tolist()
    unique = [
        dict(face_id=f, video_sha256=v, individual=i, phash=hash_to_hex(h))
        for f, v, _, i, h, k in zip(*columns, of_face, faces.phash.tolist(), kept, strict=True)
        if k
    ]
    return similarities, final, unique


def video_faces_rows(
    prepared: PreparedVideo, found: VideoFaces, tracks: Tracks, saved_frames: bool, embedder: str
) -> tuple[list[Row], list[Row], list[tuple[str, bytes]]]:
    """A video's ``frames`` and ``faces`` rows and its objects (crops, then frame JPEGs)."""
    keys = crop_keys(found.faces, prepared.sha)
    objects = list(zip(keys, found.faces.crops, strict=True))
    objects += [(frame_key(prepared.sha, k), data) for k, data in found.frame_jpegs.items()]
    return frame_rows(found.frames, prepared.sha, saved_frames), face_rows(found.faces, tracks, keys, embedder), objects
