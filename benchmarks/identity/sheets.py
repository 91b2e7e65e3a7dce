"""Contact sheets for labelling the faces written by ``extract.py``, next to optional reference photos.

    ENGINE_WEIGHTS_MIRROR=../shared/weights .venv/bin/python -m benchmarks.identity.sheets \
        runs/identity/friends_poker ../shared/data/galleries/friends
    .venv/bin/python -m benchmarks.identity.sheets runs/identity/talk_show_guests            # no references
    .venv/bin/python -m benchmarks.identity.sheets runs/identity/short_hamilton_clip \
        ../shared/data/faces/lin-manuel-miranda.png ../shared/data/faces/alex-lacamoire.png

With no arguments it makes the ``friends_poker`` sheets against ``../shared/data/galleries/friends``. References are
any mix of folders (every ``*.png``/``*.jpg`` in them) and image files, each named after its file (``NAME=PATH`` names
one explicitly); a clip folder other than the default gets none unless some are given.

Writes to ``OUT/sheets/``:

- ``refs.png``: the reference photos with their names (when there are references);
- ``faces_NN.png``: the faces as context crops (the detector box plus 60 % margin, from the engine's own sampled
  frame) with their ids and, inset top right, the engine's aligned chip (what was embedded); the reference photos in
  the top row. Each tile reads ``{face_id} {time}s`` and then ``~ref`` (nearest reference, dlib) or ``cNN`` (HSE
  cluster). Faces are ordered by the nearest reference then time (``--order ref``, the default with references) or by
  HSE cluster (average linkage at cosine distance ``--hse-threshold``, clusters by first appearance) then time
  (``--order hse``, the default without): an ordering to speed the eye up, never a label. With ``--labels CSV`` the
  label made by eye is written on each tile too (to check a labels file against the faces);
- ``frames_NN.png``: whole sampled frames (four a sheet) with every box drawn and its id, to see who sits where.

Also writes, for the record: ``clusters.csv`` (each face's HSE cluster and its HSE nearest neighbour among the faces
of *other* frames, with the cosine distance: a face whose nearest neighbour carries another label deserves a second
look) and, with references, ``refs.npy`` / ``refs.json`` (the references' dlib descriptors: the largest face of each
photo) and ``nearest.csv`` (each face's nearest reference and distance).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE = 170
COLS = 8
DEFAULT_OUT = "runs/identity/friends_poker"
DEFAULT_GALLERY = "../shared/data/galleries/friends"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def read_faces(out: Path) -> list[dict]:
    with open(out / "faces.csv") as fh:
        return list(csv.DictReader(fh))


def reference_paths(specs: list[str]) -> list[tuple[str, Path]]:
    """``(name, path)`` of each reference: a folder gives each image in it (sorted by name, named after the file), a
    file itself, ``NAME=PATH`` a file under that name."""
    refs: list[tuple[str, Path]] = []
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        p = Path(path)
        if p.is_dir():
            refs += [(q.stem, q) for q in sorted(p.iterdir()) if q.suffix.lower() in IMAGE_SUFFIXES]
        elif p.is_file():
            refs.append((name or p.stem, p))
        else:
            raise SystemExit(f"no reference photo or folder at {p}")
    return refs


def reference_descriptors(refs: list[tuple[str, Path]]) -> np.ndarray:
    """The dlib descriptor of the largest face of each reference photo, in the order given."""
    from engine.faces.batching import FaceModels
    from engine.faces.photos import embed_files

    models = FaceModels.load("cpu")
    found = embed_files([p for _, p in refs], models.detector, models.embedder, long_side=640)
    vecs = []
    for _, p in refs:
        faces = found[str(p)]
        if not isinstance(faces, list) or not faces:
            raise SystemExit(f"no face in reference {p}")
        big = max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        vecs.append(big["embedding"])
    return np.asarray(vecs, dtype=np.float32)


def hse_clusters(faces: list[dict], hse: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster number of each face: average linkage on HSE cosine distance cut at ``threshold``, numbered by first
    appearance (faces.csv is in time order)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if len(faces) < 2:
        return np.zeros(len(faces), dtype=int)
    d = np.clip(1.0 - hse @ hse.T, 0.0, 2.0)
    np.fill_diagonal(d, 0.0)
    raw = fcluster(linkage(squareform(d, checks=False), "average"), threshold, "distance")
    first: dict[int, int] = {}
    for c in raw:
        first.setdefault(int(c), len(first))
    return np.array([first[int(c)] for c in raw])


def hse_neighbours(faces: list[dict], hse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each face's nearest face of another frame (index, cosine distance) by HSE descriptor; -1 when there is none."""
    d = 1.0 - hse @ hse.T
    frame = np.array([int(f["frame_index"]) for f in faces])
    d[frame[:, None] == frame[None, :]] = np.inf
    nn = d.argmin(1) if len(faces) else np.zeros(0, dtype=int)
    dist = d[np.arange(len(faces)), nn]
    return np.where(np.isfinite(dist), nn, -1), dist


