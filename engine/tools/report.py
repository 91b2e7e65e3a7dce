"""A self-contained HTML report of a challenge: how it was grouped (embedder, threshold) and how to fix a wrong
individual, who appears (one contact sheet per individual, best faces first, and the faces in no individual), the
pairs of tracks the grouping was least sure about (with the TOML that fixes each), which prompts were found, when
each person is on screen in each video (one timeline per video), and where the run spent its time.

Thumbnails are embedded as base64 JPEG and timelines are inline SVG, so the file can be mailed or archived alone.
What each section shows and how to act on it: docs/report.md.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import ClusterSettings
from engine.faces.embedders import embedder_spec
from engine.store import Database, ObjectStore
from engine.tools.export import NO_PROMPT, prompt_at
from engine.tools.report_pairs import PairView, uncertain_pairs, video_refs
from engine.tools.report_sheets import SHEET_SIZE, colour, contact_sheets, no_individual

if TYPE_CHECKING:  # annotations only: these tools do not load torch
    from engine.types import Tick

__all__ = ["SHEET_SIZE", "grouping_of", "write_report"]

#: The embedder of runs recorded before the run's settings named it (the only one there was).
LEGACY_EMBEDDER = "dlib"

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}h1{margin-bottom:0}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f4f4f4}.sheet img{width:75px;height:75px;
margin:1px}.ind,.pair,.help{margin:1em 0;padding:.5em;border:1px solid #ddd;border-radius:6px}.muted{color:#777}
.small{font-size:85%}.novote{margin-top:.4em;padding-top:.3em;border-top:1px dashed #ccc}.novote img{opacity:.8}
figure{display:inline-block;margin:1px;text-align:center}figcaption{font-size:75%;color:#777}
.vs{margin:0 1em;font-size:150%;vertical-align:top}pre{background:#f6f6f6;padding:.4em;overflow-x:auto}
.help{background:#fafafa}
"""


def grouping_of(run: dict[str, Any] | None, cluster: ClusterSettings | None) -> tuple[str, float | None, str]:
    """(embedder, grouping threshold, where the threshold comes from) of the run.

    The run's own record wins (``settings["grouping"]["threshold"]`` when the run wrote it), then the challenge's
    ``[clustering] threshold``, then the embedder's ``group_similarity``.
    """
    settings = (run or {}).get("settings") or {}
    embedder = str(settings.get("embedder") or LEGACY_EMBEDDER)
    recorded = (settings.get("grouping") or {}).get("threshold")
    if recorded is not None:
        return embedder, float(recorded), "recorded by the run"
    if cluster is not None and cluster.threshold is not None:
        return embedder, cluster.threshold, "the challenge's [clustering] threshold"
    try:
        default = embedder_spec(embedder).group_similarity
    except ValueError:
        return embedder, None, "unknown embedder"
    if cluster is None:
        return embedder, default, "the embedder's default; the challenge's [clustering] table was not read"
    return embedder, default, "the embedder's default"


def _timeline(video: dict, faces: list[dict], prompts: list[dict]) -> str:
    """SVG: prompt intervals as bands, one row of dots per individual at the times it is seen (faces that did not
    vote hollow), and a grey row for the faces in no individual."""
    duration = max(float(video["duration_s"] or 0), max((f["pts_s"] for f in faces), default=0.0), 1e-3)
    inds = sorted({f["individual"] for f in faces}, key=lambda i: (i is None, i or 0))
    width, row_h, left = 900, 14, 80
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
        y, c = 20 + row * row_h, colour(ind)
        parts.append(
            f'<text x="0" y="{y + 4}" font-size="10">{"no individual" if ind is None else f"person {ind}"}</text>'
        )
        for f in faces:
            if f["individual"] == ind:
                fill = c if f.get("voted", True) else "none"
                parts.append(f'<circle cx="{x(f["pts_s"]):.1f}" cy="{y}" r="3" fill="{fill}" stroke="{c}"/>')
    parts.append(
        f'<text x="{left}" y="{height - 1}" font-size="9" class="muted">0 s</text>'
        f'<text x="{width - 40}" y="{height - 1}" font-size="9">{duration:.1f} s</text></svg>'
    )
    return "".join(parts)


