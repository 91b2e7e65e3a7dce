"""The seed's layout (``OUT/<movie_id>-data/``) as MoMaF/video-labeler loads it, on the shared Hamilton clip.

``labeller_read`` replays what the labeller's backend (``back/main.py``: ``read_datadirs`` at start-up, then the
``/api/faces/clusters`` and ``/images`` handlers) does with the folder, step by step, written here from reading it:
a wrong name, type or count in any file makes it fail as the labeller would (a ``KeyError``, an ``assert``, a crop
that is never shown). ``seed_vectors`` replays how the seed's own scripts find a face's descriptor
(``facerec/utils/utils.py``: ``read_features``, ``get_vectors``). The clip is labelled every 0.5 s (18 frames), once
and in 4 shards: the two folders must be the same bytes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from engine.apps.film import LabelSettings, label_film, load_models, merge
from engine.apps.film_actors import ACTOR_EMBEDDINGS, load_film_gallery, read_embeddings
from engine.apps.film_facerec import movie_id_from_name, resolve_movie_id
from engine.apps.film_shards import LabelError
from engine.faces.batching import FaceModels
from engine.media import load_image

MOVIE = 12345
SETTINGS = LabelSettings(interval=0.5)
CAST = {"1001": "lin-manuel-miranda.png", "1002": "alex-lacamoire.png", "1003": "obama.jpg"}
PREDICTION_MIN_P = 0.40  # the labeller shows a prediction above this
ITEMS_PER_TRAJECTORY = 2
SEED_TRAJECTORY_KEYS = {"start", "len", "bbs", "detected", "w", "h", "object_type", "index", "movie_id"}


# ---------------------------------------------------------------------------------------- the labeller, replayed


def img_tag(movie_id: int, frame: int, box: list[int]) -> str:
    return f"{movie_id}:{frame}" + ":{}_{}_{}_{}".format(*box)


def parse_tag(tag: str) -> tuple[int, ...]:
    _, frame, box = tag.split(":", 2)
    return (int(frame), *(int(c) for c in box.split("_")))


def split_evenly(items: list, n: int) -> list:
    if n >= len(items):
        return items
    step = len(items) // (n - 1)
    return [items[min(len(items) - 1, m)] for m in range(0, len(items) + step - 1, step)][:n]


def labeller_read(data_dir: Path, films_dir: Path) -> dict[int, dict]:
    """``read_datadirs``: every ``*-data`` folder, its trajectories, images, clusters and predictions."""
    films = {}
    _, _, names = next(os.walk(films_dir))
    for name in sorted(names):
        with contextlib.suppress(ValueError):
            films[int(name.split("-")[0])] = films_dir / name
    movies = {}
    for folder in sorted(data_dir.glob("*-data")):
        movie_id = int(folder.name.split("-")[0])
        _, _, images = next(os.walk(folder / "images"))
        with (folder / "trajectories.jsonl").open() as f:
            trajectories = [json.loads(line) for line in f]
        for t in trajectories:
            boxes = enumerate(t["bbs"], start=t["start"])
            t["image_bbs"] = [(fr, box) for fr, box in boxes if f"{img_tag(movie_id, fr, box)}.jpeg" in set(images)]
        cluster_indices = json.loads((folder / "clusters.json").read_text())["clusters"]
        assert len(cluster_indices) == len(trajectories), "All trajectories need a cluster!"
        clusters: dict[int, dict] = {}
        trajectory_map: dict[tuple[int, ...], int] = {}
        for ti, ci in enumerate(cluster_indices):
            cluster = clusters.setdefault(ci, {"image_data": [], "n_trajectories": 0, "n_total_images": 0})
            assert trajectories[ti]["index"] == ti, "Trajectory implicit index wrong?"
            shown = split_evenly(trajectories[ti]["image_bbs"], ITEMS_PER_TRAJECTORY)
            cluster["image_data"] += [(ti, *ib) for ib in shown]
            cluster["n_total_images"] += len(trajectories[ti]["image_bbs"])
            cluster["n_trajectories"] += 1
            trajectory_map.update({(fr, *box): ti for fr, box in shown})
        predictions = json.loads((folder / "predictions.json").read_text())["predictions"]
        predictions = {int(c): {a: p for a, p in preds.items()} for c, preds in predictions.items()}
        assert len(predictions) == len(clusters), "Predictions not equal to clusters!"
        movies[movie_id] = dict(
            path=folder, movie_path=films.get(movie_id), clusters=clusters, n_clusters=len(clusters),
            predictions=predictions, trajectory_map=trajectory_map, trajectories=trajectories,
        )  # fmt: skip
    return movies


def labeller_cluster(movie: dict, movie_id: int, cluster_id: int) -> dict:
    """``GET /api/faces/clusters/{movie}/{cluster}``, each image fetched through ``GET /images/{tag}.jpeg`` and
    posted back (``POST``: the tag parsed back to its trajectory)."""
    cluster = movie["clusters"][cluster_id]
    images = []
    for _, frame, box in cluster["image_data"]:
        tag = img_tag(movie_id, frame, box)
        assert (movie["path"] / "images" / f"{tag}.jpeg").is_file()
        assert movie["trajectory_map"][parse_tag(tag)] in range(len(movie["trajectories"]))
        images.append(f"images/{tag}.jpeg")
    preds = movie["predictions"][cluster_id]
    return dict(images=images, predicted_actors=[a for a, p in preds.items() if p > PREDICTION_MIN_P])


def seed_vectors(folder: Path, trajectory: dict, model: str) -> list[list[float]]:
    """``read_features`` + ``get_vectors``: a trajectory's descriptors, found by (frame, box)."""
    vector_map: dict[int, dict[tuple[int, ...], dict]] = {}
    for line in (folder / "features.jsonl").read_text().splitlines():
        obj = json.loads(line)
        vector_map.setdefault(obj["frame"], {})[tuple(obj["box"])] = obj["embeddings"]
    found = []
    for frame, bbs in enumerate(trajectory["bbs"], start=trajectory["start"]):
        if frame in vector_map and tuple(bbs) in vector_map[frame]:
            found.append(vector_map[frame][tuple(bbs)][model])
    return found


