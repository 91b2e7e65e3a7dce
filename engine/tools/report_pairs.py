"""The pairs of tracks the grouping was least sure about, from the ``similarities`` table, so that a user can fix
them in the challenge's ``[clustering]`` table:

* near misses: the most similar track pairs that ended in *different* individuals, the closest one per pair of
  individuals (a ``manual_merges`` entry joins them at the next run);
* weak links: the least similar track pairs grouped into *one* individual, a few per individual (candidate wrong
  merges): a ``keep_apart`` entry keeps the two tracks in different individuals at the next run; a
  ``manual_breaks`` entry splits one track at a time (when a track switches person partway).

Only candidate pairs are stored (similarity at least the candidate floor), so two tracks of one individual with no
stored pair are not listed here.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from engine.store import ObjectStore
from engine.tools.report_sheets import Log, by_quality, thumbnail, track_label

Row = dict[str, Any]
Track = tuple[str, int]

#: Pairs shown in each of the two lists.
PAIRS_SHOWN = 10
#: Weak links shown per individual (its least similar pairs of tracks).
WEAK_PER_INDIVIDUAL = 2
#: Crops shown per track of a pair.
CROPS_PER_TRACK = 4


def video_refs(videos: list[Row]) -> dict[str, str]:
    """How a TOML entry names each video: its file name, or a 12-character sha256 prefix when two videos of the
    challenge share that name (both are accepted wherever ``[clustering]`` names a video)."""
    names = Counter(v["file_name"] for v in videos)
    return {v["sha256"]: v["file_name"] if names[v["file_name"]] == 1 else v["sha256"][:12] for v in videos}


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " and c != "\x7f" else f"\\u{ord(c):04x}" for c in escaped) + '"'


def merge_entry(pair: Row, refs: dict[str, str]) -> str:
    """The ``manual_merges`` (or ``keep_apart``) entry naming the pair's two tracks."""
    a, b = (toml_string(refs.get(pair[k], pair[k])) for k in ("video_a", "video_b"))
    return f"{{ video_a = {a}, track_a = {pair['track_a']}, video_b = {b}, track_b = {pair['track_b']} }},"


def break_entry(video: str, track: int, refs: dict[str, str], span: tuple[float, float]) -> str:
    """A ``manual_breaks`` entry template for one track, the time left for the user to choose."""
    return (
        f"{{ video = {toml_string(refs.get(video, video))}, track = {track}, at_s = S }},"
        f"  # S: the second where the face changes, within {span[0]:.1f}-{span[1]:.1f}"
    )


def split_pairs(similarities: list[Row], individual_of: dict[Track, int | None]) -> tuple[list[Row], list[Row]]:
    """(near misses, most similar first: the closest track pair of each pair of individuals; weak links, least
    similar first: at most :data:`WEAK_PER_INDIVIDUAL` per individual), ``PAIRS_SHOWN`` of each; pairs with a track
    in no individual are in neither."""
    near: dict[frozenset[int], Row] = {}
    weak: list[Row] = []
    for p in similarities:
        a, b = individual_of.get((p["video_a"], p["track_a"])), individual_of.get((p["video_b"], p["track_b"]))
        if a is None or b is None:
            continue
        row, key = {**p, "ind_a": a, "ind_b": b}, frozenset((a, b))
        if a == b:
            weak.append(row)
        elif key not in near or near[key]["cosine"] < row["cosine"]:
            near[key] = row
    shown: Counter[int] = Counter()
    weakest = []
    for row in sorted(weak, key=lambda p: p["cosine"]):
        if shown[row["ind_a"]] < WEAK_PER_INDIVIDUAL:
            shown[row["ind_a"]] += 1
            weakest.append(row)
    return sorted(near.values(), key=lambda p: -p["cosine"])[:PAIRS_SHOWN], weakest[:PAIRS_SHOWN]


