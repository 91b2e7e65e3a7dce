"""The labelled face dataset: every unique face crop with the prompt playing when it was seen, its individual,
video and time — the facial-expression dataset the seed project collected its data for.

Two layouts: ``imagefolder`` (``DIR/<prompt>/<file>.jpg``, the layout torchvision's ``ImageFolder`` and most
training scripts read, with ``labels.csv`` beside it carrying every column) and ``parquet`` (one ``faces.parquet``
holding the JPEG bytes and the labels, for pandas / Hugging Face ``datasets``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.store import Database, ObjectStore

FORMATS = ("imagefolder", "parquet")
#: Label of a face seen while no prompt of the challenge plays.
NO_PROMPT = "no_prompt"
COLUMNS = ("file", "prompt", "individual", "video_sha256", "video_file", "time_s", "track", "face_id", "score", "box")


@dataclass
class ExportSummary:
    out: Path
    faces: int
    per_prompt: dict[str, int]
    missing_crops: int


def prompt_at(subvideos: Iterable[dict[str, Any]]) -> Callable[[str, float], str]:
    """A lookup (video, time) → the prompt playing then (the best-scoring one if two overlap), or ``NO_PROMPT``."""
    by_video: dict[str, list[dict[str, Any]]] = {}
    for row in subvideos:
        by_video.setdefault(row["video_sha256"], []).append(row)

    def lookup(video: str, t: float) -> str:
        playing = [r for r in by_video.get(video, []) if r["start_s"] <= t < r["end_s"]]
        return max(playing, key=lambda r: r["score"])["prompt"] if playing else NO_PROMPT

    return lookup


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def export_dataset(
    db: Database,
    store: ObjectStore,
    challenge: str,
    out: Path,
    fmt: str = "imagefolder",
    log: Callable[[str], None] = print,
) -> ExportSummary:
    """Write the challenge's unique faces to ``out`` in ``fmt``; crops missing from the store are reported, not
    fatal."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    faces = db.unique_faces(challenge)
    lookup = prompt_at(db.subvideos(challenge))
    out.mkdir(parents=True, exist_ok=True)
    records, images, missing = [], [], 0
    per_prompt: dict[str, int] = {}
    for face in faces:
        try:
            data = store.get_bytes(face["crop_key"])
        except Exception as exc:  # noqa: BLE001 - one lost crop must not lose the dataset
            missing += 1
            log(f"note   crop {face['crop_key']} unreadable ({exc}); skipped")
            continue
        prompt = lookup(face["video_sha256"], face["pts_s"])
        per_prompt[prompt] = per_prompt.get(prompt, 0) + 1
        ind = "none" if face["individual"] is None else f"{face['individual']:04d}"  # unique faces all have one
        name = f"ind{ind}_{face['video_sha256'][:12]}_{face['pts_s']:08.2f}s_{face['face_id']}.jpg"
        rel = f"{_safe(prompt)}/{name}"
        records.append(
            dict(
                file=rel,
                prompt=prompt,
                individual=face["individual"],
                video_sha256=face["video_sha256"],
                video_file=face["file_name"],
                time_s=round(face["pts_s"], 3),
                track=face["track"],
                face_id=face["face_id"],
                score=round(face["score"], 4),
                box=[round(face[k], 1) for k in ("x1", "y1", "x2", "y2")],
            )
        )
        images.append(data)
    if fmt == "imagefolder":
        for record, data in zip(records, images, strict=True):
            path = out / record["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({**r, "box": " ".join(map(str, r["box"]))} for r in records)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{**r, "image": data} for r, data in zip(records, images, strict=True)])
        pq.write_table(table, out / "faces.parquet")
    return ExportSummary(out, len(records), per_prompt, missing)
