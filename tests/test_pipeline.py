"""The challenge pipeline end to end: every table filled on a small corpus, idempotent re-runs, broken files in the
folder, logo covering, individuals on the Hamilton clip, export and report."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli
from sqlalchemy import select

from engine.store import Database
from engine.store.schema import Face, FaceFinalInd, Video

NINE_TABLES = (
    "videos",
    "subvideos",
    "frames",
    "faces",
    "nofaces",
    "faces_with_intra_ind",
    "similarities",
    "faces_with_final_ind",
    "unique_faces",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A small corpus (4 participants + 1 decoy) with a broken file and a zero-byte file among its videos, and
    ``[logo] auto = true`` added to its challenge."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from make_corpus import build_corpus

    out = tmp_path_factory.mktemp("corpus")
    toml = build_corpus(out, n_videos=4, seed=7, n_decoys=1, shared=shared_data, logo_auto=True)
    videos = out / "videos"
    (videos / "broken.mp4").write_text("not a video at all\n")
    (videos / "empty.mp4").write_bytes(b"")
    return toml


@pytest.fixture(scope="module")
def corpus_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("work")
    db, store = f"sqlite:///{work / 'engine.db'}", str(work / "objects")
    first = run_cli("run", "-c", str(corpus), "--runtype", "prod", "--db", db, "--store", store, "-q")
    counts_first = Database(db).counts()
    second = run_cli("run", "-c", str(corpus), "--runtype", "prod", "--db", db, "--store", store, "-q")
    return dict(db=db, store=store, first=first, second=second, counts_first=counts_first, work=work)


def test_every_table_filled_and_rerun_changes_nothing(corpus_run: dict) -> None:
    first, second = corpus_run["first"], corpus_run["second"]
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    counts = corpus_run["counts_first"]
    assert all(counts[t] > 0 for t in NINE_TABLES), counts
    assert counts["videos"] == 5
    again = Database(corpus_run["db"]).counts()
    assert again.pop("runs") == counts.pop("runs") + 1  # the run itself is logged ...
    assert again == counts  # ... and no other row count changes
    assert "already stored" in second.stdout and "individuals:" in first.stdout
    for word in ("frames sampled", "prompts found", "faces", "tracks", "individuals", "unique faces", "time:"):
        assert word in first.stdout
    with Database(corpus_run["db"]).session() as s:  # every face keeps its quality and descriptor magnitude
        cues = s.execute(select(Face.quality, Face.magnitude, Face.embedder)).all()
    assert cues and all(q is not None and m is not None and m > 0 and e == "hse" for q, m, e in cues)


def test_broken_files_end_in_video_errors(corpus_run: dict) -> None:
    from engine.store.schema import VideoError

    db = Database(corpus_run["db"])
    with db.session() as s:
        errors = {(Path(e.source_uri).name, e.kind) for e in s.scalars(select(VideoError)) if e.fatal}
    assert ("broken.mp4", "not_video") in errors or any(name == "broken.mp4" for name, _ in errors)
    assert ("empty.mp4", "empty_file") in errors


def test_prompts_in_the_tables_match_ground_truth(corpus: Path, corpus_run: dict) -> None:
    truth = json.loads((corpus.parent / "ground_truth.json").read_text())
    db = Database(corpus_run["db"])
    with db.session() as s:
        names = {v.sha256: v.file_name for v in s.scalars(select(Video))}
    found = {(names[r["video_sha256"]], r["prompt"]): r for r in db.subvideos(_name(corpus))}
    present = 0
    for file, video in truth["videos"].items():
        for name, prompt in video["prompts"].items():
            key = (Path(file).name, name)
            if prompt["status"] == "present":
                present += 1
                assert key in found, key
                assert abs(found[key]["start_s"] - prompt["start_s"]) <= 0.010
                assert abs(found[key]["end_s"] - prompt["end_s"]) <= 0.010
            elif prompt["status"] == "absent":
                assert key not in found, key
    assert present >= 4


def _name(toml: Path) -> str:
    import tomllib

    return tomllib.loads(toml.read_text())["name"]


def test_logo_auto_covers_hamilton_footage(corpus_run: dict) -> None:
    db = Database(corpus_run["db"])
    with db.session() as s:
        boxes = [v.logo_box for v in s.scalars(select(Video))]
    assert any(boxes)  # the Hamilton footage carries the WH.GOV logo: found and covered


def test_export_and_report(corpus: Path, corpus_run: dict, tmp_path: Path) -> None:
    common = ("-c", str(corpus), "--db", corpus_run["db"], "--store", corpus_run["store"])
    res = run_cli("export", *common, "--out", str(tmp_path / "ds"))
    assert res.returncode == 0, res.stderr
    labels = (tmp_path / "ds" / "labels.csv").read_text().splitlines()
    assert len(labels) - 1 == Database(corpus_run["db"]).counts()["unique_faces"]
    assert len(list((tmp_path / "ds").rglob("*.jpg"))) == len(labels) - 1
    res = run_cli("export", *common, "--out", str(tmp_path / "pq"), "--format", "parquet")
    assert res.returncode == 0, res.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "pq" / "faces.parquet")
    assert table.num_rows == len(labels) - 1 and {"image", "prompt", "individual", "time_s"} <= set(table.column_names)
    res = run_cli("report", *common, "--out", str(tmp_path / "r.html"))
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "r.html").read_text()
    assert "data:image/jpeg;base64," in page and "<svg" in page and "Prompts" in page


def test_hamilton_individuals_match_reference_photos(hamilton: Path, shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    shutil.copy(hamilton, folder / hamilton.name)
    db = f"sqlite:///{tmp_path / 'e.db'}"
    # dlib's embedder: the reference descriptors below come from `embed`, dlib's 128-d (never compared across kinds).
    res = run_cli(
        "run", "-c", "demo", "--videos", str(folder), "--db", db, "--store", str(tmp_path / "o"), "-q",
        "--embedder", "dlib",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    ref = run_cli(
        "embed",
        str(shared_data / "faces" / "lin-manuel-miranda.png"),
        str(shared_data / "faces" / "alex-lacamoire.png"),
        "--json",
    )
    refs = [np.array(v[0]["embedding"]) for v in json.loads(ref.stdout).values()]
    database = Database(db)
    with database.session() as s:
        rows = s.execute(select(Face.embedding, FaceFinalInd.individual).join(FaceFinalInd)).all()
    means = {}
    for emb, ind in rows:
        if ind is not None:  # faces of a track with no face good enough to vote have no individual
            means.setdefault(ind, []).append(emb)
    means = {i: np.mean(v, 0) for i, v in means.items()}
    near = [{i for i, m in means.items() if np.linalg.norm(m - r) < 0.6} for r in refs]
    assert near[0] and near[1] and (near[0] | near[1]) and any(a != b for a in near[0] for b in near[1]), means.keys()
