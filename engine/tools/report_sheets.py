"""The report's pictures of people: one contact sheet per individual (its best faces first, the faces that did not
vote on a strip of their own) and the faces that ended in no individual.

Thumbnails are the stored face crops, embedded as base64 JPEG so the report stays one file.
"""

from __future__ import annotations

import base64
import html
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from engine.store import ObjectStore

if TYPE_CHECKING:  # annotations only: these tools do not load torch
    from engine.types import Tick

Row = dict[str, Any]
Log = Callable[[str], None]

#: Thumbnails per individual on its contact sheet (the best-quality voting faces).
SHEET_SIZE = 24
#: Thumbnails on an individual's "did not vote" strip.
NON_VOTING_SIZE = 12
#: Tracks listed per individual (the video and track numbers a manual merge names).
TRACKS_LISTED = 12
NON_VOTING_LABEL = "did not vote: low quality or disagreeing with its track"
#: Before the tracks of an individual none of whose faces voted: they joined it by likeness alone (or a manual
#: merge), the first place to look when a face on the strip above is someone else (a ``keep_apart`` fixes it).
ATTACHED_LABEL = "no face voted (attached by likeness)"
#: Under the best voting face of an individual whose voting faces were all removed as near-duplicates (PHash) of
#: faces that did not vote: the sheet still shows what the individual rests on.
DUPLICATE_CAPTION = "voted; a near-duplicate, not a unique face"
NO_INDIVIDUAL_COLOUR = "#9e9e9e"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def colour(individual: int | None) -> str:
    return NO_INDIVIDUAL_COLOUR if individual is None else _PALETTE[individual % len(_PALETTE)]


def by_quality(face: Row) -> tuple[bool, float, float]:
    """Sort key: best quality first; faces stored before quality was measured (``None``) last, then by time."""
    q = face.get("quality")
    return (q is None, -(q or 0.0), face["pts_s"])


def quality_text(face: Row) -> str:
    """The face's quality, and its descriptor magnitude where stored (why a low-quality face voted, or a good one
    did not: ``engine.faces.quality.vote_floors``)."""
    q, m = face.get("quality"), face.get("magnitude")
    text = "quality n/a" if q is None else f"quality {q:.2f}"
    return text if m is None else f"{text} · magnitude {m:.1f}"


def thumbnail(store: ObjectStore, face: Row, name_of: dict[str, str], log: Log, caption: str = "") -> str:
    """One face crop as an inline ``<img>`` (with ``caption`` under it when given); ``""`` when the crop is missing
    (a missing crop leaves a gap, not a broken report)."""
    key = face.get("crop_key")
    if not key:
        return ""
    try:
        data = base64.b64encode(store.get_bytes(key)).decode()
    except Exception as exc:  # noqa: BLE001 - any store error only loses this thumbnail
        log(f"note   crop {key} unreadable ({exc})")
        return ""
    title = f"{name_of.get(face['video_sha256'], '')} {face['pts_s']:.1f}s · track {face.get('track')} · "
    img = f'<img src="data:image/jpeg;base64,{data}" title="{html.escape(title + quality_text(face))}">'
    if not caption:
        return img
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"


def track_label(video: str, track: int, name_of: dict[str, str]) -> str:
    return f"{html.escape(name_of.get(video, video[:12]))} track {track}"


