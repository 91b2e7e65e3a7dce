"""A video's stages after it is prepared: its sampled frames through the faces stage, then logo cover, prompts,
tracks and rows (:func:`finish_video`), then objects and one SQL transaction (:func:`flush_video`).

The same functions serve every path: the sequential one (:func:`process_video`, also what Ray workers run) and the
streaming one (``engine.pipeline.stream``), so both give the same tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from engine import media
from engine.config import Settings
from engine.faces.batching import ROTATIONS_TRIED, analyze_batches
from engine.logo import cover_logo, covered_name, logo_box
from engine.media import FrameBatch
from engine.pipeline.context import RunContext, fail_video
from engine.pipeline.prepare import PreparedVideo, prepare_video
from engine.pipeline.rows import VideoRows, stored_video_key, subvideo_rows, video_faces_rows, video_row
from engine.pipeline.summary import VideoOutcome
from engine.prompts import PromptMatch, find_prompts
from engine.sources import SourceItem
from engine.track import TrackerSettings, track_video
from engine.types import VideoFaces

#: Frames per model batch (and decode chunk) when ``Settings.batch_frames`` is 0. A GPU takes a whole batch in one
#: network call, so bigger is better there; a CPU runs micro-batches of a few frames whatever it is given
#: (``engine.faces.detect.CPU_MICRO_BATCH``), so small batches cost nothing and keep less memory in flight.
GPU_BATCH_FRAMES = 64


CPU_BATCH_FRAMES = 16


def batch_frames(settings: Settings) -> int:
    """Frames per model batch and per decode chunk, on every path (sequential, streaming, Ray workers)."""
    if settings.batch_frames:
        return settings.batch_frames
    return GPU_BATCH_FRAMES if settings.device.startswith("cuda") else CPU_BATCH_FRAMES


def packs_videos(settings: Settings) -> bool:
    """Whether the stream packs frames of several videos into one model batch: by default on a GPU, where short
    videos would leave its batches half empty, and not on a CPU, where it gains nothing (micro-batches) and would
    move results' last bits away from what the sequential path and Ray workers compute (see :class:`FaceBatcher`)."""
    if settings.pack_videos is not None:
        return settings.pack_videos
    return settings.device.startswith("cuda")


def video_frames(prepared: PreparedVideo, ctx: RunContext, chunk: int | None = None) -> Iterator[FrameBatch]:
    """The video's sampled frames on the run's device, ``chunk`` (default :func:`batch_frames`) at a time
    (``media.DecodeError`` when none can be decoded, raised where it happens). Samples lost to corrupt data in the
    file are a non-fatal ``corrupt_frames`` row and a note: the video keeps every sample that decodes."""
    s = ctx.settings
    item = prepared.item

    def corrupt(_samples: list[int], message: str) -> None:
        ctx.db.record_error(ctx.run_id, item.shown, "decode", "corrupt_frames", message, prepared.sha, fatal=False)
        ctx.log(f"note   {item.name}: {message}")

    return media.sample_frames(
        prepared.path, s.sample_interval, s.device, chunk or batch_frames(s), on_corrupt=corrupt, mode=s.sampling
    )


def keeps_frames(ctx: RunContext) -> bool:
    """Whether the faces stage must keep every sampled frame on the host: to look for the logo in them."""
    return ctx.challenge.logo is not None and ctx.challenge.logo.box is None


def video_faces(prepared: PreparedVideo, ctx: RunContext) -> VideoFaces | VideoOutcome:
    """The faces stage on one video's frames, batch by batch as they are decoded (the sequential path)."""
    try:
        return analyze_batches(
            video_frames(prepared, ctx),
            ctx.models,
            timer=ctx.timer,
            keep_frames=keeps_frames(ctx),
            frame_jpegs=ctx.settings.save_frames,
        )
    except media.DecodeError as exc:
        return fail_video(ctx, prepared.item, "decode", exc.kind, str(exc), prepared.sha)


def cover_stage(prepared: PreparedVideo, found: VideoFaces, ctx: RunContext) -> tuple[Path, list[float] | None]:
    """Cover the platform's logo when the challenge asks for it: the file to store and the box covered (none when
    no logo is configured or found). Raises ``DecodeError``/``ValueError`` when the encode fails.

    The encode re-reads and re-writes every frame of the video, the costliest step of a run on a CPU, so it is done
    only when its output will be stored: not when the store already holds the video's copy (:func:`flush_video`
    keeps a stored copy unless ``--force``), and not again when an earlier run left the same cover (same video, box,
    method and preset) in the work folder before it could store it (the file is renamed into place only when
    whole)."""
    item, video = prepared.item, prepared.info.video
    logo = ctx.challenge.logo
    if logo is None:
        return prepared.path, None
    with ctx.timer("logo"):
        box = logo_box(logo, video.width, video.height, found.sampled)
        found.sampled = None
        if box is None:
            ctx.log(f"note   {item.name}: no static logo found; stored as it is")
            return prepared.path, None
        covered_box = list(box.as_tuple())
        if not ctx.settings.force and ctx.store.exists(stored_video_key(prepared, True)):
            return prepared.path, covered_box  # already stored: flush_video will not upload a new copy
        covered = ctx.settings.work_dir / "covered" / covered_name(prepared.sha, box, logo.method)
        if covered.is_file():
            return covered, covered_box
        covered.parent.mkdir(parents=True, exist_ok=True)
        return cover_logo(prepared.path, covered, box, logo.method), covered_box