# ------------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory, hamilton: Path) -> Path:
    films = tmp_path_factory.mktemp("films")
    shutil.copy(hamilton, films / f"{MOVIE}-hamilton.mp4")
    (films / "notes.txt").write_text("not a film")
    return films / f"{MOVIE}-hamilton.mp4"


@pytest.fixture(scope="module")
def actors(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A seed-style actor database: the film's cast of three, Biden in another film, a photo of two actors."""
    db = tmp_path_factory.mktemp("actors")
    (db / "actor_images").mkdir()
    photos = {**CAST, "2001": "biden.jpg"}
    for name in [*photos.values(), "obama_and_biden.jpg"]:
        shutil.copy(shared_data / "faces" / name, db / "actor_images" / name)
    with (db / "actors.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movie_id", "movie_name", "movie_year", "id", "name", "role", "birthday", "birthplace"])
        for actor, photo in CAST.items():
            w.writerow([MOVIE, "Hamilton", 2020, actor, Path(photo).stem, "", "", ""])
        w.writerow([999, "Other", 2021, 2001, "biden", "", "", ""])
    with (db / "actor_images.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "actor_id", "movie_id", "filename", "n_detections"])
        rows = [*photos.items(), ("1003", "obama_and_biden.jpg"), ("2001", "obama_and_biden.jpg")]
        for i, (actor, photo) in enumerate(rows):
            w.writerow([i, actor, MOVIE, photo, 1])
    return db


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return load_models("cpu", SETTINGS)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, film: Path, actors: Path) -> Path:
    out = tmp_path_factory.mktemp("one")
    label_film(film, out, settings=SETTINGS, gallery=actors, log=lambda _m: None)
    return out


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, film: Path, actors: Path, models: FaceModels) -> Path:
    out = tmp_path_factory.mktemp("four")
    for i in range(4):  # four separate jobs, then the merge, as on a cluster
        label_film(film, out, settings=SETTINGS, shards=4, shard=i, log=lambda _m: None)
    merge(out, actors, models)
    return out


