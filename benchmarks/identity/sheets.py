"""Contact sheets for labelling the faces written by ``extract.py``, next to the reference photos.

    ENGINE_WEIGHTS_MIRROR=../shared/weights .venv/bin/python -m benchmarks.identity.sheets \
        runs/identity/friends_poker ../shared/data/galleries/friends

Writes to ``OUT/sheets/``:

- ``refs.png``: the reference photos with their names;
- ``faces_NN.png``: the faces as context crops (the detector box plus 60 % margin, from the sampled frame) with their
  ids and, inset top right, the engine's aligned chip (what was embedded); the reference photos in the top row.
  Faces are ordered by the reference whose descriptor is nearest, then by time: an ordering to speed the eye up,
  never a label;
- ``frames_NN.png``: whole sampled frames with every box drawn and its id, to see who sits where.

Also writes ``refs.npy`` / ``refs.json`` (the references' dlib descriptors: the largest face of each photo) and
``nearest.csv`` (each face's nearest reference and distance) for the record.
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


def read_faces(out: Path) -> list[dict]:
    with open(out / "faces.csv") as fh:
        return list(csv.DictReader(fh))


def reference_descriptors(gallery: Path) -> tuple[list[str], np.ndarray]:
    """The dlib descriptor of the largest face of each ``*.png``/``*.jpg`` in ``gallery`` (sorted by name)."""
    from engine.faces.batching import FaceModels
    from engine.faces.photos import embed_files

    models = FaceModels.load("cpu")
    paths = sorted(p for p in gallery.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    found = embed_files(paths, models.detector, models.embedder, long_side=640)
    names, vecs = [], []
    for p in paths:
        faces = found[str(p)]
        if not isinstance(faces, list) or not faces:
            raise SystemExit(f"no face in reference {p}")
        big = max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
        names.append(p.stem)
        vecs.append(big["embedding"])
    return names, np.asarray(vecs, dtype=np.float32)


def sampled_frames(out: Path) -> dict[int, np.ndarray]:
    """The engine's own sampled frames (RGB) by frame index, as ``extract.py`` wrote them: decoding the clip again
    here would not give the same frames (the clip's video stream starts at 1.704 s, OpenCV's clock at 0)."""
    return {int(p.stem): np.asarray(Image.open(p).convert("RGB")) for p in (out / "frames").glob("*.jpg")}


def context_crop(frame: np.ndarray, box: list[float], margin: float = 0.6) -> Image.Image:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    side = max(w, h) * (1 + margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    img = Image.fromarray(frame)
    return img.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))


def tile(img: Image.Image, text: str, font: ImageFont.ImageFont) -> Image.Image:
    t = Image.new("RGB", (TILE, TILE + 18), "white")
    t.paste(img.convert("RGB").resize((TILE, TILE)), (0, 0))
    ImageDraw.Draw(t).text((3, TILE + 2), text, fill="black", font=font)
    return t


def grid(tiles: list[Image.Image], cols: int = COLS) -> Image.Image:
    rows = (len(tiles) + cols - 1) // cols
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * (w + 4), rows * (h + 4)), (200, 200, 200))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * (w + 4), (i // cols) * (h + 4)))
    return sheet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="runs/identity/friends_poker")
    p.add_argument("gallery", nargs="?", default="../shared/data/galleries/friends")
    p.add_argument("--per-sheet", type=int, default=32, help="faces per sheet (plus the reference row)")
    a = p.parse_args()
    os.environ.setdefault("ENGINE_WEIGHTS_MIRROR", str(Path("../shared/weights").resolve()))
    out, gallery = Path(a.out), Path(a.gallery)
    sheets = out / "sheets"
    sheets.mkdir(exist_ok=True)
    font = ImageFont.load_default()
    faces = read_faces(out)
    desc = np.load(out / "descriptors.npy")
    names, refs = reference_descriptors(gallery)
    np.save(out / "refs.npy", refs)
    (out / "refs.json").write_text(json.dumps(names))
    dist = np.linalg.norm(desc[:, None, :] - refs[None, :, :], axis=2)
    nearest = dist.argmin(1)
    with open(out / "nearest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["face_id", "nearest_ref", "distance"])
        for f, n, d in zip(faces, nearest, dist.min(1), strict=True):
            w.writerow([f["face_id"], names[n], round(float(d), 3)])
    ref_tiles = [tile(Image.open(gallery / f"{n}.png"), n.upper(), font) for n in names]
    grid(ref_tiles, len(ref_tiles)).save(sheets / "refs.png")
    frames = sampled_frames(out)
    order = sorted(range(len(faces)), key=lambda i: (nearest[i], float(faces[i]["time_s"])))
    for s in range(0, len(order), a.per_sheet):
        tiles = list(ref_tiles) + [Image.new("RGB", ref_tiles[0].size, "gray")] * (COLS - len(ref_tiles))
        for i in order[s : s + a.per_sheet]:
            f = faces[i]
            box = [float(f[k]) for k in ("x1", "y1", "x2", "y2")]
            crop = context_crop(frames[int(f["frame_index"])], box)
            chip = Image.open(out / "crops" / f"{f['face_id']}.jpg").resize((TILE // 2, TILE // 2))
            crop = crop.resize((TILE, TILE))
            crop.paste(chip, (TILE - TILE // 2, 0))
            tiles.append(tile(crop, f"{f['face_id']} {float(f['time_s']):.1f}s ~{names[nearest[i]][:3]}", font))
        grid(tiles).save(sheets / f"faces_{s // a.per_sheet:02d}.png")
    by_time: dict[int, list[dict]] = {}
    for f in faces:
        by_time.setdefault(int(f["frame_index"]), []).append(f)
    times = sorted(by_time)
    for s in range(0, len(times), 4):
        imgs = []
        for t in times[s : s + 4]:
            img = Image.fromarray(frames[t]).resize((640, 360))
            d = ImageDraw.Draw(img)
            for f in by_time[t]:
                x1, y1, x2, y2 = (float(f[k]) / 2 for k in ("x1", "y1", "x2", "y2"))
                d.rectangle((x1, y1, x2, y2), outline="red", width=2)
                d.text((x1 + 2, max(0, y1 - 12)), f["face_id"], fill="yellow", font=font)
            d.text((4, 4), f"frame {t} t={float(by_time[t][0]['time_s']):.2f}s", fill="yellow", font=font)
            imgs.append(img)
        sheet = Image.new("RGB", (1284, 724), "gray")
        for k, img in enumerate(imgs):
            sheet.paste(img, ((k % 2) * 644, (k // 2) * 364))
        sheet.save(sheets / f"frames_{s // 4:02d}.png")
    print(f"sheets in {sheets}")


if __name__ == "__main__":
    main()
