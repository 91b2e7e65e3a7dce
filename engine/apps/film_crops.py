"""The seed's face crops (``facerec``'s ``<movie_id>-data/images/``): the picture a labelling tool shows per face.

A face's crop is its box padded by 10 % of the box's short side on every side, clipped to the frame and rounded to
whole pixels, cut from the decoded frame, shrunk (never enlarged) to fit 160 x 160 with its aspect kept, turned
into one grey channel when it has no colour (red equals green everywhere: the seed's test for a black-and-white
film), and stored as a JPEG of quality 65. Its name carries the *unpadded* box, clipped and rounded the same way
(:func:`int_boxes`): that box is the trajectory's ``bbs`` entry for the frame, and the name is how the labeller
finds the crop of a box (``<movie_id>:<frame>:<x1>_<y1>_<x2>_<y2>.jpeg``).

Crops are cut in the shard, where the film is decoded: the shard decodes its own frames with faces once more
(``engine.media.iter_frames``) and writes one file per owned face under its folder
(``engine.apps.film_shards.CROPS_DIR``); the merge copies those of the written trajectories. A crop depends only on
the decoded frame and the face's box, both the same whatever the sharding, and it is resized and JPEG-encoded on
the CPU (libjpeg), so its bytes are the same too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from engine.apps.film_shards import crop_name
from engine.media import encode_jpegs, iter_frames
from engine.types import Faces

#: The seed's crop: longest side at most this many pixels, padding around the box (share of its short side), JPEG
#: quality.
CROP_SIDE = 160
CROP_PADDING = 0.10
CROP_QUALITY = 65


def int_boxes(boxes: torch.Tensor, width: int, height: int, padding: float = 0.0) -> torch.Tensor:
    """``[F, 4]`` float boxes as the seed stores them: optionally padded by ``padding`` times the box's short side,
    clipped to the ``width`` x ``height`` frame, rounded (half to even) to int64 pixels."""
    b = boxes.detach().cpu().double().reshape(-1, 4)
    pad = padding * torch.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    b = b + torch.stack([-pad, -pad, pad, pad], 1)
    limit = torch.tensor([width, height, width, height], dtype=torch.float64)
    return torch.minimum(b.clamp(min=0), limit).round().long()


def crop_face(frame: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
    """The seed's crop of a uint8 ``[3, H, W]`` frame at an int ``padded`` box: uint8 ``[C, h, w]`` on the CPU,
    ``C`` = 1 where the crop has no colour."""
    height, width = frame.shape[-2:]
    x1, y1, x2, y2 = padded.tolist()
    x1, y1 = min(x1, width - 1), min(y1, height - 1)
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    crop = frame[:, y1:y2, x1:x2].cpu()
    h, w = crop.shape[-2:]
    if max(h, w) > CROP_SIDE:
        scale = CROP_SIDE / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        resized = torch.nn.functional.interpolate(
            crop[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False
        )
        crop = resized[0].round().clamp(0, 255).to(torch.uint8)
    if bool((crop[0] == crop[1]).all()):
        r, g, b = crop.int()
        crop = ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16).to(torch.uint8)[None]
    return crop


def cut_crops(film: str | Path, faces: Faces, folder: Path, width: int, height: int, device: str = "cpu") -> int:
    """Decode the frames of ``faces`` (frame numbers) once more and write each face's crop as
    ``folder/<frame>-<rank>.jpeg``; returns how many. ``width`` x ``height``: the decoded frame size."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if not len(faces):
        return 0
    frame_of = faces.frame_index.cpu()
    padded = int_boxes(faces.boxes, width, height, CROP_PADDING)
    written = 0
    for batch in iter_frames(film, int(frame_of.min()), int(frame_of.max()) + 1, device):
        first = int(batch.index[0])
        mine = ((frame_of >= first) & (frame_of < first + len(batch))).nonzero().flatten().tolist()
        for j in mine:
            frame = int(frame_of[j])
            crop = crop_face(batch.frames[frame - first], padded[j])
            data = encode_jpegs(crop[None], quality=CROP_QUALITY)[0]
            (folder / crop_name(frame, int(faces.face_index[j]))).write_bytes(data)
            written += 1
    return written
