"""A film's gallery: the seed's actor database restricted to the film's cast, or a folder of photos.

The seed (``facerec``'s ``classify_knn.py``) reads an actor database of three files, which the labeller
(``MoMaF/video-labeler``) reads too:

- ``actors.csv``: one row per (movie, actor): ``movie_id``, ``id`` (the actor), ``name`` and more. A film's cast is
  the ``id`` of the rows of its ``movie_id``; predictions are keyed by these ids, as the labeller's actor list is.
- ``actor_images.csv``: ``actor_id``, ``movie_id``, ``filename`` per photo; a photo listed for two actors shows
  both and is not used (the seed's rule).
- ``actor_embeddings.jsonl``: one line per photo, ``{"image": filename, "n": faces, "faces": [{"vector": [...]}]}``;
  only photos with one face are used. The seed's vectors come from its FaceNet, which this engine does not run, so
  a line is used only when its ``"model"`` names this run's embedder. Photos of the cast without such a line are
  embedded here from ``actor_images/<filename>`` (the largest face, the engine's rule for a reference photo: its
  line says ``"n": 1``), and every line used is written to ``OUT/actor_embeddings.jsonl`` (copy it into the
  database to skip that next time).

A folder that holds no ``actors.csv`` is a gallery of photos (``engine.apps.people``): every person in it, named by
the photo or folder.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import torch

from engine.apps.film_shards import LabelError
from engine.apps.people import People, PeopleError, load_gallery, reference_embedding
from engine.faces.batching import FaceModels

ACTORS_CSV = "actors.csv"
ACTOR_IMAGES_CSV = "actor_images.csv"
ACTOR_EMBEDDINGS = "actor_embeddings.jsonl"
ACTOR_PHOTOS = "actor_images"
Log = Callable[[str], None]


def is_actor_database(folder: str | Path) -> bool:
    return (Path(folder) / ACTORS_CSV).is_file()


def _rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise LabelError(f"actor database {path.parent}: {path.name} is missing")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise LabelError(f"{path}: no column {', '.join(missing)}")
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]


def _id(value: str) -> str:
    """An id as the labeller's pandas reads it back: ``"00123"`` and ``"123.0"`` are ``"123"``."""
    try:
        return str(int(float(value)))
    except ValueError:
        return value


def read_cast(folder: Path, movie_id: int) -> dict[str, str]:
    """Actor id -> name of every actor of ``movie_id`` in ``actors.csv`` (file order)."""
    cast: dict[str, str] = {}
    for row in _rows(folder / ACTORS_CSV, ("movie_id", "id")):
        if _id(row["movie_id"]) == str(movie_id):
            cast.setdefault(_id(row["id"]), row.get("name", ""))
    if not cast:
        raise LabelError(f"{folder / ACTORS_CSV} lists no actor of movie {movie_id}: its cast is unknown")
    return cast


def cast_photos(folder: Path, cast: dict[str, str]) -> list[tuple[str, str]]:
    """``(actor id, filename)`` of the photos of the cast that show one known actor, by actor then file name."""
    rows = _rows(folder / ACTOR_IMAGES_CSV, ("actor_id", "filename"))
    listed: dict[str, int] = {}
    for row in rows:
        listed[row["filename"]] = listed.get(row["filename"], 0) + 1
    pairs = {(_id(r["actor_id"]), r["filename"]) for r in rows if listed[r["filename"]] == 1}
    order = {a: i for i, a in enumerate(cast)}
    return sorted((p for p in pairs if p[0] in order), key=lambda p: (order[p[0]], p[1]))


def read_embeddings(path: Path, model: str) -> dict[str, dict]:
    """The usable lines of an ``actor_embeddings.jsonl`` by photo: one face, made by ``model``."""
    if not path.is_file():
        return {}
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {d["image"]: d for d in lines if d.get("model") == model and d.get("n") == 1 and d.get("faces")}


def _embed_photo(folder: Path, filename: str, models: FaceModels, log: Log | None) -> dict | None:
    path = folder / ACTOR_PHOTOS / filename
    if not path.is_file():
        if log:
            log(f"note   actor database: {ACTOR_PHOTOS}/{filename} is missing; skipped")
        return None
    try:
        vector, box = reference_embedding(path, models)
    except PeopleError as exc:
        if log:
            log(f"note   actor database: {exc}; skipped")
        return None
    face = dict(box=box, vector=[round(float(v), 6) for v in vector.cpu()])
    return dict(image=filename, n=1, faces=[face], model=models.embedder.name)


def load_actor_gallery(folder: Path, models: FaceModels, movie_id: int, out: Path, log: Log | None) -> People:
    """The cast of ``movie_id`` as :class:`People` named by actor id (see the module)."""
    cast = read_cast(folder, movie_id)
    known = read_embeddings(folder / ACTOR_EMBEDDINGS, models.embedder.name)
    names, files, lines = [], [], []
    for actor, filename in cast_photos(folder, cast):
        line = known.get(filename) or _embed_photo(folder, filename, models, log)
        if line is not None:
            names.append(actor)
            files.append(filename)
            lines.append(line)
    if not lines:
        raise LabelError(f"actor database {folder}: no usable photo of the cast of movie {movie_id}")
    if any(f not in known for f in files):
        out.mkdir(parents=True, exist_ok=True)
        (out / ACTOR_EMBEDDINGS).write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    vectors = torch.tensor([line["faces"][0]["vector"] for line in lines], dtype=torch.float32)
    return People(names, files, vectors.to(models.detector.device))


def load_film_gallery(
    gallery: str | Path, models: FaceModels, movie_id: int | None, out: str | Path, log: Log | None = None
) -> People:
    """The people a film's clusters are matched against: its cast from an actor database (which needs the film's
    movie id), else a photo gallery."""
    gallery = Path(gallery)
    if is_actor_database(gallery):
        if movie_id is None:
            raise LabelError(
                f"actor database {gallery}: its cast is found by the film's movie id, and this film has none (name it"
                " <id>-<title>, 12345-CoolMovieFilm.mp4, or give --movie-id)"
            )
        return load_actor_gallery(gallery, models, movie_id, Path(out), log)
    try:
        return load_gallery(gallery, models, log)
    except PeopleError as exc:
        raise LabelError(str(exc)) from exc
