"""Film labelling on the shared Ryan Reynolds clip: files, shots, trajectories, sharding, gallery predictions.

The clip is the face-tracking seed's output: a 170x170 canvas on which each frame's face crop is pasted. Who is on
screen was checked by eye on every 8th frame: Ryan Reynolds (glasses) in frames 168-264 among others, Hugh Jackman
from about frame 1104 on, and, in most other frames, a bearded man and an older woman who are neither.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from engine.apps.film import LabelError, LabelSettings, ShardSpec, label_film, merge
from engine.apps.film_merge import cluster_trajectories
from engine.apps.film_shards import FORMAT_VERSION, ShardResult
from engine.shots import shot_ids
from engine.types import Faces, Tracks

SETTINGS = LabelSettings(interval=0.25)  # every 8th frame of the 30 fps clip: the test stays fast
MOVIE = 4242  # the clip's name has no leading digits: its movie id is given
FILES = ("trajectories.jsonl", "features.jsonl", "scene_changes.json", "clusters.json", "label.json")


def _read(folder: Path) -> dict:
    return {
        "trajectories": [json.loads(line) for line in (folder / "trajectories.jsonl").read_text().splitlines()],
        "features": [json.loads(line) for line in (folder / "features.jsonl").read_text().splitlines()],
        "scenes": json.loads((folder / "scene_changes.json").read_text()),
        "clusters": json.loads((folder / "clusters.json").read_text()),
    }


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, ryan: Path, gallery: Path) -> Path:
    out = tmp_path_factory.mktemp("label1")
    label_film(ryan, out, settings=SETTINGS, gallery=gallery, log=lambda _m: None, movie_id=MOVIE)
    return out


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Both layouts at once: a NAME/ folder and NAME.jpg files."""
    g = tmp_path_factory.mktemp("gallery")
    (g / "ryan-reynolds").mkdir()
    faces = shared_data / "faces"
    shutil.copy(faces / "ryan-reynolds-reference.jpg", g / "ryan-reynolds" / "ref.jpg")
    shutil.copy(faces / "hugh-jackman-reference.jpg", g / "hugh-jackman.jpg")
    shutil.copy(faces / "obama.jpg", g / "obama.jpg")
    shutil.copy(faces / "lin-manuel-miranda.png", g / "lin-manuel-miranda.png")
    return g


def test_files_and_formats(single: Path) -> None:
    for name in (*FILES, "predictions.json"):
        assert (single / name).is_file(), name
    got = _read(single)
    trajs, feats = got["trajectories"], got["features"]
    assert len(trajs) == len(feats) > 5
    assert [t["id"] for t in trajs] == list(range(len(trajs)))
    for t, f in zip(trajs, feats, strict=True):
        assert f["id"] == t["id"] and f["n_faces"] == len(t["detections"]) == len(f["embeddings"])
        assert abs(sum(v * v for v in f["mean"]) - 1) < 1e-3  # unit mean descriptor
        frames = [d["frame"] for d in t["detections"]]
        assert frames == sorted(frames) and len(set(frames)) == len(frames)
        assert all(fr % 8 == 0 for fr in frames)  # the global sampling grid
        assert t["start_frame"] == frames[0] and t["end_frame"] == frames[-1]
        assert all(len(d["box"]) == 4 and len(d["landmarks"]) == 10 for d in t["detections"])
    # Clusters and the unclustered list partition the trajectories; the floors decide which side each is on.
    clusters = got["clusters"]
    assert clusters["floors"] == {"min_score": 0.95, "min_face_px": 50.0}
    members = sorted(m for c in clusters["clusters"] for m in c["trajectories"])
    left_out = {u["id"]: u["junk"] for u in clusters["unclustered"]}
    assert sorted(members + list(left_out)) == list(range(len(trajs)))
    for t, f in zip(trajs, feats, strict=True):
        why = [*(["score"] if t["median_score"] < 0.95 else []), *(["size"] if t["median_face_px"] < 50 else [])]
        assert t["junk"] == why == left_out.get(t["id"], []) and t["clustered"] == f["clustered"] == (not why)
    assert json.loads((single / "label.json").read_text())["junk"] == len(left_out)


