"""A self-contained HTML report of a challenge: who appears (one contact sheet per individual), which prompts were
found, when each person is on screen in each video (one timeline per video), and where the run spent its time.

Thumbnails are embedded as base64 JPEG and timelines are inline SVG, so the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from engine.store import Database, ObjectStore
from engine.tools.export import NO_PROMPT, prompt_at

#: Thumbnails per individual on its contact sheet.
SHEET_SIZE = 24
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}h1{margin-bottom:0}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f4f4f4}.sheet img{width:75px;height:75px;
margin:1px}.ind{margin:1em 0;padding:.5em;border:1px solid #ddd;border-radius:6px}.muted{color:#777}
"""


def _colour(individual: int) -> str:
    return _PALETTE[individual % len(_PALETTE)]


def _timeline(video: dict, faces: list[dict], prompts: list[dict]) -> str:
    """SVG: prompt intervals as bands, one row of dots per individual at the times it is seen."""
    duration = max(float(video["duration_s"] or 0), max((f["pts_s"] for f in faces), default=0.0), 1e-3)
    inds = sorted({f["individual"] for f in faces})
    width, row_h, left = 900, 14, 70
    height = 24 + row_h * max(1, len(inds))
    x = lambda t: left + (width - left - 10) * t / duration  # noqa: E731
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for p in prompts:
        parts.append(
            f'<rect x="{x(p["start_s"]):.1f}" y="0" width="{max(1.0, x(p["end_s"]) - x(p["start_s"])):.1f}" '
            f'height="{height}" fill="#fde9b5"><title>{html.escape(p["prompt"])} '
            f"{p['start_s']:.2f}–{p['end_s']:.2f}s (NCC {p['score']:.2f})</title></rect>"
            f'<text x="{x(p["start_s"]) + 2:.1f}" y="10" font-size="9">{html.escape(p["prompt"])}</text>'
        )
    for row, ind in enumerate(inds):
        y = 20 + row * row_h
        parts.append(f'<text x="0" y="{y + 4}" font-size="10">person {ind}</text>')
        for f in faces:
            if f["individual"] == ind:
                parts.append(f'<circle cx="{x(f["pts_s"]):.1f}" cy="{y}" r="3" fill="{_colour(ind)}"/>')
    parts.append(
        f'<text x="{left}" y="{height - 1}" font-size="9" class="muted">0 s</text>'
        f'<text x="{width - 40}" y="{height - 1}" font-size="9">{duration:.1f} s</text></svg>'
    )
    return "".join(parts)


def write_report(
    db: Database, store: ObjectStore, challenge: str, out: Path, log: Callable[[str], None] = print
) -> Path:
    """Write the HTML report of ``challenge`` to ``out``."""
    unique = db.unique_faces(challenge)
    subvideos = db.subvideos(challenge)
    videos = db.videos(challenge)
    timeline = db.face_timeline(challenge)
    run = db.last_run(challenge)
    faces_per_ind = Counter(f["individual"] for f in timeline)

    body = [f"<h1>Challenge {html.escape(challenge)}</h1>"]
    body.append(
        f'<p class="muted">{len(videos)} videos · {len(subvideos)} prompts found · {len(timeline)} faces · '
        f"{len(faces_per_ind)} individuals · {len(unique)} unique faces</p>"
    )
    body += _prompt_counts(subvideos, unique)
    body += _contact_sheets(store, unique, timeline, videos, log)
    body += _timelines(videos, timeline, subvideos)
    if run:
        body += _stage_timings(run)

    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(challenge)} report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _prompt_counts(subvideos: list[dict], unique: list[dict]) -> list[str]:
    """A table: per prompt, the videos where it was found and the unique faces seen while it plays."""
    lookup = prompt_at(subvideos)
    prompt_videos = Counter(s["prompt"] for s in subvideos)
    prompt_faces = Counter(lookup(f["video_sha256"], f["pts_s"]) for f in unique)
    names = sorted(set(prompt_videos) | set(prompt_faces), key=lambda p: (p == NO_PROMPT, p))
    body = ["<h2>Prompts</h2><table><tr><th>prompt</th><th>videos where found</th><th>unique faces</th></tr>"]
    body += [f"<tr><td>{html.escape(p)}</td><td>{prompt_videos[p]}</td><td>{prompt_faces[p]}</td></tr>" for p in names]
    body.append("</table>")
    return body


def _contact_sheets(
    store: ObjectStore, unique: list[dict], timeline: list[dict], videos: list[dict], log: Callable[[str], None]
) -> list[str]:
    """One contact sheet per individual (most faces first): up to ``SHEET_SIZE`` of its unique crops, evenly picked."""
    name_of = {v["sha256"]: v["file_name"] for v in videos}
    by_individual: dict[int, list[dict]] = defaultdict(list)
    for face in unique:
        by_individual[face["individual"]].append(face)
    faces_per_ind = Counter(f["individual"] for f in timeline)
    videos_per_ind = {i: len({f["video_sha256"] for f in timeline if f["individual"] == i}) for i in faces_per_ind}
    body = ["<h2>Individuals</h2>"]
    for ind in sorted(by_individual, key=lambda i: -faces_per_ind[i]):
        crops = by_individual[ind]
        step = max(1, len(crops) // SHEET_SIZE)
        thumbs = []
        for face in crops[::step][:SHEET_SIZE]:
            try:
                data = base64.b64encode(store.get_bytes(face["crop_key"])).decode()
            except Exception as exc:  # noqa: BLE001 - a missing crop leaves a gap, not a broken report
                log(f"note   crop {face['crop_key']} unreadable ({exc})")
                continue
            title = f"{name_of.get(face['video_sha256'], '')} {face['pts_s']:.1f}s"
            thumbs.append(f'<img src="data:image/jpeg;base64,{data}" title="{html.escape(title)}">')
        body.append(
            f'<div class="ind" style="border-left:6px solid {_colour(ind)}"><b>person {ind}</b> · '
            f"{faces_per_ind[ind]} faces in {videos_per_ind.get(ind, 0)} video(s) · {len(crops)} unique"
            f'<div class="sheet">{"".join(thumbs)}</div></div>'
        )
    return body


def _timelines(videos: list[dict], timeline: list[dict], subvideos: list[dict]) -> list[str]:
    """One timeline per video: its prompts as bands, each individual's faces as dots."""
    body = ["<h2>Timelines</h2>"]
    faces_by_video: dict[str, list[dict]] = defaultdict(list)
    for f in timeline:
        faces_by_video[f["video_sha256"]].append(f)
    prompts_by_video: dict[str, list[dict]] = defaultdict(list)
    for s in subvideos:
        prompts_by_video[s["video_sha256"]].append(s)
    for v in videos:
        logo = f" · logo covered at {v['logo_box']}" if v["logo_box"] else ""
        body.append(
            f"<h3>{html.escape(v['file_name'])} <span class='muted'>{v['width']}×{v['height']}, "
            f"{v['duration_s']:.1f} s{logo}</span></h3>"
            + _timeline(v, faces_by_video[v["sha256"]], prompts_by_video[v["sha256"]])
        )
    return body


def _stage_timings(run: dict) -> list[str]:
    """The last run's status, device and seconds per stage."""
    status, device = html.escape(str(run["status"])), html.escape(str(run["device"]))
    body = [f"<h2>Run {run['id']} ({status}, device {device})</h2>"]
    body.append("<table><tr><th>stage</th><th>seconds</th></tr>")
    body += [f"<tr><td>{html.escape(k)}</td><td>{v:.2f}</td></tr>" for k, v in (run["stage_seconds"] or {}).items()]
    body.append("</table>")
    return body
