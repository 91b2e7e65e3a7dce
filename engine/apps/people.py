"""Known people: reference photos, galleries and matching faces against them.

One photo names one person (the largest face in it: a reference photo may show someone in the background). A
gallery is a folder of ``NAME/*.jpg|png`` (several photos per person) or ``NAME.jpg|png`` files, so both the seed's
actor database and a newsroom's watch list fit. Distances are Euclidean between dlib descriptors, where dlib's
own convention is that < 0.6 means "same person" (:data:`DEFAULT_MATCH_DISTANCE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.faces.batching import FaceModels
from engine.index import knn
from engine.media import DecodeError, load_image

#: dlib's documented decision distance for its 128-d descriptors (kept for callers of the seed's rule; search and
#: the monitor take the chosen embedder's threshold from ``engine.apps.identify.rule_for``).
DEFAULT_MATCH_DISTANCE = 0.6
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class PeopleError(ValueError):
    """A reference photo or gallery that cannot serve: unreadable, no face, empty folder."""


@dataclass
class People:
    """``embeddings[i]`` is a descriptor of ``names[i]`` taken from ``paths[i]`` (several rows per name allowed)."""

    names: list[str]
    paths: list[str]
    embeddings: torch.Tensor  # float32 [R, D], on the models' device

    def __len__(self) -> int:
        return len(self.names)

    @property
    def unique_names(self) -> list[str]:
        return list(dict.fromkeys(self.names))


def reference_embedding(path: str | Path, models: FaceModels) -> tuple[torch.Tensor, list[float]]:
    """The descriptor ``[D]`` and box of the largest face of a photo; ``PeopleError`` when there is none."""
    path = Path(path)
    try:
        img = load_image(path)
    except DecodeError as exc:
        raise PeopleError(f"reference {path}: {exc}") from exc
    cfg = models.settings
    scale = 1.0 if cfg.long_side == 0 else min(1.0, cfg.long_side / max(img.shape[-2:]))
    det = models.detector.detect_with_rotation(img[None], scale, cfg.threshold)
    if len(det) == 0:
        raise PeopleError(f"reference {path}: no face found in the photo; use a clear, frontal photo of the person")
    area = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
    biggest = det.select(area.argmax().reshape(1))
    embedding = models.embedder.embed(img[None], biggest)[0].float()
    return embedding, [round(v, 2) for v in biggest.boxes[0].tolist()]


def load_people(paths: Sequence[str | Path], models: FaceModels) -> People:
    """One person per photo, named by the file's stem (``lin-manuel-miranda.png`` → ``lin-manuel-miranda``)."""
    if not paths:
        raise PeopleError("no reference photo given")
    names, files, vectors = [], [], []
    for path in paths:
        vector, _box = reference_embedding(path, models)
        names.append(Path(path).stem)
        files.append(str(path))
        vectors.append(vector)
    return People(names, files, torch.stack(vectors))


def gallery_files(folder: str | Path) -> list[tuple[str, Path]]:
    """``(name, photo)`` pairs of a gallery folder: ``NAME/*.jpg|png`` and ``NAME.jpg|png``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PeopleError(f"gallery {folder} is not a folder")
    pairs: list[tuple[str, Path]] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            pairs += [(entry.name, p) for p in sorted(entry.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            pairs.append((entry.stem, entry))
    if not pairs:
        raise PeopleError(f"gallery {folder} holds no NAME/*.jpg|png folder and no NAME.jpg|png photo")
    return pairs


def load_gallery(folder: str | Path, models: FaceModels, log=None) -> People:  # noqa: ANN001 - log: str -> None
    """Every usable photo of a gallery; photos without a face are skipped with a note (``log``), not fatal."""
    names, files, vectors = [], [], []
    for name, path in gallery_files(folder):
        try:
            vector, _box = reference_embedding(path, models)
        except PeopleError as exc:
            if log:
                log(f"note   gallery: {exc}; skipped")
            continue
        names.append(name)
        files.append(str(path))
        vectors.append(vector)
    if not vectors:
        raise PeopleError(f"gallery {folder}: no photo with a face")
    return People(names, files, torch.stack(vectors))


def distances(embeddings: torch.Tensor, people: People) -> torch.Tensor:
    """``[F, R]`` Euclidean distances between face descriptors and every gallery row (same device as ``people``)."""
    if len(embeddings) == 0:
        return torch.zeros((0, len(people)), device=people.embeddings.device)
    return torch.cdist(embeddings.to(people.embeddings).float(), people.embeddings.float())


def person_distances(embeddings: torch.Tensor, people: People) -> torch.Tensor:
    """``[F, P]`` distances of faces to each person of ``people.unique_names`` (a person with several photos is as
    near as their nearest photo), on the host: the input of :func:`engine.apps.identify.track_distances`."""
    d = distances(embeddings, people).cpu()
    names = people.unique_names
    if len(d) == 0:
        return torch.zeros((0, len(names)))
    return torch.stack(
        [d[:, [i for i, n in enumerate(people.names) if n == name]].min(dim=1).values for name in names], 1
    )


#: Width of the Gaussian vote kernel: half dlib's decision distance, so a vote at 0.6 weighs e^-4 of one at 0.
VOTE_KERNEL = 0.3


def knn_vote(embeddings: torch.Tensor, people: People, k: int = 5, top: int = 3) -> list[dict]:
    """Who a group of faces (one cluster) is: each face's ``k`` nearest gallery rows vote, each vote weighted by
    ``exp(-(distance / VOTE_KERNEL)^2)``; the summed votes are normalised into probabilities over the gallery's
    people. (Plain 1/distance weights let far-away people keep a large share whenever the gallery is small.)

    Returns the ``top`` people, most probable first, each with its probability, its number of votes and the
    median distance of its votes (a probability of 1 with a median distance of 0.9 still means "nobody known").
    """
    if len(embeddings) == 0 or len(people) == 0:
        return []
    near, row = knn(embeddings, people.embeddings, k)  # blocked torch, or FAISS for large galleries
    names = people.unique_names
    person = torch.tensor([names.index(n) for n in people.names], device=row.device)[row]
    weight = torch.exp(-((near / VOTE_KERNEL) ** 2)).clamp(min=1e-30)
    score = torch.zeros(len(names), device=row.device, dtype=weight.dtype).index_add_(
        0, person.flatten(), weight.flatten()
    )
    prob = score / score.sum()
    order = prob.argsort(descending=True)[:top]
    out = []
    for i in order.tolist():
        votes = near[person == i]
        if votes.numel() == 0:
            continue
        out.append(
            dict(
                name=names[i],
                probability=round(float(prob[i]), 4),
                votes=int(votes.numel()),
                median_distance=round(float(votes.median()), 4),
            )
        )
    return out