def contact_sheets(
    store: ObjectStore,
    unique: list[Row],
    timeline: list[Row],
    name_of: dict[str, str],
    log: Log,
    progress: Tick | None = None,
) -> list[str]:
    """One contact sheet per individual (most faces first): its best-quality unique crops that voted, then a strip
    of those that did not vote, and the tracks it is made of."""
    crops: dict[int, list[Row]] = defaultdict(list)
    for face in unique:
        if face["individual"] is not None:
            crops[face["individual"]].append(face)
    grouped = [f for f in timeline if f["individual"] is not None]
    faces_per_ind = Counter(f["individual"] for f in grouped)
    non_voting = Counter(f["individual"] for f in grouped if not f["voted"])
    tracks: dict[int, set[tuple[str, int]]] = defaultdict(set)
    best: dict[int, Row] = {}  # each individual's best voting face
    for f in grouped:
        tracks[f["individual"]].add((f["video_sha256"], f["track"]))
        ind, q = f["individual"], f.get("quality")
        if f["voted"] and q is not None and (ind not in best or q > best[ind]["quality"]):
            best[ind] = f
    voting_tracks = {(f["video_sha256"], f["track"]) for f in grouped if f["voted"]}
    body = ["<h2>Individuals</h2>"]
    order = sorted(set(crops) | set(faces_per_ind), key=lambda i: (-faces_per_ind[i], i))
    for ind in order:
        if progress is not None:
            progress("individuals", 1, len(order))  # each sheet reads its crops from the store
        mine = sorted(crops[ind], key=by_quality)
        voted = "".join(thumbnail(store, f, name_of, log) for f in [f for f in mine if f["voted"]][:SHEET_SIZE])
        if not voted and ind in best:  # every voting face is a near-duplicate of a kept one: show the best anyway
            voted = thumbnail(store, best[ind], name_of, log, DUPLICATE_CAPTION)
        others = [f for f in mine if not f["voted"]][:NON_VOTING_SIZE]
        strip = ""
        if non_voting[ind]:
            thumbs = "".join(thumbnail(store, f, name_of, log) for f in others)
            strip = (
                f'<div class="sheet novote"><span class="muted">{NON_VOTING_LABEL} '
                f"({non_voting[ind]} face(s))</span><br>{thumbs}</div>"
            )
        videos = {v for v, _ in tracks[ind]}
        silent = tracks[ind] - voting_tracks  # attached by their faces' likeness alone (or merged by hand)
        attached = f" · {ATTACHED_LABEL}: {_track_list(silent, name_of)}" if silent else ""
        top = f"best quality first ({best[ind]['quality']:.2f})" if ind in best else "best quality first"
        body.append(
            f'<div class="ind" id="person-{ind}" style="border-left:6px solid {colour(ind)}"><b>person {ind}</b> · '
            f"{faces_per_ind[ind]} faces in {len(videos)} video(s), {len(tracks[ind])} track(s) · "
            f"{len(crops[ind])} unique · {top}"
            f'<div class="sheet">{voted}</div>{strip}'
            f'<div class="muted small">tracks: {_track_list(tracks[ind], name_of)}{attached}</div></div>'
        )
    return body


def _track_list(tracks: Iterable[tuple[str, int]], name_of: dict[str, str]) -> str:
    ordered = sorted(tracks, key=lambda vt: (name_of.get(vt[0], vt[0]), vt[1]))
    listed = ", ".join(track_label(v, t, name_of) for v, t in ordered[:TRACKS_LISTED])
    more = len(ordered) - TRACKS_LISTED
    return listed + (f" and {more} more" if more > 0 else "")


def no_individual(store: ObjectStore, timeline: list[Row], name_of: dict[str, str], log: Log) -> list[str]:
    """The faces whose track had no face good enough to vote: never part of an individual, shown apart (the best
    face of each such track, best first)."""
    faces = [f for f in timeline if f["individual"] is None]
    if not faces:
        return []
    best: dict[tuple[str, int], Row] = {}
    for f in sorted(faces, key=by_quality):
        best.setdefault((f["video_sha256"], f["track"]), f)
    shown = sorted(best.values(), key=by_quality)[:SHEET_SIZE]
    thumbs = "".join(thumbnail(store, f, name_of, log) for f in shown)
    return [
        "<h2>Faces with no individual</h2>",
        f'<div class="ind" style="border-left:6px solid {NO_INDIVIDUAL_COLOUR}">{len(faces)} faces in {len(best)} '
        "track(s) belong to no individual: no face of their track was good enough to vote (too small, blurred, "
        "turned away or badly exposed), so the track was not grouped, and its faces matched no individual clearly "
        "enough to take one. They are not among the unique faces and not in "
        f'the export. The best face of each such track, best first:<div class="sheet">{thumbs}</div></div>',
    ]