def prompts_stage(prepared: PreparedVideo, ctx: RunContext) -> list[PromptMatch]:
    """Where each prompt of the baseline plays in the video's audio (none without templates or audio); an audio
    that cannot be decoded is a non-fatal error row, absent prompts are noted in the log."""
    item = prepared.item
    if ctx.templates is None or not prepared.info.has_audio:
        return []
    with ctx.timer("audio"):
        try:
            track = media.decode_audio(prepared.path, ctx.challenge.align.rate)
            alignment = find_prompts(ctx.templates, [track], ctx.challenge.align.threshold)[0]
        except media.DecodeError as exc:
            ctx.db.record_error(ctx.run_id, item.shown, "audio", exc.kind, str(exc), sha256=prepared.sha, fatal=False)
            return []
    threshold = ctx.challenge.align.threshold
    for name, score in alignment.absent.items():
        ctx.log(f"note   {item.name}: prompt {name!r} not found (best NCC {score:.3f} < {threshold})")
    return list(alignment.matches)


def finish_video(prepared: PreparedVideo, found: VideoFaces, ctx: RunContext) -> VideoRows | VideoOutcome:
    """Logo, audio prompts and tracks, then every row and object of the video: what :func:`flush_video` stores,
    or the video's outcome when covering its logo failed."""
    item, sha = prepared.item, prepared.sha
    try:
        stored_path, covered_box = cover_stage(prepared, found, ctx)
    except (media.DecodeError, ValueError) as exc:
        return fail_video(ctx, item, "logo", "cover_failed", f"covering the logo of {item.name} failed: {exc}", sha)
    matches = prompts_stage(prepared, ctx)
    with ctx.timer("track"):
        tracker = TrackerSettings.for_embedder(ctx.challenge.faces.embedder)
        breaks = ctx.challenge.cluster.breaks_for(item.name, sha)
        tracks = track_video(found.faces, breaks, tracker, frames=found.frames, appearance=True)
    embedder = ctx.challenge.faces.embedder
    frames, faces, objects = video_faces_rows(prepared, found, tracks, ctx.settings.save_frames, embedder)
    key = stored_video_key(prepared, covered_box is not None)
    s = ctx.settings
    return VideoRows(
        prepared,
        video_row(prepared, key, covered_box, ctx.challenge.name, ctx.run_id, s.sample_interval),
        frames,
        subvideo_rows(matches),
        faces,
        found.noface_frames.tolist(),
        ROTATIONS_TRIED if ctx.models.settings.rotate else [0],
        key,
        stored_path,
        objects,
        tracks.count,
    )


def flush_video(rows: VideoRows, ctx: RunContext) -> VideoOutcome:
    """Store the video's objects, then commit all its rows in one transaction: a run killed in between leaves
    objects without rows (rewritten by the next run), never rows without their objects."""
    item, sha = rows.prepared.item, rows.prepared.sha
    with ctx.timer("store"):
        try:
            if not ctx.store.exists(rows.video_key) or ctx.settings.force:
                ctx.store.put_file(rows.video_key, rows.stored_path)
            for key, data in rows.objects:
                ctx.store.put_bytes(key, data, "image/jpeg")
        except Exception as exc:  # noqa: BLE001 - a failed upload is this video's error, not the run's
            return fail_video(ctx, item, "store", "upload_failed", f"uploading {item.name} failed: {exc}", sha)
    with ctx.timer("sql"):
        ctx.db.write_video(
            rows.video, rows.frames, rows.subvideos, rows.faces, rows.noface_frames, rows.rotations_tried
        )
    return VideoOutcome(
        item.name,
        "ok",
        sha,
        frames=len(rows.frames),
        faces=len(rows.faces),
        tracks=rows.tracks,
        prompts=len(rows.subvideos),
    )


def complete_video(prepared: PreparedVideo, found: VideoFaces, ctx: RunContext) -> VideoOutcome:
    """Everything after the faces stage: :func:`finish_video`, then :func:`flush_video`."""
    rows = finish_video(prepared, found, ctx)
    return rows if isinstance(rows, VideoOutcome) else flush_video(rows, ctx)


def process_video(item: SourceItem, ctx: RunContext) -> VideoOutcome:
    """One video through every per-video stage, one after the other (Ray workers and ``--no-stream``); never
    raises for a bad input (the error is recorded instead)."""
    prepared = prepare_video(item, ctx)
    if isinstance(prepared, VideoOutcome):
        return prepared
    found = video_faces(prepared, ctx)
    if isinstance(found, VideoOutcome):
        return found
    return complete_video(prepared, found, ctx)
