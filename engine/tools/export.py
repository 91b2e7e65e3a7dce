"""The labelled face dataset: every unique face crop with the prompt playing when it was seen, its individual,
video and time — the facial-expression dataset the seed project collected its data for.

Two layouts, both loadable by Hugging Face ``datasets`` with every label (``datasets`` is not needed to write them):

- ``imagefolder``: ``DIR/<prompt>/<file>.jpg`` (the layout torchvision's ``ImageFolder`` and most training scripts
  read) with ``metadata.csv`` at the root (``datasets``' imagefolder convention: ``file_name`` relative to ``DIR``,
  then every label column and ``quality``) and ``labels.csv`` (the same rows under the older header ``file``, without
  ``quality``; kept for existing readers).
- ``parquet``: one ``faces.parquet``: the labels, the face descriptor (``embedding``, float32, with its
  ``embedder``) and ``image``, a ``{bytes, path}`` struct that the schema's ``huggingface`` metadata declares an
  ``Image`` feature, so ``datasets`` decodes it to a PIL image (pandas sees a dict holding the JPEG bytes).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.store import Database, ObjectStore

if TYPE_CHECKING:  # annotations only: these tools do not load torch
    from engine.types import Tick

FORMATS = ("imagefolder", "parquet")
#: Label of a face seen while no prompt of the challenge plays.
NO_PROMPT = "no_prompt"
#: ``labels.csv``'s header (unchanged since the first export).
COLUMNS = ("file", "prompt", "individual", "video_sha256", "video_file", "time_s", "track", "face_id", "score", "box")
#: ``metadata.csv``'s header: Hugging Face imagefolder's ``file_name``, then the labels and the face quality.
METADATA_COLUMNS = ("file_name", *COLUMNS[1:], "quality")


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


#: How a spreadsheet cell that would start a formula begins (OWASP's list: = + - @, tab, carriage return).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Longest path component the export writes (file systems allow 255 bytes).
MAX_COMPONENT = 100


def safe_component(name: str) -> str:
    """``name`` as one path component that stays where it is put: letters, digits, ``-_.`` only (a ``/`` or ``\\``
    becomes ``_``), never ``.``/``..`` or hidden (a leading dot), and never starting with a spreadsheet formula
    character, so ``file_name`` cells need no quoting and stay usable by Hugging Face. Prompts, individuals and
    video names are data (a participant names a video, a challenge names a prompt): a prompt named ``..`` must not
    write into the parent of the output folder."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:MAX_COMPONENT]
    if not safe or safe.startswith((".", *FORMULA_STARTS)):
        safe = "_" + safe[1:] if safe else "_"
    return safe


