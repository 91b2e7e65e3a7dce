"""The picture inside black bars (engine.faces.picture) and the faces stage detecting in it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.faces.detect import Detections
from engine.faces.picture import BAR_LIMIT, Box, Picture, find_bars


def _frames(h: int = 1280, w: int = 720, n: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(40, 255, (n, 3, h, w), dtype=torch.uint8, generator=g)


def _boxed(picture: torch.Tensor, top: int, bottom: int, left: int = 0, right: int = 0) -> torch.Tensor:
    n, c, h, w = picture.shape
    out = torch.zeros((n, c, h + top + bottom, w + left + right), dtype=torch.uint8)
    out[:, :, top : top + h, left : left + w] = picture
    return out


def test_letterbox_and_pillarbox() -> None:
    assert find_bars(_boxed(_frames(405, 720), 437, 438)) == Box(437, 843, 0, 720)  # the smaller bar off both
    assert find_bars(_boxed(_frames(720, 405), 0, 0, 437, 438)) == Box(0, 720, 437, 843)
    # Bar pixels up to the limit are still bar (compression noise); one level brighter is picture.
    noisy = _boxed(_frames(405, 720), 437, 438)
    noisy[:, :, :10] = BAR_LIMIT
    assert find_bars(noisy) == Box(437, 843, 0, 720)
    noisy[0, 1, 5, 5] = BAR_LIMIT + 1
    assert find_bars(noisy) is None  # bars of 5 rows: under MIN_BARS, not worth a crop


def test_what_is_not_cut() -> None:
    """A dark band at one side only is picture (a night sky); an off-centre picture keeps its lit caption (the smaller
    bar is cut off both sides); thin bars and black frames give no crop."""
    sky = _boxed(_frames(900, 720), 380, 0)
    assert find_bars(sky) is None
    caption = _boxed(_frames(405, 720), 500, 375)
    caption[:, :, 100:140, 200:500] = 255  # text in the upper bar
    assert find_bars(caption) == Box(100, 1180, 0, 720)
    assert find_bars(_boxed(_frames(1200, 720), 40, 40)) is None  # 6 % of the frame
    assert find_bars(torch.zeros((2, 3, 1280, 720), dtype=torch.uint8)) is None


def test_picture_per_video() -> None:
    """Decided from the first chunk with anything lit; a chunk whose bars light up ends the crop for good."""
    picture = Picture()
    assert picture.update(torch.zeros((2, 3, 1280, 720), dtype=torch.uint8)) is None  # a fade from black
    boxed = _boxed(_frames(405, 720), 437, 438)
    assert picture.update(boxed) == Box(437, 843, 0, 720)
    assert picture.update(boxed[:1]) == Box(437, 843, 0, 720)
    titled = boxed.clone()
    titled[:, :, 1000:1040, 100:600] = 200
    assert picture.update(titled) is None
    assert picture.update(boxed) is None


def test_detections_shifted() -> None:
    det = Detections(
        torch.tensor([0]), torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0.9]),
        torch.arange(10.0)[None], torch.tensor([0]),
    )  # fmt: skip
    moved = det.shifted(10, 100)
    assert moved.boxes.tolist() == [[11.0, 102.0, 13.0, 104.0]]
    assert moved.landmarks.tolist() == [[10.0, 101.0, 12.0, 103.0, 14.0, 105.0, 16.0, 107.0, 18.0, 109.0]]
    assert det.shifted(0, 0) is det


def test_letterboxed_clip_is_searched_as_the_clip_itself(hamilton: Path) -> None:
    """The Hamilton clip (640x360) letterboxed into 720x1280, as a phone repost: the faces stage looks in the picture,
    which the detector gets at 640x360, the clip's own size, and finds the faces the clip itself gives (boxes in
    the frame's pixels). Searching the whole frame (``crop_bars = false``) gives the picture 360x202: it finds
    other faces (the blurred audience behind the pianist, at that size, looks like faces) and misses none of the
    clip's."""
    from torchvision.ops import box_iou

    from engine import media
    from engine.config import FaceSettings
    from engine.faces.batching import FaceModels, analyze_batches

    clip = torch.cat([b.frames for b in media.iter_frames(hamilton, 30, 150)])[::15]  # 8 frames, 2 to 4 faces each
    up = torch.nn.functional.interpolate(clip.float(), size=(405, 720), mode="bilinear", align_corners=False)
    frames = _boxed(up.round().clamp(0, 255).to(torch.uint8), 437, 438)
    batch = media.FrameBatch(
        frames=frames, index=torch.arange(len(frames)), target_s=torch.zeros(len(frames), dtype=torch.float64),
        pts_s=torch.zeros(len(frames), dtype=torch.float64),
    )  # fmt: skip
    found = {}
    for crop in (True, False):
        models = FaceModels.load("cpu", FaceSettings(crop_bars=crop))
        found[crop] = analyze_batches(iter([batch]), models, crops=False).faces
    source = models.detector.detect(clip, 1.0, 0.5)  # the clip at its own size
    back = (found[True].boxes - torch.tensor([0.0, 437.0, 0.0, 437.0])) * (640 / 720)  # frame → clip pixels
    assert len(found[True]) in (len(source), len(source) + 1), (len(found[True]), len(source))
    assert bool((box_iou(source.boxes, back).amax(dim=1) > 0.7).all())
    assert bool((found[True].boxes[:, 1] >= 430).all() and (found[True].boxes[:, 3] <= 850).all())
    whole = (found[False].boxes - torch.tensor([0.0, 437.0, 0.0, 437.0])) * (640 / 720)
    assert len(found[False]) > len(found[True]) and bool((box_iou(source.boxes, whole).amax(dim=1) > 0.5).all())


@pytest.mark.parametrize("bad", [1, "yes"])
def test_crop_bars_setting(bad: object) -> None:
    from engine.config import ConfigError
    from engine.config.sections import parse_faces

    assert parse_faces({"crop_bars": False}, "c").crop_bars is False
    with pytest.raises(ConfigError, match="crop_bars"):
        parse_faces({"crop_bars": bad}, "c")