# ---------------------------------------------------------------------------------------------------------- tests


def test_the_labeller_loads_every_file(single: Path, film: Path) -> None:
    movies = labeller_read(single, film.parent)
    assert list(movies) == [MOVIE]
    movie = movies[MOVIE]
    assert movie["movie_path"] == film and movie["n_clusters"] >= 3
    assert sorted(movie["clusters"]) == list(range(movie["n_clusters"]))  # dense, as the frontend walks them
    sizes = [movie["clusters"][c]["n_trajectories"] for c in range(movie["n_clusters"])]
    assert sizes == sorted(sizes, reverse=True)  # the seed's order: most trajectories first
    predicted = set()
    for c in range(movie["n_clusters"]):
        got = labeller_cluster(movie, MOVIE, c)
        assert got["images"], f"cluster {c} shows no face"
        assert movie["predictions"][c], f"cluster {c} has no prediction"
        assert set(movie["predictions"][c]) <= set(CAST)  # the film's cast only: never Biden (2001)
        assert min(movie["predictions"][c].values()) > 0.05 and sum(movie["predictions"][c].values()) <= 1.0001
        predicted |= set(got["predicted_actors"])
    assert {"1001", "1003"} <= predicted  # Lin-Manuel Miranda and Obama are on screen


def test_trajectories_have_a_box_for_every_frame_and_a_crop_for_every_detection(single: Path) -> None:
    folder = single / f"{MOVIE}-data"
    movie = labeller_read(single, single)[MOVIE]
    ours = [json.loads(line) for line in (single / "trajectories.jsonl").read_text().splitlines()]
    clustered = [t for t in ours if t["clustered"]]
    assert len(movie["trajectories"]) == len(clustered) < len(ours)  # the floors' junk is left out
    for t, mine in zip(movie["trajectories"], clustered, strict=True):
        assert set(t) - {"image_bbs"} == SEED_TRAJECTORY_KEYS  # image_bbs: added by the loader
        assert (t["w"], t["h"], t["object_type"], t["movie_id"]) == (640, 360, "face", MOVIE)
        assert t["len"] == len(t["bbs"]) == len(t["detected"]) == mine["end_frame"] - mine["start_frame"] + 1
        assert t["start"] == mine["start_frame"]
        for x1, y1, x2, y2 in t["bbs"]:
            assert all(type(v) is int for v in (x1, y1, x2, y2))
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360
        detected = [t["start"] + i for i, d in enumerate(t["detected"]) if d]
        assert detected == [d["frame"] for d in mine["detections"]]
        assert [fr for fr, _ in t["image_bbs"]] == detected  # each detection has its crop, found by its bbs box
        for (_, box), d in zip(t["image_bbs"], mine["detections"], strict=True):  # the detection's box, clipped
            clipped = [min(max(v, 0), limit) for v, limit in zip(d["box"], (640, 360, 640, 360), strict=True)]
            assert all(abs(b - v) <= 0.51 for b, v in zip(box, clipped, strict=True))
        assert len(seed_vectors(folder, t, "hse")) == len(detected)
    for name in os.listdir(folder / "images"):
        crop = load_image(folder / "images" / name)
        assert max(crop.shape[-2:]) <= 160


