"""Reference search on the labelled clips: precision and recall per reference photo and per embedder.

Two labelled clips have reference photos of their people (:data:`SETS`): ``friends_poker.mp4`` (six people at one
table, the six photos of ``../shared/data/galleries/friends``) and ``short_hamilton_clip.mp4`` (the singer and the
pianist, ``faces/lin-manuel-miranda.png`` and ``faces/alex-lacamoire.png``). For each embedder (``hse``, ``dlib``),
each clip is scanned once with the engine's search settings (``engine.apps.search.scan_video``: faces every 0.2 s,
shot cuts on every frame; cached in ``runs/identity/search_cache_<clip>_<embedder>.pt``) and searched for each of
its photos (``engine.apps.search.search_scan``, the engine's own decision, no clips).

Scoring against ``<clip>.labels.csv`` (faces of ``<clip>.faces.csv``, a frame every 0.5 s): a reported box *meets*
a labelled face when their times are within 0.15 s and their IoU is at least 0.3. Precision: of the reported boxes
that meet a labelled face, the share whose face is the person. Recall: of the person's labelled faces, the share
met by a reported box (also without the ``partial`` views).

    ENGINE_WEIGHTS_MIRROR=../shared/weights python -m benchmarks.identity.search_bench [--embedder hse] [--fresh]
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.ops import box_iou

from engine.apps.search import SearchSettings, VideoScan, load_reference, scan_video, search_scan
from engine.config import FaceSettings
from engine.faces.batching import FaceModels

ROOT = Path(__file__).resolve().parents[2]
#: The shared media (``ENGINE_SHARED_DATA``, as the Makefile and the tests set it; else ``../shared/data``).
DATA = Path(os.environ.get("ENGINE_SHARED_DATA") or ROOT.parent / "shared" / "data")
VIDEO = DATA / "multi_person" / "friends_poker.mp4"
GALLERY = DATA / "galleries" / "friends"
LABELS = Path(__file__).with_name("friends_poker.labels.csv")
#: The labelled faces' boxes, as the extraction found them (``extract.py``; committed beside the labels, so the
#: tests and this script need no extraction).
FACES = Path(__file__).with_name("friends_poker.faces.csv")
HAMILTON = DATA / "videos" / "short_hamilton_clip.mp4"
#: The two people of the Hamilton clip with a reference photo (``../shared/data/SOURCES.md``), as labelled.
HAMILTON_PEOPLE = ("alex_lacamoire", "lin_manuel_miranda")
CACHE = ROOT / "runs" / "identity"
MAX_DT_S = 0.15
MIN_IOU = 0.3


@dataclass
class Labelled:
    """The labelled faces: time ``[N]``, box ``[N, 4]``, label and view of each."""

    time_s: torch.Tensor
    boxes: torch.Tensor
    label: list[str]
    view: list[str]


def load_labels(labels: Path = LABELS, faces: Path = FACES) -> Labelled:
    by_id = {r["face_id"]: r for r in csv.DictReader(labels.open())}
    rows = list(csv.DictReader(faces.open()))
    return Labelled(
        torch.tensor([float(r["time_s"]) for r in rows], dtype=torch.float64),
        torch.tensor([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in rows]),
        [by_id[r["face_id"]]["label"] for r in rows],
        [by_id[r["face_id"]]["view"] for r in rows],
    )


@dataclass(frozen=True)
class SearchSet:
    """A labelled clip with reference photos of its people: ``photos`` maps each photo to its label."""

    name: str
    video: Path
    photos: dict[Path, str]

    @property
    def stem(self) -> str:
        return self.video.stem

    def truth(self) -> Labelled:
        here = Path(__file__).parent
        return load_labels(here / f"{self.stem}.labels.csv", here / f"{self.stem}.faces.csv")


def search_sets() -> list[SearchSet]:
    """The labelled clips searched, with their photos (sorted by file name)."""
    return [
        SearchSet("friends", VIDEO, {p: p.stem for p in sorted(GALLERY.glob("*.png"))}),
        SearchSet("hamilton", HAMILTON, {DATA / "faces" / f"{p.replace('_', '-')}.png": p for p in HAMILTON_PEOPLE}),
    ]


def cached_scan(
    models: FaceModels, settings: SearchSettings, embedder: str, fresh: bool = False, video: Path = VIDEO
) -> VideoScan:
    """The clip's scan with ``embedder``, from the cache when there is one."""
    path = CACHE / f"search_cache_{video.stem}_{embedder}.pt"
    if path.is_file() and not fresh:
        return torch.load(path, weights_only=False)
    vs = scan_video(models, settings, video)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vs, path)
    return vs


def score(meta: dict, person: str, truth: Labelled) -> dict[str, float]:
    """Precision and recall of one search's reported boxes for ``person`` (see the module's docstring)."""
    met: set[int] = set()
    reported = correct = 0
    for f in (f for clip in meta["clips"] for f in clip["face_clips"]):
        near = ((truth.time_s - f["time_s"]).abs() <= MAX_DT_S).nonzero().flatten()
        if len(near) == 0:
            continue
        box = torch.tensor([[f["x"], f["y"], f["x"] + f["w"], f["y"] + f["h"]]], dtype=torch.float32)
        iou = box_iou(box, truth.boxes[near])[0]
        hits = near[iou >= MIN_IOU].tolist()
        if not hits:
            continue
        reported += 1
        correct += any(truth.label[i] == person for i in hits)
        met.update(i for i in hits if truth.label[i] == person)
    own = [i for i, lab in enumerate(truth.label) if lab == person]
    frontal = [i for i in own if truth.view[i] != "partial"]
    return dict(
        reported=reported,
        precision=correct / reported if reported else 1.0,
        recall=len(met & set(own)) / len(own),
        recall_face=len(met & set(frontal)) / len(frontal),
        labelled=len(own),
    )


def bench(embedder: str, fresh: bool = False) -> list[tuple[str, str, dict]]:
    """Search each clip for each of its reference photos with ``embedder``: ``(clip, person, scores and
    decision)`` rows."""
    settings = SearchSettings(clips=False, faces=FaceSettings(embedder=embedder))
    models = FaceModels.load("cpu", settings.faces)
    rows = []
    for one in search_sets():
        vs, truth = cached_scan(models, settings, embedder, fresh, one.video), one.truth()
        for photo, person in one.photos.items():
            meta = search_scan(vs, load_reference(photo, models), settings, CACHE / "search_out")
            s = score(meta, person, truth)
            s["clips"] = len(meta["clips"])
            s["confidence"] = min((c["confidence"] for c in meta["clips"]), default=float("nan"))
            rows.append((one.name, person, s))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", action="append", choices=["hse", "dlib"], help="repeatable [both]")
    parser.add_argument("--fresh", action="store_true", help="scan again instead of reading the cache")
    args = parser.parse_args()
    print(
        f"{'embedder':8} {'clip':8} {'person':18} {'labelled':>8} {'clips':>5} {'boxes':>5} {'precision':>9} "
        f"{'recall':>6} {'recall (no partial)':>19} {'min conf':>8}"
    )
    for embedder in args.embedder or ["hse", "dlib"]:
        for clip, person, s in bench(embedder, args.fresh):
            print(
                f"{embedder:8} {clip:8} {person:18} {s['labelled']:8d} {s['clips']:5d} {s['reported']:5d} "
                f"{s['precision']:9.3f} {s['recall']:6.3f} {s['recall_face']:19.3f} {s['confidence']:8.3f}"
            )


if __name__ == "__main__":
    main()
