"""A video's first steps in a run: fetch it, hash it (its identity), skip it when its rows are already stored,
probe it, and note what is odd about it (no audio, truncated) without failing it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import media
from engine.hashing import sha256_file
from engine.pipeline.context import RunContext, fail_video
from engine.pipeline.summary import VideoOutcome
from engine.sources import FetchError, SourceItem, fetch


@dataclass
class PreparedVideo:
    """A video fetched, hashed and probed, not stored yet: what its frames, faces and rows are made from."""

    item: SourceItem
    path: Path
    metadata: dict[str, Any]
    sha: str
    size: int
    info: media.MediaInfo
    needed: list[str]  # the stages its committed row will say are done


def prepare_video(item: SourceItem, ctx: RunContext, claimed: set[str] | None = None) -> PreparedVideo | VideoOutcome:
    """Fetch, hash, skip check and probe, with the non-fatal notes (no audio, truncated): the video ready for its
    frames, or its outcome (skipped, or failed with its error row written). Never raises for a bad input.

    ``claimed``: the hashes this run has already taken (the streaming path prepares a video while earlier ones are
    still in flight, not committed yet): a copy of one of them is skipped as if it were stored; the hash is added.
    """
    s = ctx.settings
    with ctx.timer("fetch"):
        try:
            path, metadata = fetch(item, s.work_dir / "downloads", s.s3_endpoint_url)
        except FetchError as exc:
            return fail_video(ctx, item, "fetch", "download_failed", str(exc))
    with ctx.timer("hash"):
        try:
            size = path.stat().st_size
            sha = sha256_file(path)
        except OSError as exc:
            if path.is_dir():  # a folder named like a video (x.mp4/): listed so that it is not passed over silently
                return fail_video(ctx, item, "read", "unreadable_path", f"{path} is a folder, not a video file")
            return fail_video(ctx, item, "read", "unreadable_path", f"cannot read {path}: {exc.strerror or exc}")
    if size == 0:
        return fail_video(ctx, item, "probe", "empty_file", f"{item.name} is an empty (zero-byte) file", sha)

    # The embedder is a stage: a video stored with another embedder's descriptors is processed again, so a
    # challenge's descriptors are always of one kind (they are never compared across embedders).
    needed = {"ingest", "frames", "faces", "tracks", "audio", f"embed:{ctx.challenge.faces.embedder}"}
    needed |= ({"frame_jpegs"} if s.save_frames else set()) | ({"logo"} if ctx.challenge.logo else set())
    if not s.force:
        if claimed is not None and sha in claimed:
            return VideoOutcome(item.name, "skipped", sha)
        done = ctx.db.video_stages(sha)
        if done is not None and needed <= set(done):
            return VideoOutcome(item.name, "skipped", sha)

    with ctx.timer("probe"):
        try:
            info = media.probe(path)
        except media.DecodeError as exc:
            return fail_video(ctx, item, "probe", exc.kind, str(exc), sha)
    if claimed is not None:
        claimed.add(sha)
    video = info.video
    if not info.has_audio:
        ctx.db.record_error(
            ctx.run_id,
            item.shown,
            "audio",
            "no_audio",
            f"{item.name} has no audio stream: prompts cannot be aligned in it (its frames are still sampled)",
            sha256=sha,
            fatal=False,
        )
        ctx.log(f"note   {item.name}: no audio stream; frames are still sampled")
    if video.truncated_s > media.TRUNCATION_TOLERANCE_S:
        ctx.db.record_error(
            ctx.run_id,
            item.shown,
            "decode",
            "truncated",
            f"{item.name} is truncated: {video.duration_s:.2f}s of video decodable, the header "
            f"says {video.header_duration_s:.2f}s; the decodable part is kept",
            sha256=sha,
            fatal=False,
        )
        ctx.log(f"note   {item.name}: truncated, keeping the first {video.duration_s:.2f}s")
    return PreparedVideo(item, path, metadata, sha, size, info, sorted(needed))