def neutralise_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet cannot run: text starting with a formula character gets a leading ``'``
    (OWASP's CSV-injection advice), so a video named ``=1+2;cmd.mp4`` is shown, not evaluated; numbers and other
    text are unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def face_record(face: dict[str, Any], prompt: str) -> dict[str, Any]:
    """One exported face's labels (``file``: its path under the output folder) from its ``unique_faces`` row."""
    ind = "none" if face["individual"] is None else f"{face['individual']:04d}"  # unique faces all have one
    name = safe_component(f"ind{ind}_{face['video_sha256'][:12]}_{face['pts_s']:08.2f}s_{face['face_id']}.jpg")
    embedding = face.get("embedding")
    return dict(
        file=f"{safe_component(prompt)}/{name}",
        prompt=prompt,
        individual=face["individual"],
        video_sha256=face["video_sha256"],
        video_file=face["file_name"],
        time_s=round(face["pts_s"], 3),
        track=face["track"],
        face_id=face["face_id"],
        score=round(face["score"], 4),
        box=[round(face[k], 1) for k in ("x1", "y1", "x2", "y2")],
        quality=None if face.get("quality") is None else round(face["quality"], 4),
        embedding=None if embedding is None else [float(v) for v in embedding],
        embedder=face.get("embedder"),
    )


def _csv(path: Path, rows: Iterable[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """``rows`` as CSV with ``columns`` (others ignored); a box is written ``x1 y1 x2 y2``, ``None`` empty; text
    cells are neutralised (:func:`neutralise_cell`); the box, numbers only, is not."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(
            {**{k: neutralise_cell(r.get(k)) for k in columns}, "box": " ".join(map(str, r["box"]))} for r in rows
        )


def _inside(out: Path, relative: str) -> Path:
    """``out / relative``, refused (``ValueError``) unless it resolves inside ``out``: the last guard, after
    :func:`safe_component`, against a path (or a link already in ``out``) that leads out of the folder."""
    root = out.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or path == root:
        raise ValueError(f"refusing to write {relative!r}: it resolves outside {out}")
    return path


def write_imagefolder(out: Path, records: list[dict[str, Any]], images: list[bytes]) -> None:
    """The crops under ``out/<prompt>/``, ``metadata.csv`` (Hugging Face imagefolder) and ``labels.csv``."""
    for record, data in zip(records, images, strict=True):
        path = _inside(out, record["file"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _csv(out / "metadata.csv", ({"file_name": r["file"], **r} for r in records), METADATA_COLUMNS)
    _csv(out / "labels.csv", records, COLUMNS)


def write_parquet(path: Path, records: list[dict[str, Any]], images: list[bytes]) -> None:
    """``faces.parquet``: labels, descriptor and the crop as a Hugging Face ``Image`` (``{bytes, path}`` struct)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [
            ("file", pa.string()),
            ("prompt", pa.string()),
            ("individual", pa.int64()),
            ("video_sha256", pa.string()),
            ("video_file", pa.string()),
            ("time_s", pa.float64()),
            ("track", pa.int64()),
            ("face_id", pa.int64()),
            ("score", pa.float64()),
            ("box", pa.list_(pa.float64())),
            ("quality", pa.float64()),
            ("embedding", pa.list_(pa.float32())),
            ("embedder", pa.string()),
            ("image", image),
        ],
        # Only the image needs declaring: ``datasets`` (2.17+) takes a declared feature where it matches its column and
        # derives every other one from its Arrow type.
        metadata={"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}})},
    )
    rows = [{**r, "image": {"bytes": data, "path": r["file"]}} for r, data in zip(records, images, strict=True)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def export_dataset(
    db: Database,
    store: ObjectStore,
    challenge: str,
    out: Path,
    fmt: str = "imagefolder",
    log: Callable[[str], None] = print,
    progress: Tick | None = None,
) -> ExportSummary:
    """Write the challenge's unique faces to ``out`` in ``fmt``; crops missing from the store are reported, not
    fatal. A challenge never run against ``db`` is a ``NothingStored`` error, before anything is written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    db.require_run(challenge)
    faces = db.unique_faces(challenge)
    lookup = prompt_at(db.subvideos(challenge))
    out.mkdir(parents=True, exist_ok=True)
    records, images, missing = [], [], 0
    per_prompt: dict[str, int] = {}
    for face in faces:
        if progress is not None:
            progress("crops", 1, len(faces))  # one read from the store each: minutes on S3 for a large challenge
        try:
            data = store.get_bytes(face["crop_key"])
        except Exception as exc:  # noqa: BLE001 - one lost crop must not lose the dataset
            missing += 1
            log(f"note   crop {face['crop_key']} unreadable ({exc}); skipped")
            continue
        prompt = lookup(face["video_sha256"], face["pts_s"])
        per_prompt[prompt] = per_prompt.get(prompt, 0) + 1
        records.append(face_record(face, prompt))
        images.append(data)
    if fmt == "imagefolder":
        write_imagefolder(out, records, images)
    else:
        write_parquet(out / "faces.parquet", records, images)
    return ExportSummary(out, len(records), per_prompt, missing)
