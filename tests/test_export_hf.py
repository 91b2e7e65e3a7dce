"""The exported dataset loads in Hugging Face ``datasets`` with every label: ``imagefolder`` through its
``metadata.csv``, ``parquet`` with the crop decoded as an image and the face descriptor. Built on the small
hand-filled database of the report tests, with a real JPEG per crop and a descriptor per face."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.store import Database
from engine.store.schema import Face, Subvideo
from engine.tools.export import COLUMNS, METADATA_COLUMNS, NO_PROMPT, export_dataset
from tests.test_report import FACES, A, db  # noqa: F401 - db: the fixture this module's database starts from

datasets = pytest.importorskip("datasets")
Image = pytest.importorskip("PIL.Image")

#: Faces of a.mp4 within 0.5-3.5 s are seen while "smile" plays; every other face at no prompt.
SMILE = (0.5, 3.5)


class JpegStore:
    """An object store whose every crop is a small JPEG, its size (10 + face number) telling faces apart."""

    def get_bytes(self, key: str) -> bytes:
        n = int(key.rsplit("-", 1)[1])
        buf = io.BytesIO()
        Image.new("RGB", (10 + n, 12), (20 * n, 100, 200)).save(buf, format="JPEG")
        return buf.getvalue()


def _embedding(face_id: int) -> np.ndarray:
    return np.random.default_rng(face_id).standard_normal(8).astype(np.float32)


@pytest.fixture
def faces_db(db: Database) -> Database:  # noqa: F811 - the fixture imported above
    with db.session() as s:
        s.add(Subvideo(video_sha256=A, prompt="smile", start_s=SMILE[0], end_s=SMILE[1], score=0.9))
        for i in range(1, len(FACES) + 1):
            s.get(Face, i).embedding = _embedding(i)
    return db


def _expected(database: Database) -> dict[int, dict[str, Any]]:
    """What the database holds for each exported face, by face id, with the prompt the export should give it."""
    out = {}
    for f in database.unique_faces("c"):
        smiling = f["video_sha256"] == A and SMILE[0] <= f["pts_s"] < SMILE[1]
        out[f["face_id"]] = {**f, "prompt": "smile" if smiling else NO_PROMPT}
    return out


def _check_labels(row: dict[str, Any], face: dict[str, Any]) -> None:
    assert row["prompt"] == face["prompt"]
    assert row["individual"] == face["individual"] and row["track"] == face["track"]
    assert row["video_sha256"] == face["video_sha256"] and row["video_file"] == face["file_name"]
    assert row["time_s"] == pytest.approx(face["pts_s"]) and row["score"] == pytest.approx(face["score"])
    if face["quality"] is None:  # CSV: an empty cell, read as missing
        assert row["quality"] is None or math.isnan(row["quality"])
    else:
        assert row["quality"] == pytest.approx(face["quality"])
    image = row["image"]
    assert isinstance(image, Image.Image) and image.size == (10 + face["face_id"], 12)


def test_imagefolder_loads_with_every_label(faces_db: Database, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    summary = export_dataset(faces_db, JpegStore(), "c", out, log=lambda _: None)
    assert summary.per_prompt == {"smile": 3, NO_PROMPT: 5}
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert set(ds.column_names) == {"image", *METADATA_COLUMNS[1:]}  # no folder label: the prompt column is it
    assert isinstance(ds.features["image"], datasets.Image)
    expected = _expected(faces_db)
    assert sorted(ds["face_id"]) == sorted(expected) and len(ds) == 8
    for row in ds:
        face = expected[row["face_id"]]
        _check_labels(row, face)
        assert row["box"] == " ".join(str(float(face[k])) for k in ("x1", "y1", "x2", "y2"))
    # labels.csv: unchanged header, the same rows as metadata.csv.
    with (out / "labels.csv").open(newline="") as fh:
        labels = list(csv.DictReader(fh))
    with (out / "metadata.csv").open(newline="") as fh:
        metadata = list(csv.DictReader(fh))
    assert tuple(labels[0]) == COLUMNS
    assert [{"file": m.pop("file_name"), **m} for m in metadata] == [{**r, "quality": m["quality"]} for r, m in
                                                                     zip(labels, metadata, strict=True)]  # fmt: skip
    assert all((out / r["file"]).is_file() and r["file"].startswith(f"{r['prompt']}/") for r in labels)


def test_parquet_loads_images_and_descriptors(faces_db: Database, tmp_path: Path) -> None:
    out = tmp_path / "pq"
    export_dataset(faces_db, JpegStore(), "c", out, fmt="parquet", log=lambda _: None)
    files = str(out / "faces.parquet")
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))
    assert isinstance(ds.features["image"], datasets.Image)
    assert {"embedding", "embedder", "quality", "box", "file", *COLUMNS} <= set(ds.column_names)
    expected = _expected(faces_db)
    assert sorted(ds["face_id"]) == sorted(expected)
    for row in ds:
        face = expected[row["face_id"]]
        _check_labels(row, face)
        assert row["box"] == [face[k] for k in ("x1", "y1", "x2", "y2")]
        assert row["embedder"] == "hse"
        np.testing.assert_array_equal(np.asarray(row["embedding"], dtype=np.float32), _embedding(row["face_id"]))
    # Without datasets: the descriptor is float32 and the image struct holds the JPEG bytes.
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(files)
    assert table.schema.field("embedding").type.value_type == pa.float32()
    assert table.column("image")[0].as_py()["bytes"][:2] == b"\xff\xd8"
