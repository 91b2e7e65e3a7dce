"""Identity challenges built from one labelled clip, so that the engine's *cross-video* grouping is scored too.

    .venv/bin/python -m benchmarks.identity.challenges build CLIP OUT [--parts 3] [--segment 2]
    ENGINE_WEIGHTS_MIRROR=../shared/weights .venv/bin/python cli.py run --challenge OUT/challenge.toml \
        --videos OUT/videos --db sqlite:///OUT/engine.db --store OUT/store --runtype prod --embedder hse --quiet
    .venv/bin/python -m benchmarks.identity.challenges score OUT sqlite:///OUT/engine.db LABELS FACES_CSV

Why: ``peers.py`` scores one video, where only the grouping of tracks *within* a video is exercised. Here the clip
is cut into ``parts`` consecutive time ranges (or dealt out round robin in segments of ``--segment`` seconds, so
that a person on screen longer than a segment is in several participants), each written as one participant video
fitted into 720x1280 the way ``benchmarks/make_corpus.py`` fits its pictures (full width, centred, black bars),
and the faces the engine stores for those videos are given the labels made by eye for the source clip
(``<stem>.labels.csv``, see ``LABELS.md``).

Exact mapping (why frames are not cut by ffmpeg): the clip is decoded once by the engine's own decoder
(``engine.media.decode.iter_frames``, torchcodec, the same pts the labels' ``time_s`` carry); every decoded frame
goes, in order, to exactly one participant, letterboxed with torch and piped as raw RGB to ffmpeg at the clip's
frame rate. So participant frame ``i`` *is* a known source frame, and ``mapping.json`` records per participant
file the source pts of each of its frames, the frame rate and the placement
``x' = ox + sx * x``, ``y' = oy + sy * y``. A stored face at participant time ``t'`` is participant frame
``round(t' * fps)``; its source pts and box follow. Parts start at the source frame nearest to a source sample
time (``start + k * interval``), so a participant's sample grid falls on the source's (within one frame: a source
sample step is not a whole number of frames, so a participant sample may be the frame next to the labelled one).

Matching (``label_stored_faces``): each stored face's source pts is matched to the nearest labelled sample time
(within half the sampling interval), then its source box to the labelled boxes of that frame, one to one, best IoU
first, IoU >= ``MIN_IOU``. A stored face with no match is ``unmatched`` and, like ``unknown``, is not scored.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import math
import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.make_corpus import SWS_FLAGS

if TYPE_CHECKING:
    import torch

    from benchmarks.identity.score import Scores

#: The participant frame, as in ``benchmarks/make_corpus.py`` (portrait phone video).
WIDTH, HEIGHT = 720, 1280
#: The engine's (and the labels') sampling interval, seconds.
INTERVAL = 0.5
#: A stored face takes a labelled face's label when their boxes (in source pixels) overlap at least this much.
MIN_IOU = 0.5
UNMATCHED = "unmatched"

Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------------------------------- the mapping


@dataclass(frozen=True)
class Placement:
    """Where the source picture sits in a participant frame: ``x' = ox + sx * x``, ``y' = oy + sy * y`` (pixel
    edges, i.e. the convention of the detector's boxes and of ``interpolate(align_corners=False)``)."""

    sx: float
    sy: float
    ox: int
    oy: int
    width: int  # the scaled picture's size inside the participant frame
    height: int

    def to_participant(self, box: Sequence[float]) -> Box:
        x1, y1, x2, y2 = box
        return (self.ox + self.sx * x1, self.oy + self.sy * y1, self.ox + self.sx * x2, self.oy + self.sy * y2)

    def to_source(self, box: Sequence[float]) -> Box:
        x1, y1, x2, y2 = box
        return (
            (x1 - self.ox) / self.sx, (y1 - self.oy) / self.sy, (x2 - self.ox) / self.sx, (y2 - self.oy) / self.sy
        )  # fmt: skip


def fit(src_w: int, src_h: int, out_w: int = WIDTH, out_h: int = HEIGHT) -> Placement:
    """Fit ``src_w x src_h`` into ``out_w x out_h`` keeping its aspect, centred (full width for a landscape clip,
    as ``make_corpus._picture_filter`` does); ``sx``/``sy`` are the exact ratios of the rounded picture size."""
    s = min(out_w / src_w, out_h / src_h)
    w, h = min(out_w, round(src_w * s)), min(out_h, round(src_h * s))
    return Placement(w / src_w, h / src_h, (out_w - w) // 2, (out_h - h) // 2, w, h)


@dataclass
class Participant:
    """One participant video: its frame ``i`` is the source frame with pts ``source_pts[i]`` (consecutive source
    frames from ``first_frame``, or several cuts when the clip is dealt in segments), re-timed at a constant
    ``fps_num / fps_den`` from 0, placed by ``placement``."""

    file: str
    first_frame: int
    source_pts: list[float]
    fps_num: int
    fps_den: int
    placement: Placement
    first_sample: int = 0  # the source sample number k at which this part starts

    @property
    def fps(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den)

    @property
    def first_pts(self) -> float:
        return self.source_pts[0]

    def frame_at(self, t: float) -> int:
        """The participant frame shown at participant pts ``t`` (frames sit at ``i / fps`` exactly)."""
        return round(t * self.fps_num / self.fps_den)

    def participant_time(self, frame: int) -> float:
        return frame * self.fps_den / self.fps_num

    def source_time(self, t: float) -> float | None:
        """The source pts of the frame at participant pts ``t`` (``None`` outside the participant)."""
        i = self.frame_at(t)
        return self.source_pts[i] if 0 <= i < len(self.source_pts) else None

    def time_of_source(self, pts: float) -> float | None:
        """Participant pts of the source frame with pts ``pts`` (nearest; ``None`` if not in this participant)."""
        i = int(np.argmin(np.abs(np.asarray(self.source_pts) - pts)))
        if abs(self.source_pts[i] - pts) > 1e-4:
            return None
        return self.participant_time(i)

    def to_json(self) -> dict:
        d = asdict(self)
        d["first_pts"] = self.first_pts
        d["fps"] = self.fps_num / self.fps_den
        d["frames"] = len(self.source_pts)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Participant:
        return cls(
            d["file"], int(d["first_frame"]), [float(x) for x in d["source_pts"]], int(d["fps_num"]),
            int(d["fps_den"]), Placement(**d["placement"]), int(d.get("first_sample", 0)),
        )  # fmt: skip


def part_starts(start_s: float, end_s: float, parts: int, interval: float = INTERVAL) -> list[float]:
    """Source sample times at which parts 1 .. parts-1 start: the engine samples ``start + k * interval`` for
    ``k = 0 .. floor((end - start) / interval)``; the samples are shared out as evenly as possible."""
    n = math.floor((end_s - start_s) / interval + 1e-9) + 1
    if not 1 <= parts <= n:
        raise ValueError(f"cannot cut {n} samples into {parts} parts")
    return [start_s + round(p * n / parts) * interval for p in range(1, parts)]


def assign_parts(pts: Iterable[float], first_pts: Sequence[float], part: int = 0) -> list[int]:
    """The part of each frame (pts in display order): part ``p`` starts at the frame whose pts is
    ``first_pts[p - 1]`` (increasing). ``part`` is the part of the frame before ``pts`` (to go on across chunks)."""
    out: list[int] = []
    for t in pts:
        while part < len(first_pts) and t >= first_pts[part] - 1e-9:
            part += 1
        out.append(part)
    return out


def sampled_pts(clip: Path, targets: Sequence[float]) -> list[float]:
    """The pts of the frames the engine samples for ``targets`` (``engine.media.decode.sample_frames``' rule: the
    frame played at ``target + frame_duration / 2``, i.e. the frame nearest the target), so that a part starts on
    the very frame the source's labelled sample shows."""
    from engine.media.streams import _open_video, _video_info

    decoder = _open_video(clip)
    video = _video_info(decoder)
    last_ok = math.nextafter(video.end_s, -math.inf)
    queries = [min(t + video.frame_duration_s / 2, last_ok) for t in targets]
    return decoder.get_frames_played_at(queries).pts_seconds.tolist() if queries else []


# -------------------------------------------------------------------------------------------------- matching


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(
    stored: Sequence[tuple[object, Sequence[float]]],
    labelled: Sequence[tuple[str, Sequence[float]]],
    min_iou: float = MIN_IOU,
) -> dict[object, tuple[str, float]]:
    """One-to-one matches of one frame's stored boxes to its labelled boxes: all pairs with IoU >= ``min_iou``,
    best IoU first, each box used once. Returns ``{stored key: (labelled id, IoU)}``."""
    pairs = sorted(
        ((iou(sb, lb), i, j) for i, (_, sb) in enumerate(stored) for j, (_, lb) in enumerate(labelled)),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    used_s: set[int] = set()
    used_l: set[int] = set()
    out: dict[object, tuple[str, float]] = {}
    for v, i, j in pairs:
        if v < min_iou:
            break
        if i in used_s or j in used_l:
            continue
        used_s.add(i)
        used_l.add(j)
        out[stored[i][0]] = (labelled[j][0], v)
    return out


def nearest_time(times: Sequence[float], t: float, tolerance: float) -> float | None:
    """The element of sorted ``times`` nearest to ``t``, if within ``tolerance``."""
    k = bisect.bisect_left(times, t)
    best = min((times[i] for i in (k - 1, k) if 0 <= i < len(times)), key=lambda x: abs(x - t), default=None)
    return best if best is not None and abs(best - t) <= tolerance else None


# ---------------------------------------------------------------------------------------------------- building


def frame_rate(clip: Path) -> Fraction:
    """The video stream's frame rate as a fraction (``avg_frame_rate``, else ``r_frame_rate``), for ffmpeg's ``-r``."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=avg_frame_rate,r_frame_rate",
         "-of", "json", str(clip)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    stream = json.loads(out)["streams"][0]
    for key in ("avg_frame_rate", "r_frame_rate"):
        num, _, den = stream.get(key, "0/0").partition("/")
        if int(den or 0) and int(num):
            return Fraction(int(num), int(den))
    raise RuntimeError(f"{clip}: no frame rate")


def letterbox(frames: torch.Tensor, place: Placement, out_w: int = WIDTH, out_h: int = HEIGHT) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` → uint8 ``[N, out_h, out_w, 3]`` (HWC, for ffmpeg's rgb24), picture scaled by
    antialiased bicubic and pasted at ``(ox, oy)`` on black."""
    import torch
    import torch.nn.functional as F

    n = frames.shape[0]
    out = torch.zeros((n, out_h, out_w, 3), dtype=torch.uint8)
    for lo in range(0, n, 8):  # a few frames at a time: float copies of 720p frames are large
        x = frames[lo : lo + 8].float()
        y = F.interpolate(x, size=(place.height, place.width), mode="bicubic", antialias=True, align_corners=False)
        y = y.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        out[lo : lo + 8, place.oy : place.oy + place.height, place.ox : place.ox + place.width] = y
    return out


class _Writer:
    """An ffmpeg process encoding piped rgb24 frames to H.264 yuv420p at a constant rate from pts 0."""

    def __init__(self, path: Path, fps: Fraction, crf: int) -> None:
        self.path = path
        cmd = [
            "ffmpeg", "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}",
            "-r", f"{fps.numerator}/{fps.denominator}", "-i", "-",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-sws_flags", SWS_FLAGS,
            "-movflags", "+faststart", str(path),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)

    def write(self, frames: torch.Tensor) -> None:  # uint8 [N, H, W, 3]
        assert self.proc.stdin is not None
        self.proc.stdin.write(frames.contiguous().numpy().tobytes())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        if self.proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed writing {self.path}")


def _add_audio(video: Path, clip: Path, start: float, duration: float) -> bool:
    """Mux the clip's audio from source time ``start`` (absolute: ``-seek_timestamp``) for ``duration`` into
    ``video``, the picture copied; ``False`` (video left as it is) when the clip has no audio or ffmpeg fails."""
    tmp = video.with_suffix(".audio.mp4")
    cmd = [
        "ffmpeg", "-y", "-v", "error", "-i", str(video), "-seek_timestamp", "1", "-ss", f"{start:.6f}",
        "-t", f"{duration:.6f}", "-i", str(clip), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
        "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(tmp),
    ]  # fmt: skip
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(video)
    return True


def build(
    clip: Path | str, out_dir: Path | str, parts: int = 3, crf: int = 20, audio: bool = True, segment_s: float = 0.0
) -> Path:
    """Cut ``clip`` into ``parts`` participant videos under ``out_dir/videos``, write ``mapping.json`` and
    ``challenge.toml`` (no prompts: only the faces, tracks and grouping matter here); returns the TOML's path.

    ``segment_s`` (a multiple of the 0.5 s sampling interval; 0: off) deals the clip out in segments of that length,
    round robin (segment ``k`` goes to participant ``k % parts``), so that a person on screen longer than one
    segment appears in several participants: each participant is then several cuts of the clip, and the grouping
    across videos is exercised even on a clip where every person has one shot. The sound is left out then (it would
    not follow the cuts)."""
    from engine.media.decode import iter_frames
    from engine.media.streams import probe

    clip, out = Path(clip), Path(out_dir)
    info = probe(clip)
    video = info.video
    fps = frame_rate(clip)
    place = fit(video.width, video.height)
    if segment_s:
        steps = round(segment_s / INTERVAL)
        if steps < 1 or abs(steps * INTERVAL - segment_s) > 1e-9:
            raise ValueError(f"segment_s must be a multiple of {INTERVAL} s (got {segment_s})")
        n = math.floor((video.end_s - video.start_s) / INTERVAL + 1e-9) + 1
        starts = [video.start_s + k * INTERVAL for k in range(steps, n, steps)]
        audio = False
    else:
        starts = part_starts(video.start_s, video.end_s, parts)
    first_pts = sampled_pts(clip, starts)
    stem = clip.stem
    (out / "videos").mkdir(parents=True, exist_ok=True)
    for old in (out / "videos").glob("*.mp4"):
        old.unlink()
    made: dict[int, Participant] = {}
    writers: dict[int, _Writer] = {}
    segment = 0
    for batch in iter_frames(clip, chunk=16):
        pts = batch.pts_s.tolist()
        segments = assign_parts(pts, first_pts, segment)
        segment = segments[-1]
        boxed = letterbox(batch.frames, place)
        for i, seg in enumerate(segments):
            p = seg % parts
            if p not in made:
                name = f"{stem}_p{p + 1:02d}.mp4"
                k = 0 if seg == 0 else round((starts[seg - 1] - video.start_s) / INTERVAL)
                made[p] = Participant(name, int(batch.index[i]), [], fps.numerator, fps.denominator, place, k)
                writers[p] = _Writer(out / "videos" / name, fps, crf)
            writers[p].write(boxed[i : i + 1])
            made[p].source_pts.append(pts[i])
    for writer in writers.values():
        writer.close()
    made_list = [made[p] for p in sorted(made)]
    if len(made_list) != parts:
        raise RuntimeError(f"{clip}: made {len(made_list)} participants, wanted {parts}")
    with_audio = []
    for p in made_list:
        _check_participant(out / "videos" / p.file, p)
        if audio and info.audio is not None:
            with_audio.append(_add_audio(out / "videos" / p.file, clip, p.first_pts, float(len(p.source_pts) / p.fps)))
    mapping = {
        "clip": str(clip.resolve()),
        "source": {"width": video.width, "height": video.height, "start_s": video.start_s, "end_s": video.end_s,
                   "fps_num": fps.numerator, "fps_den": fps.denominator},
        "interval_s": INTERVAL,
        "size": [WIDTH, HEIGHT],
        "crf": crf,
        "audio": bool(with_audio) and all(with_audio),
        "segment_s": segment_s,
        "participants": {p.file: p.to_json() for p in made_list},
    }  # fmt: skip
    (out / "mapping.json").write_text(json.dumps(mapping, indent=1))
    toml = out / "challenge.toml"
    toml.write_text(
        f"# Identity challenge written by benchmarks/identity/challenges.py from {clip.name} ({parts} parts"
        f"{f', dealt in {segment_s:g} s segments' if segment_s else ''}).\n"
        f"# No prompts: only faces, tracks and the grouping across videos are measured.\n"
        f'name = "identity_{stem}"\nbaseline = "videos/{made_list[0].file}"\nvideos = "videos"\n',
        encoding="utf-8",
    )
    return toml


def _check_participant(path: Path, p: Participant) -> None:
    """The written file decodes to exactly the participant's frame count, at pts ``i / fps`` (the mapping's
    assumption), starting at 0."""
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(str(path), seek_mode="exact")
    n = len(dec)
    if n != len(p.source_pts):
        raise RuntimeError(f"{path.name}: {n} frames decoded, {len(p.source_pts)} written")
    got = dec.get_frames_at([0, n // 2, n - 1]).pts_seconds.tolist()
    want = [p.participant_time(i) for i in (0, n // 2, n - 1)]
    if max(abs(a - b) for a, b in zip(got, want, strict=True)) > 1e-3:
        raise RuntimeError(f"{path.name}: frame pts {got} are not i / fps {want}")


# ------------------------------------------------------------------------------------------- labelling the store


@dataclass
class StoredFace:
    """A face the engine stored for a participant video, with the label of the source face it shows."""

    face_id: int
    video: str
    pts_s: float
    box: Box
    label: str = UNMATCHED
    view: str = ""
    source_face: str = ""
    iou: float = 0.0
    source_pts: float | None = None
    track: int | None = None
    individual: int | None = None
    embedder: str | None = None
    quality: float | None = None
    descriptor: np.ndarray | None = field(default=None, repr=False)


def read_mapping(out_dir: Path | str) -> dict[str, Participant]:
    data = json.loads((Path(out_dir) / "mapping.json").read_text())
    return {name: Participant.from_json(d) for name, d in data["participants"].items()}


def read_store(db_url: str, files: Iterable[str]) -> list[StoredFace]:
    """The stored faces of the participant videos ``files`` with their track and individual; columns or tables an
    older engine did not have (``embedder``, ``quality``, ``faces_with_final_ind``) read as ``None``."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(db_url)
    insp = inspect(engine)
    tables = set(insp.get_table_names())
    cols = {c["name"] for c in insp.get_columns("faces")}
    extra = [f"f.{c}" if c in cols else f"NULL AS {c}" for c in ("embedder", "quality")]
    intra = "i.track" if "faces_with_intra_ind" in tables else "NULL"
    final = "fi.individual" if "faces_with_final_ind" in tables else "NULL"
    joins = (" LEFT JOIN faces_with_intra_ind i ON i.face_id = f.id" if "faces_with_intra_ind" in tables else "") + (
        " LEFT JOIN faces_with_final_ind fi ON fi.face_id = f.id" if "faces_with_final_ind" in tables else ""
    )
    sql = (
        f"SELECT f.id, v.file_name, f.pts_s, f.x1, f.y1, f.x2, f.y2, f.embedding, {', '.join(extra)}, "
        f"{intra} AS track, {final} AS individual FROM faces f JOIN videos v ON v.sha256 = f.video_sha256{joins} "
        "ORDER BY v.file_name, f.pts_s, f.id"
    )
    wanted = set(files)
    out = []
    with engine.connect() as conn:
        for r in conn.execute(text(sql)):
            if r.file_name not in wanted:
                continue
            desc = np.frombuffer(r.embedding, dtype="<f4").copy() if r.embedding is not None else None
            out.append(StoredFace(
                int(r.id), r.file_name, float(r.pts_s), (float(r.x1), float(r.y1), float(r.x2), float(r.y2)),
                track=r.track, individual=r.individual, embedder=r.embedder, quality=r.quality, descriptor=desc,
            ))  # fmt: skip
    engine.dispose()
    return out


def read_labelled(labels_csv: Path | str, faces_csv: Path | str) -> dict[float, list[tuple[str, Box, str, str]]]:
    """Labelled source faces by sample time: ``(face id, box, label, view)``; faces with no label are left out."""
    with open(labels_csv) as fh:
        labels = {r["face_id"]: (r["label"], r.get("view") or "face") for r in csv.DictReader(fh)}
    by_time: dict[float, list[tuple[str, Box, str, str]]] = defaultdict(list)
    with open(faces_csv) as fh:
        for r in csv.DictReader(fh):
            if r["face_id"] not in labels:
                continue
            box = (float(r["x1"]), float(r["y1"]), float(r["x2"]), float(r["y2"]))
            by_time[float(r["time_s"])].append((r["face_id"], box, *labels[r["face_id"]]))
    return dict(by_time)


def label_stored_faces(
    db_url: str,
    out_dir: Path | str,
    labels_csv: Path | str,
    faces_csv: Path | str,
    interval: float = INTERVAL,
    min_iou: float = MIN_IOU,
) -> list[StoredFace]:
    """Every stored face of the challenge's participant videos, labelled with the labelled source face it shows
    (``unmatched`` when none: a face the source pass did not find, or a box that moved with the smaller picture)."""
    mapping = read_mapping(out_dir)
    faces = read_store(db_url, mapping)
    labelled = read_labelled(labels_csv, faces_csv)
    times = sorted(labelled)
    frames: dict[tuple[str, int], list[StoredFace]] = defaultdict(list)
    for f in faces:
        frames[(f.video, mapping[f.video].frame_at(f.pts_s))].append(f)
    for (video, _), group in frames.items():
        part = mapping[video]
        src_t = part.source_time(group[0].pts_s)
        for f in group:
            f.source_pts = src_t
        t = nearest_time(times, src_t, interval / 2) if src_t is not None else None
        if t is None:
            continue
        candidates = labelled[t]
        found = match_boxes(
            [(f.face_id, part.placement.to_source(f.box)) for f in group], [(c[0], c[1]) for c in candidates], min_iou
        )
        info = {c[0]: c for c in candidates}
        for f in group:
            if f.face_id in found:
                sid, v = found[f.face_id]
                f.source_face, f.iou, f.label, f.view = sid, v, info[sid][2], info[sid][3]
    return faces


# ----------------------------------------------------------------------------------------------------- scoring


def peer_methods(desc: np.ndarray) -> dict[str, list[int]]:
    """``peers.methods``' peers (not its engine part) on the stored descriptors: HSE (1024-d unit) at the fixed
    cosine sweep as Euclidean ``sqrt(2 t)``, dlib (128-d) at its own Euclidean thresholds."""
    from benchmarks.identity.peers import HSE_SWEEP, chinese_whispers, dbscan

    out: dict[str, list[int]] = {}
    if desc.shape[1] == 128:
        for t in (0.45, 0.5):
            out[f"dlib chinese_whispers {t}"] = chinese_whispers(desc, t)
        out["DBSCAN eps=0.5 min=3"] = dbscan(desc, 0.5, 3)
        return out
    unit = desc / np.linalg.norm(desc, axis=1, keepdims=True)
    for t in HSE_SWEEP:
        out[f"chinese_whispers cos dist {t}"] = chinese_whispers(unit, float(np.sqrt(2 * t)))
    for t in HSE_SWEEP:
        out[f"DBSCAN cos dist {t} min=3"] = dbscan(unit, float(np.sqrt(2 * t)), 3)
    return out


def cross_video_pairs(faces: Sequence[StoredFace], clusters: Sequence[object]) -> tuple[float, float, int, int]:
    """Pairwise precision and recall over pairs of faces in *different* videos (what only a grouping across videos
    can get right or wrong), the number of same-person pairs across videos and of pairs the clustering puts
    together across videos. ``None`` or negative: unassigned (a singleton)."""

    def key(f: StoredFace, c: object) -> object:
        return ("singleton", f.face_id) if c is None or (isinstance(c, int | float) and c < 0) else c

    def pairs_across(groups: dict[object, Counter]) -> int:  # pairs of a group's faces that are in two videos
        return sum((sum(v.values()) ** 2 - sum(n * n for n in v.values())) // 2 for v in groups.values())

    g_pc: dict[object, Counter] = defaultdict(Counter)
    g_c: dict[object, Counter] = defaultdict(Counter)
    g_p: dict[object, Counter] = defaultdict(Counter)
    for f, c in zip(faces, clusters, strict=True):
        k = key(f, c)
        g_pc[(f.label, k)][f.video] += 1
        g_c[k][f.video] += 1
        g_p[f.label][f.video] += 1
    tp, pred, true = pairs_across(g_pc), pairs_across(g_c), pairs_across(g_p)
    return (tp / pred if pred else math.nan), (tp / true if true else math.nan), true, pred


#: The scoring view over every labelled person face of the source, found by the run or not (see ``every_labelled``).
EVERY_VIEW = "every labelled person face, those the run did not find as singletons"


def every_labelled(
    scored: Sequence[StoredFace], results: dict[str, list[object]], labels_csv: Path | str, faces_csv: Path | str
) -> dict[str, Scores]:
    """Each method's clusters scored over *every* labelled person face of the source clip: a face the run did not
    find (or did not store with a descriptor) is an unassigned singleton. The views above score the faces a run found,
    so a detector that misses the hard faces (tiny, blurred, turned) would score higher there; here finding them pays.
    A source face shown by two stored faces takes the first one's cluster."""
    from benchmarks.identity.score import IGNORED, score

    people = {
        fid: label for entries in read_labelled(labels_csv, faces_csv).values() for fid, _, label, _ in entries
        if label not in IGNORED
    }  # fmt: skip
    out = {}
    for name, clusters in results.items():
        of_source: dict[str, object] = {}
        for f, c in zip(scored, clusters, strict=True):
            if f.source_face in people:
                of_source.setdefault(f.source_face, c if c is not None else ("none", f.source_face))
        full = {fid: of_source.get(fid, ("none", fid)) for fid in people}
        out[name] = score(people, full)
    return out


def score_challenge(
    out_dir: Path | str, db_url: str, labels_csv: Path | str, faces_csv: Path | str, write: Path | None = None
) -> tuple[list[StoredFace], dict[str, dict[str, Scores]]]:
    """Print the match summary, then the engine's individuals (and tracks) next to the peers on the same stored
    descriptors, with ``score.py``'s figures and the cross-video pair precision / recall; returns the stored faces
    and, per scoring view, every method's scores."""
    from benchmarks.identity.score import HEADER, IGNORED, row, score

    table: dict[str, dict[str, Scores]] = {}
    faces = label_stored_faces(db_url, out_dir, labels_csv, faces_csv)
    mapping = read_mapping(out_dir)
    print(f"stored faces: {len(faces)} in {len(mapping)} participant videos")
    for name in mapping:
        mine = [f for f in faces if f.video == name]
        got = sum(f.label != UNMATCHED for f in mine)
        print(f"  {name}: {len(mine)} stored, {got} matched to a labelled face ({got / max(len(mine), 1):.0%})")
    matched = [f for f in faces if f.label != UNMATCHED]
    labelled_faces = sum(len(v) for v in read_labelled(labels_csv, faces_csv).values())
    distinct = len({f.source_face for f in matched})
    print(f"matched: {len(matched)} of {len(faces)} stored faces; {distinct} of {labelled_faces} labelled source faces")
    print("labels: " + ", ".join(f"{k} {n}" for k, n in sorted(Counter(f.label for f in faces).items())))
    persons = defaultdict(set)
    for f in matched:
        if f.label not in IGNORED:
            persons[f.label].add(f.video)
    print("videos per person: " + ", ".join(f"{p} {len(v)}" for p, v in sorted(persons.items())))
    scored = [f for f in matched if f.descriptor is not None]
    if not scored:
        print("no matched face has a descriptor: nothing to score")
        return faces, table
    embedders = {f.embedder for f in scored}
    if len({f.descriptor.shape for f in scored}) > 1:  # type: ignore[union-attr]
        raise SystemExit(f"descriptors of several embedders ({embedders}) in one store: score one run at a time")
    desc = np.stack([f.descriptor for f in scored]).astype(np.float64)
    results: dict[str, list[object]] = {}
    if any(f.individual is not None for f in scored):
        results["engine individuals"] = [f.individual for f in scored]
    else:  # an older store without faces_with_final_ind, or a run that grouped nothing
        print("no stored face has an individual: the engine's row is left out")
    results["engine tracks (per video)"] = [(f.video, f.track) if f.track is not None else None for f in scored]
    results.update(peer_methods(desc))
    ids = [str(f.face_id) for f in scored]
    labels = dict(zip(ids, (f.label for f in scored), strict=True))
    views = dict(zip(ids, (f.view for f in scored), strict=True))
    keep = [f.label not in IGNORED for f in scored]
    print(f"\ndescriptors: {desc.shape[1]}-d, embedder {', '.join(str(e) for e in embedders)}")
    from benchmarks.identity.peers import VIEWS

    for title, exclude, junk in VIEWS:
        sel = [i for i, f in enumerate(scored) if keep[i] and f.view not in exclude]
        pairs = cross_video_pairs([scored[i] for i in sel], [None] * len(sel))[2]
        print(f"\n{title} ({pairs} same-person pairs across videos)\n{HEADER} {'xP':>5} {'xR':>5} {'xpairs':>6}")
        for name, clusters in results.items():
            s = score(labels, dict(zip(ids, clusters, strict=True)), views, exclude, junk)
            table.setdefault(title, {})[name] = s
            xp, xr, _, predicted = cross_video_pairs([scored[i] for i in sel], [clusters[i] for i in sel])
            print(f"{row(name, s)} {xp:>5.3f} {xr:>5.3f} {predicted:>6}")
    table[EVERY_VIEW] = every_labelled(scored, results, labels_csv, faces_csv)
    found = len({f.source_face for f in scored if f.label not in IGNORED})
    print(f"\n{EVERY_VIEW} ({found} of them found)\n{HEADER}")
    for name, s in table[EVERY_VIEW].items():
        print(row(name, s))
    if write is not None:
        write.parent.mkdir(parents=True, exist_ok=True)
        with open(write, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["stored_face", "video", "pts_s", "source_pts", "source_face", "iou", "label", "view", "track",
                        "individual", "embedder", "quality"])  # fmt: skip
            for f in faces:
                src = None if f.source_pts is None else round(f.source_pts, 4)
                w.writerow([f.face_id, f.video, round(f.pts_s, 4), src, f.source_face, round(f.iou, 3), f.label,
                            f.view, f.track, f.individual, f.embedder, f.quality])  # fmt: skip
    return faces, table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="cut a clip into participant videos, mapping.json and challenge.toml")
    b.add_argument("clip", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("--parts", type=int, default=3)
    b.add_argument("--crf", type=int, default=20)
    b.add_argument("--no-audio", action="store_true")
    b.add_argument("--segment", type=float, default=0.0, help="deal the clip out in segments of S seconds")
    s = sub.add_parser("score", help="label the engine's stored faces and score its individuals next to peers")
    s.add_argument("out", type=Path)
    s.add_argument("db_url")
    s.add_argument("labels", type=Path)
    s.add_argument("faces_csv", type=Path)
    s.add_argument("--write", type=Path, help="CSV of every stored face with its label and match")
    a = ap.parse_args(argv)
    if a.cmd == "build":
        if shutil.which("ffmpeg") is None:
            raise SystemExit("ffmpeg is needed")
        toml = build(a.clip, a.out, a.parts, a.crf, not a.no_audio, a.segment)
        parts = json.loads((a.out / "mapping.json").read_text())["participants"]
        for name, p in parts.items():
            print(f"{name}: {p['frames']} source frames from {p['first_frame']}, "
                  f"pts {p['first_pts']:.3f}..{p['source_pts'][-1]:.3f}")  # fmt: skip
        print(f"wrote {toml}")
    else:
        score_challenge(a.out, a.db_url, a.labels, a.faces_csv, a.write)  # prints its tables


if __name__ == "__main__":
    main()
