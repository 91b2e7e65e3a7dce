"""Tracks inside one video: which faces of successive sampled frames belong to the same person.

Faces are linked frame to frame by a Hungarian assignment on a cost mixing IoU, centre distance and (with
descriptors) appearance, with gates on position *and* appearance: a face too far from every open track, or too
different from the track's last face, starts a new one. No track crosses a shot cut. A track stays open for
``max_gap`` sampled frames without a face (a blink of the detector, a head turned away) before it is closed. The
seed's shortcut ("no frame with two faces, so one track") is only taken without descriptors and cuts: on real
footage one face per frame still means several people over several shots, and grouping tracks into individuals
(``engine.cluster``) joins the pieces of one person again, within a video as across videos.

Tracking runs on the host: per video it handles a few hundred boxes, and it is inherently sequential over frames,
so moving the tiny box tensor once is cheaper than any device-side assignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from engine.shots import SAMPLED_SHOTS, find_cuts
from engine.types import Faces, Frames, Tracks


@dataclass(frozen=True)
class TrackerSettings:
    """``max_centre_distance`` is in units of the larger box's diagonal; ``max_gap`` in sampled frames."""

    max_centre_distance: float = 0.75
    min_iou: float = 0.0
    max_gap: int = 2
    #: The seed's selfie rule (no frame with two faces → one track). Right for challenge videos; wrong for
    #: films, where one face per frame still means many people over many shots.
    one_face_rule: bool = True
    #: With descriptors given, a face joins a track only if its distance to the track's last face is at most this
    #: (dlib's same-person distance): a cut the shot detector missed, or two people swapping places, then starts a
    #: new track instead of merging people. Measured on the shared Ryan Reynolds clip: consecutive samples of one
    #: person are mostly 0.2-0.55 apart, switches between people 0.62-0.90.
    max_appearance_distance: float = 0.6

    @classmethod
    def for_embedder(cls, name: str, **overrides: object) -> TrackerSettings:
        """A challenge run's tracker: the appearance gate at the embedder's same-person distance."""
        from engine.faces.embedders import embedder_spec

        return cls(max_appearance_distance=embedder_spec(name).same_person, **overrides)  # type: ignore[arg-type]


def _cost(
    prev: torch.Tensor,
    cur: torch.Tensor,
    settings: TrackerSettings,
    prev_emb: torch.Tensor | None = None,
    cur_emb: torch.Tensor | None = None,
) -> np.ndarray:
    """``[P, C]`` assignment costs (1 - IoU + normalised centre distance [+ descriptor distance]); ``inf`` where a
    gate forbids."""
    iou = box_iou(prev, cur)
    centre = lambda b: (b[:, :2] + b[:, 2:]) / 2  # noqa: E731
    diag = lambda b: (b[:, 2:] - b[:, :2]).norm(dim=1)  # noqa: E731
    dist = torch.cdist(centre(prev), centre(cur)) / torch.maximum(diag(prev)[:, None], diag(cur)[None, :]).clamp(
        min=1e-6
    )
    cost = (1 - iou) + dist
    allowed = (dist <= settings.max_centre_distance) & (iou >= settings.min_iou)
    if prev_emb is not None and cur_emb is not None:
        look = torch.cdist(prev_emb, cur_emb)
        cost = cost + look
        allowed &= look <= settings.max_appearance_distance
    return torch.where(allowed, cost, torch.full_like(cost, float("inf"))).numpy()