def sampled_frames(out: Path) -> dict[int, np.ndarray]:
    """The engine's own sampled frames (RGB) by frame index, as ``extract.py`` wrote them: decoding the clip again
    here would not give the same frames (a video stream may start after 0 s, e.g. friends_poker's at 1.704 s, where
    OpenCV's clock starts at 0)."""
    return {int(p.stem): np.asarray(Image.open(p).convert("RGB")) for p in (out / "frames").glob("*.jpg")}


def context_crop(frame: np.ndarray, box: list[float], margin: float = 0.6) -> Image.Image:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    side = max(w, h) * (1 + margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    img = Image.fromarray(frame)
    return img.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))


def tile(img: Image.Image, text: str, font: ImageFont.ImageFont, lines: int = 1) -> Image.Image:
    t = Image.new("RGB", (TILE, TILE + 4 + 14 * lines), "white")
    t.paste(img.convert("RGB").resize((TILE, TILE)), (0, 0))
    ImageDraw.Draw(t).multiline_text((3, TILE + 2), text, fill="black", font=font, spacing=2)
    return t


def grid(tiles: list[Image.Image], cols: int = COLS) -> Image.Image:
    rows = (len(tiles) + cols - 1) // cols
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * (w + 4), rows * (h + 4)), (200, 200, 200))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * (w + 4), (i // cols) * (h + 4)))
    return sheet


def read_labels(path: Path) -> dict[str, str]:
    with open(path) as fh:
        return {r["face_id"]: r["label"] + ("" if r.get("view", "face") == "face" else f" ({r['view']})")
                for r in csv.DictReader(fh)}  # fmt: skip


def frame_sheets(out: Path, faces: list[dict], frames: dict[int, np.ndarray], font: ImageFont.ImageFont) -> None:
    """Whole sampled frames, four a sheet (2 × 2, each scaled to 640 px wide), every box drawn with its id."""
    by_frame: dict[int, list[dict]] = {}
    for f in faces:
        by_frame.setdefault(int(f["frame_index"]), []).append(f)
    indices = sorted(by_frame)
    for s in range(0, len(indices), 4):
        imgs = []
        for t in indices[s : s + 4]:
            full = Image.fromarray(frames[t])
            k = 640 / full.width
            img = full.resize((640, round(full.height * k)))
            d = ImageDraw.Draw(img)
            for f in by_frame[t]:
                x1, y1, x2, y2 = (float(f[c]) * k for c in ("x1", "y1", "x2", "y2"))
                d.rectangle((x1, y1, x2, y2), outline="red", width=2)
                d.text((x1 + 2, max(0, y1 - 12)), f["face_id"], fill="yellow", font=font)
            d.text((4, 4), f"frame {t} t={float(by_frame[t][0]['time_s']):.2f}s", fill="yellow", font=font)
            imgs.append(img)
        h = max(img.height for img in imgs)
        sheet = Image.new("RGB", (1284, 2 * h + 4), "gray")
        for k, img in enumerate(imgs):
            sheet.paste(img, ((k % 2) * 644, (k // 2) * (h + 4)))
        sheet.save(out / "sheets" / f"frames_{s // 4:02d}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default=DEFAULT_OUT, help="a folder written by extract.py")
    p.add_argument("refs", nargs="*", help="reference photos: folders, files or NAME=FILE (default: none, or the "
                   f"friends gallery for {DEFAULT_OUT})")  # fmt: skip
    p.add_argument("--per-sheet", type=int, default=32, help="faces per sheet (plus the reference row)")
    p.add_argument("--order", choices=("ref", "hse"), help="order faces by nearest reference or by HSE cluster "
                   "(default: ref with references, hse without)")  # fmt: skip
    p.add_argument("--hse-threshold", type=float, default=0.4, help="HSE cosine distance cutting the clusters")
    p.add_argument("--labels", type=Path, help="a labels CSV whose labels are written on the tiles")
    a = p.parse_args()
    os.environ.setdefault("ENGINE_WEIGHTS_MIRROR", str(Path("../shared/weights").resolve()))
    out = Path(a.out)
    specs = a.refs or ([DEFAULT_GALLERY] if a.out == DEFAULT_OUT else [])
    refs = reference_paths(specs)
    order_by = a.order or ("ref" if refs else "hse")
    if order_by == "ref" and not refs:
        raise SystemExit("--order ref needs reference photos")
    sheets = out / "sheets"
    sheets.mkdir(exist_ok=True)
    font = ImageFont.load_default()
    faces = read_faces(out)
    labels = read_labels(a.labels) if a.labels else {}
    hse = np.load(out / "descriptors_hse.npy")
    cluster = hse_clusters(faces, hse, a.hse_threshold)
    nn, nn_dist = hse_neighbours(faces, hse)
    with open(out / "clusters.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["face_id", "hse_cluster", "hse_nearest", "hse_nearest_cos_dist"])
        for i, f in enumerate(faces):
            w.writerow([f["face_id"], int(cluster[i]), faces[nn[i]]["face_id"] if nn[i] >= 0 else "",
                        round(float(nn_dist[i]), 3) if nn[i] >= 0 else ""])  # fmt: skip
    names = [n for n, _ in refs]
    ref_tiles: list[Image.Image] = []
    nearest = np.zeros(len(faces), dtype=int)
    if refs:
        desc = np.load(out / "descriptors.npy")
        ref_desc = reference_descriptors(refs)
        if ref_desc.shape[1] != desc.shape[1]:
            raise SystemExit(
                f"reference descriptors are {ref_desc.shape[1]}-d, the faces' {desc.shape[1]}-d: the "
                "engine's embedder is not the one extract.py ran with (run both from the same tree)"
            )
        np.save(out / "refs.npy", ref_desc)
        (out / "refs.json").write_text(json.dumps(names))
        dist = np.linalg.norm(desc[:, None, :] - ref_desc[None, :, :], axis=2)
        nearest = dist.argmin(1)
        with open(out / "nearest.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["face_id", "nearest_ref", "distance"])
            for f, n, d in zip(faces, nearest, dist.min(1), strict=True):
                w.writerow([f["face_id"], names[n], round(float(d), 3)])
        lines = 2 if labels else 1
        ref_tiles = [tile(Image.open(path), n.upper(), font, lines) for n, path in refs]
        grid(ref_tiles, len(ref_tiles)).save(sheets / "refs.png")
    frames = sampled_frames(out)
    if order_by == "ref":
        order = sorted(range(len(faces)), key=lambda i: (nearest[i], float(faces[i]["time_s"])))
    else:
        order = sorted(range(len(faces)), key=lambda i: (cluster[i], float(faces[i]["time_s"])))
    for s in range(0, len(order), a.per_sheet):
        tiles = list(ref_tiles)
        if ref_tiles and len(ref_tiles) % COLS:
            tiles += [Image.new("RGB", ref_tiles[0].size, "gray")] * (COLS - len(ref_tiles) % COLS)
        for i in order[s : s + a.per_sheet]:
            f = faces[i]
            box = [float(f[k]) for k in ("x1", "y1", "x2", "y2")]
            crop = context_crop(frames[int(f["frame_index"])], box)
            chip = Image.open(out / "crops" / f"{f['face_id']}.jpg").resize((TILE // 2, TILE // 2))
            crop = crop.resize((TILE, TILE))
            crop.paste(chip, (TILE - TILE // 2, 0))
            tag = f"~{names[nearest[i]][:3]}" if order_by == "ref" else f"c{cluster[i]:02d}"
            text = f"{f['face_id']}  {float(f['time_s']):.1f}s  {tag}"
            if labels:
                text += "\n" + labels.get(f["face_id"], "?")
            tiles.append(tile(crop, text, font, 2 if labels else 1))
        grid(tiles).save(sheets / f"faces_{s // a.per_sheet:02d}.png")
    frame_sheets(out, faces, frames, font)
    print(f"sheets in {sheets}")


if __name__ == "__main__":
    main()