def write_report(
    db: Database,
    store: ObjectStore,
    challenge: str,
    out: Path,
    log: Callable[[str], None] = print,
    *,
    cluster: ClusterSettings | None = None,
    progress: Tick | None = None,
) -> Path:
    """Write the HTML report of ``challenge`` to ``out``; ``cluster`` (the challenge's ``[clustering]`` table) names
    the threshold the run grouped with when the run did not record it. A challenge never run against ``db`` is a
    ``NothingStored`` error, not an empty report (most often the name or ``--db`` is wrong)."""
    db.require_run(challenge)
    unique = db.unique_faces(challenge)
    subvideos = db.subvideos(challenge)
    videos = db.videos(challenge)
    timeline = db.face_timeline(challenge)
    run = db.last_run(challenge)
    name_of = {v["sha256"]: v["file_name"] for v in videos}
    embedder, threshold, source = grouping_of(run, cluster)

    body = [f"<h1>Challenge {html.escape(challenge)}</h1>", _summary(videos, subvideos, timeline, unique)]
    body.append(_grouping(embedder, threshold, source))
    body.append(_how_to_fix(threshold))
    body += contact_sheets(store, unique, timeline, name_of, log, progress)
    body += no_individual(store, timeline, name_of, log)
    if threshold is not None:
        view = PairView(store, timeline, name_of, video_refs(videos), log)
        body += uncertain_pairs(view, db.similarities(challenge), threshold)
    body += _prompt_counts(subvideos, unique)
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


def _summary(videos: list[dict], subvideos: list[dict], timeline: list[dict], unique: list[dict]) -> str:
    individuals = {f["individual"] for f in timeline} - {None}
    alone = sum(f["individual"] is None for f in timeline)
    silent = sum(not f["voted"] for f in timeline)
    return (
        f'<p class="muted">{len(videos)} videos · {len(subvideos)} prompts found · {len(timeline)} faces · '
        f"{len(individuals)} individuals · {len(unique)} unique faces · {alone} faces in no individual · "
        f"{silent} faces did not vote</p>"
    )


def _grouping(embedder: str, threshold: float | None, source: str) -> str:
    value = "unknown" if threshold is None else f"{threshold:.3f}"
    return (
        f"<p>Embedder <b>{html.escape(embedder)}</b> · grouping threshold <b>{value}</b> "
        f'<span class="muted">({html.escape(source)})</span></p>'
    )


def _how_to_fix(threshold: float | None) -> str:
    now = "" if threshold is None else f" (now {threshold:.3f})"
    return (
        '<div class="help"><b>How to fix a wrong individual.</b> All fixes go in the challenge TOML\'s '
        "<code>[clustering]</code> table. <i>One person split into two individuals</i>: find the pair under "
        '<a href="#unsure">Pairs the grouping was least sure about</a> → "closest tracks left apart" (or read the '
        "tracks off the two contact sheets) and paste its <code>manual_merges</code> line; run again: videos already "
        'stored are skipped and the individuals are rebuilt. <i>Two people in one individual</i>: under "least '
        "similar tracks grouped together\", paste the pair's <code>keep_apart</code> line and run again; if one "
        "track switches person partway, split it with a <code>manual_breaks</code> entry at the second it switches "
        "and run again with <code>--force</code> (breaks act when the video is tracked). <i>Many of either</i>: move "
        f"<code>threshold</code>{now}: lower joins more, higher splits more (it applies to every pair). Faces in no "
        "individual had no face good enough to vote in their track and matched no individual clearly; "
        "<code>min_quality</code> sets that floor (faces the network reads well vote whatever their quality, "
        '<code>confident_magnitude</code>). <i>A track on a sheet\'s "did not vote" strip that is someone '
        "else</i> (attached by its faces alone): a <code>keep_apart</code> line between it and a track of the "
        "sheet.</div>"
    )


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


def _timelines(videos: list[dict], timeline: list[dict], subvideos: list[dict]) -> list[str]:
    """One timeline per video: its prompts as bands, each individual's faces as dots (faces in no individual on a
    grey row)."""
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