def test_trajectories_never_cross_a_cut(single: Path) -> None:
    got = _read(single)
    cuts = torch.tensor([c["frame"] for c in got["scenes"]["cuts"]], dtype=torch.long)
    assert len(cuts) >= 5  # the clip jumps between faces many times
    shots = got["scenes"]["shots"]
    assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == 1662
    for t in got["trajectories"]:
        frames = torch.tensor([d["frame"] for d in t["detections"]])
        ids = shot_ids(frames, cuts)
        assert bool((ids == ids[0]).all()), f"trajectory {t['id']} crosses a cut"
        assert int(ids[0]) == t["shot"]


def test_three_shards_merged_equal_one_run(single: Path, tmp_path: Path, ryan: Path) -> None:
    for i in range(3):  # three separate jobs, as on a cluster
        meta = label_film(ryan, tmp_path, settings=SETTINGS, shards=3, shard=i, log=lambda _m: None, movie_id=MOVIE)
        assert meta["index"] == i and meta["lo"] < meta["hi"]
    assert not (tmp_path / "trajectories.jsonl").exists()  # a shard job never merges
    merge(tmp_path)
    a, b = _read(single), _read(tmp_path)
    assert [c["frame"] for c in a["scenes"]["cuts"]] == [c["frame"] for c in b["scenes"]["cuts"]]
    assert a["clusters"]["clusters"] == b["clusters"]["clusters"]
    assert a["clusters"]["unclustered"] == b["clusters"]["unclustered"]
    assert len(a["trajectories"]) == len(b["trajectories"])
    for x, y in zip(a["trajectories"], b["trajectories"], strict=True):
        assert [d["frame"] for d in x["detections"]] == [d["frame"] for d in y["detections"]]
        assert x["shot"] == y["shot"]
        for dx, dy in zip(x["detections"], y["detections"], strict=True):
            assert max(abs(p - q) for p, q in zip(dx["box"], dy["box"], strict=True)) < 0.05
    # A trajectory really crosses a shard boundary (frame 554 or 1108), so the stitching was exercised.
    bounds = (1663 // 3, 2 * 1663 // 3)
    assert any(t["start_frame"] < bd <= t["end_frame"] for t in a["trajectories"] for bd in bounds)
    # The seed's folder is the same bytes (predictions aside: the single run had a gallery).
    seed_a, seed_b = single / f"{MOVIE}-data", tmp_path / f"{MOVIE}-data"
    names = sorted(p.relative_to(seed_a) for p in seed_a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(seed_b) for p in seed_b.rglob("*") if p.is_file())
    assert len(names) > 10
    for name in names:
        if name.name != "predictions.json":
            assert (seed_a / name).read_bytes() == (seed_b / name).read_bytes(), name


def test_merge_names_missing_shards(tmp_path: Path, ryan: Path) -> None:
    with pytest.raises(LabelError, match="no shard results"):
        merge(tmp_path)
    label_film(ryan, tmp_path, settings=LabelSettings(interval=2.0), shards=3, shard=1, log=lambda _m: None, movie_id=1)
    with pytest.raises(LabelError, match=r"shard\(s\) 0, 2 of 3 are missing"):
        merge(tmp_path)
    with pytest.raises(LabelError, match="--shard must be in 0..2"):
        label_film(ryan, tmp_path, settings=SETTINGS, shards=3, shard=3, log=lambda _m: None, movie_id=1)


def test_label_without_movie_id_writes_our_files_only(tmp_path: Path, ryan: Path) -> None:
    """A film named without leading digits and no --movie-id: our files, no <id>-data/, one line saying how."""
    said: list[str] = []
    summary = label_film(ryan, tmp_path, settings=LabelSettings(interval=2.0), log=said.append)
    assert summary["seed"] is None and summary["movie_id"] is None
    assert (tmp_path / "trajectories.jsonl").is_file() and not list(tmp_path.glob("*-data"))
    assert any("ryan-reynolds.mp4: no movie id" in line and "--movie-id" in line for line in said)
    merged = merge(tmp_path, movie_id=5, log=said.append)  # the seed's folder from the same shards, later
    assert merged["seed"]["dir"] == "5-data" and (tmp_path / "5-data" / "clusters.json").is_file()


def _cluster_with(folder: Path, frames: range) -> int:
    got = _read(folder)
    count: dict[int, int] = {}
    for c in got["clusters"]["clusters"]:
        for t in c["trajectories"]:
            for d in got["trajectories"][t]["detections"]:
                if d["frame"] in frames:
                    count[c["id"]] = count.get(c["id"], 0) + 1
    return max(count, key=count.get)


def test_gallery_predictions_name_the_people(single: Path) -> None:
    pred = json.loads((single / "predictions.json").read_text())
    assert sorted(pred["people"]) == ["hugh-jackman", "lin-manuel-miranda", "obama", "ryan-reynolds"]
    by_cluster = {p["cluster"]: p["top"] for p in pred["clusters"]}
    ryan_top = by_cluster[_cluster_with(single, range(168, 265))]
    hugh_top = by_cluster[_cluster_with(single, range(1456, 1537))]
    assert ryan_top[0]["name"] == "ryan-reynolds" and ryan_top[0]["probability"] > 0.6
    assert hugh_top[0]["name"] == "hugh-jackman" and hugh_top[0]["probability"] > 0.5
    for top in by_cluster.values():
        assert 0 < sum(p["probability"] for p in top) <= 1.0001
        assert [p["probability"] for p in top] == sorted((p["probability"] for p in top), reverse=True)


def test_label_cli_sharded_then_merge(tmp_path: Path, ryan: Path, gallery: Path) -> None:
    from conftest import run_cli

    for i in range(2):
        done = run_cli(
            "label", str(ryan), "--out", str(tmp_path), "--shards", "2", "--shard", str(i), "--interval", "2",
            "--movie-id", "77",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    done = run_cli("merge", str(tmp_path), "--gallery", str(gallery))
    assert done.returncode == 0, done.stderr
    assert "2 shard(s) merged" in done.stdout
    assert (tmp_path / "predictions.json").is_file()
    assert (tmp_path / "77-data" / "predictions.json").is_file() and "77-data" in done.stdout
    done = run_cli("label", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "nope.mp4" in done.stderr


def test_models_reused_for_gallery(tmp_path: Path, single: Path) -> None:
    """merge() without models but with a gallery is a clear error, not a crash deep inside."""
    shutil.copytree(single / "shards", tmp_path / "shards")
    with pytest.raises(LabelError, match="need the face models"):
        merge(tmp_path, gallery=tmp_path)


# ---------------------------------------------------------------------------------------- floors (synthetic shards)

# Two people, P and Q (orthogonal descriptors), plus two trajectories that would join them without floors.
# Rows: frames, rank in frame, shard-local track, box side (px), detector score, person. Global ids by first
# appearance: 0 = P (frames 0-4), 1 = Q (0-4), 2 = P (5-9), 3 = low score, looks like Q (5-9), 4 = small, looks like P.
_ROWS = (
    (range(0, 5), 0, 0, 100.0, 0.99, "P"),
    (range(0, 5), 1, 1, 100.0, 0.99, "Q"),
    (range(5, 10), 0, 2, 100.0, 0.99, "P"),
    (range(5, 10), 1, 3, 100.0, 0.60, "Q"),
    (range(10, 13), 0, 4, 30.0, 0.99, "P"),
)


def _fake_shard(out: Path, settings: LabelSettings, tracks: tuple[int, ...]) -> None:
    """One shard's files as ``label`` writes them, for the faces of the given shard-local tracks of ``_ROWS``."""
    gen = torch.Generator().manual_seed(0)
    person = {"P": torch.eye(128)[0], "Q": torch.eye(128)[1]}
    rows = sorted((f, rank, t, side, score, who) for fr, rank, t, side, score, who in _ROWS if t in tracks for f in fr)
    n, frames = len(rows), 13
    boxes = torch.tensor([[20.0, 20.0, 20.0 + r[3], 20.0 + r[3] * 1.2] for r in rows])
    faces = Faces(
        torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows]),
        torch.tensor([r[0] / 25 for r in rows], dtype=torch.float64), boxes, torch.tensor([r[4] for r in rows]),
        torch.zeros(n, 10), torch.zeros(n, dtype=torch.long),
        torch.stack([person[r[5]] for r in rows]) + 0.01 * torch.randn(n, 128, generator=gen),
    )  # fmt: skip
    local = {t: i for i, t in enumerate(sorted(tracks))}
    folder = out / "shards" / "0000-of-0001"
    folder.mkdir(parents=True)
    no_cuts = torch.zeros(0, dtype=torch.long)
    pts = torch.arange(frames, dtype=torch.float64) / 25
    ShardResult(faces, Tracks(torch.tensor([local[r[2]] for r in rows])), no_cuts, torch.zeros(0), pts, 0).save(folder)
    spec = ShardSpec("fake.mp4", 0, 1, 0, frames, 0, frames, 1, frames, 25.0, movie_id=7)
    meta = dict(format_version=FORMAT_VERSION, **spec.__dict__, settings=settings.public(), faces=n,
                trajectories=len(tracks), cuts=0, width=320, height=240, video_start_s=0.0)  # fmt: skip
    (folder / "shard.json").write_text(json.dumps(meta))


def test_floors_keep_and_mark_junk_but_never_cluster_it(tmp_path: Path) -> None:
    """A low-score and a small trajectory are written and marked, and join no cluster (without the floors they
    would: each looks like a person on screen)."""
    _fake_shard(tmp_path / "on", LabelSettings(cluster_threshold=0.9), (0, 1, 2, 3, 4))
    _fake_shard(tmp_path / "off", LabelSettings(cluster_threshold=0.9, min_score=0, min_face_px=0), (0, 1, 2, 3, 4))
    summary = merge(tmp_path / "on")
    assert summary["format_version"] == FORMAT_VERSION == 2
    assert summary["trajectories"] == 5 and summary["junk"] == 2 and summary["clusters"] == 2
    got = _read(tmp_path / "on")
    assert [(t["id"], t["clustered"], t["junk"]) for t in got["trajectories"]] == [
        (0, True, []), (1, True, []), (2, True, []), (3, False, ["score"]), (4, False, ["size"]),
    ]  # fmt: skip
    assert [f["clustered"] for f in got["features"]] == [True, True, True, False, False]
    assert len(got["trajectories"][3]["detections"]) == 5 and got["features"][4]["n_faces"] == 3  # kept whole
    assert got["trajectories"][3]["median_score"] == 0.6 and got["trajectories"][4]["median_face_px"] == 30.0
    assert [c["trajectories"] for c in got["clusters"]["clusters"]] == [[0, 2], [1]]
    assert got["clusters"]["unclustered"] == [{"id": 3, "junk": ["score"]}, {"id": 4, "junk": ["size"]}]
    merge(tmp_path / "off")
    assert [c["trajectories"] for c in _read(tmp_path / "off")["clusters"]["clusters"]] == [[0, 2, 4], [1, 3]]
    with pytest.raises(LabelError, match="min_score"):
        LabelSettings(min_score=1.5)


def test_floors_change_nothing_where_every_trajectory_passes(tmp_path: Path) -> None:
    for name, settings in (
        ("on", LabelSettings(cluster_threshold=0.9)),
        ("off", LabelSettings(cluster_threshold=0.9, min_score=0, min_face_px=0)),
    ):
        _fake_shard(tmp_path / name, settings, (0, 1, 2))
        merge(tmp_path / name)
    on, off = _read(tmp_path / "on"), _read(tmp_path / "off")
    assert on["trajectories"] == off["trajectories"] and on["features"] == off["features"]
    expected = [
        {"id": 0, "trajectories": [0, 2], "n_faces": 10, "shots": [0]},
        {"id": 1, "trajectories": [1], "n_faces": 5, "shots": [0]},
    ]
    assert on["clusters"]["clusters"] == off["clusters"]["clusters"] == expected
    assert on["clusters"]["unclustered"] == off["clusters"]["unclustered"] == []
    # And at the function level: keeping every trajectory is the same as not filtering at all.
    shard = ShardResult.load(tmp_path / "on" / "shards" / "0000-of-0001")
    everyone = torch.ones(shard.tracks.count, dtype=torch.bool)
    filtered = cluster_trajectories(shard.faces, shard.tracks, 0.9, everyone)
    assert torch.equal(filtered, cluster_trajectories(shard.faces, shard.tracks, 0.9))