def test_features_scenes_and_clusters(single: Path) -> None:
    folder = single / f"{MOVIE}-data"
    features = [json.loads(line) for line in (folder / "features.jsonl").read_text().splitlines()]
    images = set(os.listdir(folder / "images"))
    assert len(features) == len(images) > 10
    for f in features:
        assert set(f) == {"frame", "tag", "embeddings", "box", "keypoints", "w", "h"}
        assert f["tag"] == img_tag(MOVIE, f["frame"], f["box"]) and f"{f['tag']}.jpeg" in images
        assert list(f["embeddings"]) == ["hse"] and len(f["embeddings"]["hse"]) == 1024
        assert list(f["keypoints"]) == ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
    assert [f["frame"] for f in features] == sorted(f["frame"] for f in features)
    scenes = json.loads((folder / "scene_changes.json").read_text())
    ours = json.loads((single / "scene_changes.json").read_text())
    assert scenes == {"frame_indices": [c["frame"] for c in ours["cuts"]], "movie_id": MOVIE}
    clusters = json.loads((folder / "clusters.json").read_text())
    assert set(clusters) == {"clusters", "movie_id"} and clusters["movie_id"] == MOVIE
    assert len(json.loads((single / "clusters.json").read_text())["clusters"]) == max(clusters["clusters"]) + 1
    predictions = json.loads((folder / "predictions.json").read_text())
    assert set(predictions) == {"movie_id", "predictions"} and predictions["movie_id"] == MOVIE


def test_four_shards_merged_are_the_same_bytes(single: Path, sharded: Path) -> None:
    a, b = single / f"{MOVIE}-data", sharded / f"{MOVIE}-data"
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len(names) > 20
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_actor_database_is_the_cast_and_its_embeddings_are_reused(
    single: Path, actors: Path, models: FaceModels, tmp_path: Path
) -> None:
    built = [json.loads(line) for line in (single / ACTOR_EMBEDDINGS).read_text().splitlines()]
    # Cast photos that show one actor only: Biden (another film) and the photo of two actors are not used.
    assert sorted(line["image"] for line in built) == sorted(CAST.values())
    assert all(line["model"] == "hse" and line["n"] == 1 and len(line["faces"][0]["vector"]) == 1024 for line in built)
    # A database with these embeddings and no photos gives the same gallery; the seed's FaceNet lines are ignored.
    db = tmp_path / "db"
    db.mkdir()
    for name in ("actors.csv", "actor_images.csv"):
        shutil.copy(actors / name, db / name)
    facenet = {"image": "lin-manuel-miranda.png", "n": 1, "faces": [{"vector": [0.1] * 512}]}
    lines = [json.dumps(facenet), *(single / ACTOR_EMBEDDINGS).read_text().splitlines()]
    (db / ACTOR_EMBEDDINGS).write_text("\n".join(lines) + "\n")
    assert set(read_embeddings(db / ACTOR_EMBEDDINGS, "hse")) == set(CAST.values())
    people = load_film_gallery(db, models, MOVIE, tmp_path / "out")
    assert people.names == list(CAST) and not (tmp_path / "out" / ACTOR_EMBEDDINGS).exists()
    with pytest.raises(LabelError, match="lists no actor of movie 5"):
        load_film_gallery(db, models, 5, tmp_path / "out")


def test_without_a_gallery_and_with_another_movie_id(single: Path, tmp_path: Path) -> None:
    shutil.copytree(single / "shards", tmp_path / "shards")
    summary = merge(tmp_path, movie_id=777)
    assert summary["movie_id"] == 777 and summary["seed"]["dir"] == "777-data"
    movie = labeller_read(tmp_path, tmp_path)[777]
    assert all(preds == {} for preds in movie["predictions"].values())  # one (empty) entry per cluster
    assert all(name.startswith("777:") for name in os.listdir(tmp_path / "777-data" / "images"))


def test_movie_id_from_the_film_name() -> None:
    assert movie_id_from_name("/films/12345-CoolMovieFilm.mp4") == 12345
    assert movie_id_from_name("12345.mp4") == 12345
    assert movie_id_from_name("short_hamilton_clip.mp4") is None
    assert movie_id_from_name("Cool-12345.mp4") is None
    assert resolve_movie_id("short_hamilton_clip.mp4", 8) == 8
    assert resolve_movie_id("short_hamilton_clip.mp4", None) is None  # then only our own files are written
    with pytest.raises(LabelError, match="0 or more"):
        resolve_movie_id("short_hamilton_clip.mp4", -3)