def track_faces(
    frame_index: torch.Tensor,
    boxes: torch.Tensor,
    settings: TrackerSettings | None = None,
    segment: torch.Tensor | None = None,
    embeddings: torch.Tensor | None = None,
) -> torch.Tensor:
    """Track ids ``[F]`` (0, 1, ... in order of first appearance) for faces of one video.

    ``frame_index`` ``[F]`` is each face's sampled-frame number (k in start + k·interval), ``boxes`` ``[F, 4]``
    pixels. ``segment`` ``[F]`` (optional, e.g. the shot of each face) closes every open track when it changes, so
    no track crosses a shot cut. ``embeddings`` ``[F, D]`` (optional) adds the appearance gate (see
    :class:`TrackerSettings`). ``max_gap`` counts in units of ``frame_index``. Past the selfie rule, the result
    is causal (a face's track depends only on earlier frames), which is what lets a sharded film be stitched.
    Inputs may live on any device; the result is on the CPU.
    """
    settings = settings or TrackerSettings()
    frame_index, boxes = frame_index.cpu(), boxes.cpu().to(torch.float32)
    emb = None if embeddings is None else embeddings.cpu().to(torch.float32)
    n = len(frame_index)
    tracks = torch.full((n,), -1, dtype=torch.long)
    if n == 0:
        return tracks
    frames, first, per_frame = torch.unique(frame_index, return_inverse=True, return_counts=True)
    if settings.one_face_rule and segment is None and emb is None and int(per_frame.max()) <= 1:
        return torch.zeros(n, dtype=torch.long)
    frame_segment = None
    if segment is not None:
        frame_segment = torch.zeros(len(frames), dtype=torch.long).scatter_(0, first, segment.cpu().long()).tolist()
    # Open tracks: id → (last face, last frame index).
    open_tracks: dict[int, tuple[int, int]] = {}
    next_id = 0
    for j, k in enumerate(frames.tolist()):
        faces = (frame_index == k).nonzero().flatten()
        # Sort faces of a frame left to right so new track ids are deterministic.
        faces = faces[torch.argsort(boxes[faces, 0], stable=True)]
        if frame_segment is not None and j > 0 and frame_segment[j] != frame_segment[j - 1]:
            open_tracks = {}
        open_tracks = {t: v for t, v in open_tracks.items() if k - v[1] <= settings.max_gap}
        assigned: dict[int, int] = {}
        if open_tracks:
            ids = list(open_tracks)
            last = torch.tensor([open_tracks[t][0] for t in ids])
            looks = (None, None) if emb is None else (emb[last], emb[faces])
            cost = _cost(boxes[last], boxes[faces], settings, *looks)
            finite = np.where(np.isfinite(cost), cost, 1e6)
            rows, cols = linear_sum_assignment(finite)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if np.isfinite(cost[r, c]):
                    assigned[c] = ids[r]
        for c, face in enumerate(faces.tolist()):
            if c not in assigned:
                assigned[c] = next_id
                next_id += 1
            tracks[face] = assigned[c]
            open_tracks[assigned[c]] = (face, k)
    # Renumber in order of first appearance.
    order = {}
    for t in tracks.tolist():
        order.setdefault(t, len(order))
    return torch.tensor([order[t] for t in tracks.tolist()], dtype=torch.long)


def split_track(tracks: torch.Tensor, times_s: torch.Tensor, track: int, at_s: float) -> torch.Tensor:
    """A manual break: faces of ``track`` at or after ``at_s`` move to a new track (the next free id)."""
    out = tracks.clone()
    move = (tracks == track) & (times_s >= at_s)
    if bool(move.any()):
        out[move] = int(tracks.max()) + 1
    return out


def sampled_shots(frames: Frames, frame_index: torch.Tensor) -> torch.Tensor | None:
    """The shot ``[F]`` of each face (by its sampled frame's number), from the frames' ``change`` scores; ``None``
    when the frames carry no scores."""
    if frames.change is None or len(frames.index) == 0:
        return None
    order = torch.argsort(frames.index)
    starts = torch.zeros(len(order), dtype=torch.long)
    starts[find_cuts(frames.change[order].float(), SAMPLED_SHOTS)] = 1
    shot_of_frame = torch.cumsum(starts, 0)
    return shot_of_frame[torch.searchsorted(frames.index[order], frame_index)]


def track_video(
    faces: Faces,
    breaks: Sequence[tuple[int, float]] = (),
    settings: TrackerSettings | None = None,
    frames: Frames | None = None,
    appearance: bool = False,
) -> Tracks:
    """The tracks of one video's faces (:func:`track_faces`), then its manual breaks ``(track, at_s)``, in order.

    With ``frames`` (their ``change`` scores), no track crosses a shot cut; with ``appearance``, the faces'
    descriptors gate the association (``settings.max_appearance_distance``, the embedder's same-person distance).
    """
    if len(faces) == 0:
        return Tracks(torch.zeros(0, dtype=torch.long))
    segment = None if frames is None else sampled_shots(frames, faces.frame_index)
    tracks = track_faces(
        faces.frame_index, faces.boxes, settings, segment=segment, embeddings=faces.embedding if appearance else None
    )
    for track, at_s in breaks:
        tracks = split_track(tracks, faces.pts_s, track, at_s)
    return Tracks(tracks)