class PairView:
    """What the pair cards need: each track's faces and the names of videos."""

    def __init__(
        self, store: ObjectStore, timeline: list[Row], name_of: dict[str, str], refs: dict[str, str], log: Log
    ):
        self.store, self.name_of, self.refs, self.log = store, name_of, refs, log
        self.faces: dict[Track, list[Row]] = defaultdict(list)
        for f in timeline:
            self.faces[(f["video_sha256"], f["track"])].append(f)

    def best(self, track: Track) -> str:
        """The track's best-quality faces, voters first."""
        faces = sorted(self.faces[track], key=lambda f: (not f["voted"], *by_quality(f)))[:CROPS_PER_TRACK]
        return "".join(thumbnail(self.store, f, self.name_of, self.log) for f in faces)

    def over_time(self, track: Track) -> str:
        """The track's faces spread evenly over its time, each captioned with its time (where to break it)."""
        faces = sorted(self.faces[track], key=lambda f: f["pts_s"])
        step = max(1, -(-len(faces) // CROPS_PER_TRACK))
        return "".join(thumbnail(self.store, f, self.name_of, self.log, f"{f['pts_s']:.1f} s") for f in faces[::step])

    def times(self, track: Track) -> set[float]:
        return {f["pts_s"] for f in self.faces[track]}

    def span(self, track: Track) -> tuple[float, float]:
        times = self.times(track) or {0.0}
        return min(times), max(times)

    def card(self, pair: Row, threshold: float, pictures: Callable[[Track], str], fix: str) -> str:
        """One pair: its tracks and individuals, similarity against the threshold, ``pictures`` of each track and
        the ``fix`` under them."""
        a, b = (pair["video_a"], pair["track_a"]), (pair["video_b"], pair["track_b"])
        people = (
            f"both person {pair['ind_a']}"
            if pair["ind_a"] == pair["ind_b"]
            else f"person {pair['ind_a']} and person {pair['ind_b']}"
        )
        delta = pair["cosine"] - threshold
        return (
            f'<div class="pair"><b>{track_label(*a, self.name_of)}</b> ↔ <b>{track_label(*b, self.name_of)}</b> '
            f"({people}) · similarity {pair['cosine']:.3f} vs threshold {threshold:.3f} ({delta:+.3f})"
            f'<div class="sheet"><span class="side">{pictures(a)}</span><span class="vs">↔</span>'
            f'<span class="side">{pictures(b)}</span></div>{fix}</div>'
        )


def uncertain_pairs(view: PairView, similarities: list[Row], threshold: float) -> list[str]:
    """The section: the near misses and the weak links, each pair with crops of both tracks and its TOML fix."""
    individual_of: dict[Track, int | None] = {}
    for track, faces in view.faces.items():
        individual_of[track] = faces[0]["individual"]
    near, weak = split_pairs(similarities, individual_of)
    body = [
        "<h2 id='unsure'>Pairs the grouping was least sure about</h2>",
        "<p>From the candidate track pairs (<code>similarities</code>): the similarity of two tracks is the "
        "cosine between their quality-weighted mean directions over their voting faces; two groups join when the "
        "same cosine of their means reaches the threshold (and their faces' mean pairwise cosine the pair "
        "threshold), "
        "never when they are seen in one frame.</p>",
        "<h3>Closest tracks left apart (candidate merges)</h3>",
    ]
    if near:
        body.append(
            "<p>The closest pair of tracks of each pair of individuals. If a pair is one person, paste its line "
            "into <code>manual_merges</code> under "
            "<code>[clustering]</code> in the challenge TOML and run again (stored videos are skipped; the "
            "individuals are rebuilt):</p><pre>[clustering]\nmanual_merges = [\n"
            "  { video_a = ..., track_a = N, video_b = ..., track_b = M },\n]</pre>"
        )
    for p in near:
        fix = f"<pre>{html.escape(merge_entry(p, view.refs), quote=False)}</pre>"
        body.append(view.card(p, threshold, view.best, fix))
    if not near:
        body.append("<p class='muted'>No candidate pair of tracks ended in two different individuals.</p>")
    body.append("<h3>Least similar tracks grouped together (candidate wrong merges)</h3>")
    if weak:
        body.append(_weak_intro())
    for p in weak:
        body.append(view.card(p, threshold, view.over_time, _break_fix(view, p)))
    if not weak:
        body.append("<p class='muted'>No individual holds a stored pair of its own tracks.</p>")
    return body


def _break_fix(view: PairView, pair: Row) -> str:
    """The ``keep_apart`` line of the pair, then the ``manual_breaks`` lines of its tracks that can be split (seen
    at two times at least)."""
    apart = f"<pre>keep_apart = [\n  {html.escape(merge_entry(pair, view.refs), quote=False)}\n]</pre>"
    ends = [(pair["video_a"], pair["track_a"]), (pair["video_b"], pair["track_b"])]
    lines = [break_entry(v, t, view.refs, view.span((v, t))) for v, t in ends if len(view.times((v, t))) > 1]
    if not lines:
        return apart
    return apart + "<pre>manual_breaks = [\n" + "".join(f"  {html.escape(x, quote=False)}\n" for x in lines) + "]</pre>"


def _weak_intro() -> str:
    return (
        "<p>At most two pairs per individual. If a pair is two people, paste its <code>keep_apart</code> line under "
        "<code>[clustering]</code> and run again (stored videos are skipped; the individuals are rebuilt). When one "
        "of the two tracks switches person partway (the crops below are spread over each track's time), split it "
        "there with a "
        "<code>manual_breaks</code> entry under <code>[clustering]</code> (keep the line of the track to split, with "
        "<code>S</code> replaced by the second where the face changes) and run again with <code>--force</code>: "
        "breaks act when a video is tracked, so its stored rows must be rebuilt. Otherwise a higher "
        "<code>[clustering] threshold</code> makes every grouping stricter (not this pair alone).</p>"
    )
