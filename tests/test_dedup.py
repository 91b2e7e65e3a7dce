"""engine.dedup: batched PHash and duplicate removal, checked against imagededup itself on real face crops.

Crops come from the engine's own detector + aligner on the shared media: every face of short_hamilton_clip.mp4 and of
ryan-reynolds.mp4 (0.5 s sampling: consecutive samples of one face are real near-duplicates) and of the shared photos.
The photos themselves, whole and resized to odd, tall and wide sizes, exercise the Lanczos resize beyond 150×150.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine import media
from engine.dedup import (
    DEFAULT_MAX_DISTANCE,
    duplicates_to_remove,
    duplicates_to_remove_reference,
    hamming,
    hash_to_hex,
    hashes_to_hex,
    hex_to_hash,
    hex_to_hashes,
    pairwise_hamming,
    phash,
    phash_reference,
    popcount64,
)
from engine.faces.align import align_chips
from engine.faces.detect import FaceDetector
from engine.phash import resize_like_pil

PHOTO_LONG_SIDE = 480  # detection scale for the photos (chips are still cut from the full-resolution image)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(device="cpu")


def video_chips(detector: FaceDetector, path: Path) -> torch.Tensor:
    chips = []
    for batch in media.sample_frames(path, 0.5):
        det = detector.detect(batch.frames)
        chips.append(align_chips(batch.frames, det).to(torch.uint8))
    return torch.cat(chips)


@pytest.fixture(scope="module")
def hamilton_chips(detector: FaceDetector, hamilton: Path) -> torch.Tensor:
    return video_chips(detector, hamilton)


@pytest.fixture(scope="module")
def ryan_chips(detector: FaceDetector, ryan: Path) -> torch.Tensor:
    return video_chips(detector, ryan)


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> dict[str, torch.Tensor]:
    return {p.name: media.load_image(p) for p in sorted((shared_data / "faces").iterdir())}


@pytest.fixture(scope="module")
def photo_chips(detector: FaceDetector, photos: dict[str, torch.Tensor]) -> torch.Tensor:
    chips = []
    for img in photos.values():
        det = detector.detect(img[None], min(1.0, PHOTO_LONG_SIDE / max(img.shape[-2:])))
        chips.append(align_chips(img[None], det).to(torch.uint8))
    return torch.cat(chips)


@pytest.fixture(scope="module")
def all_chips(hamilton_chips: torch.Tensor, ryan_chips: torch.Tensor, photo_chips: torch.Tensor) -> torch.Tensor:
    return torch.cat([hamilton_chips, ryan_chips, photo_chips])


def resized_photos(photos: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Each photo at a few sizes: shrunk, enlarged, tall, wide, odd; around 32 px where Pillow's pass order flips."""
    sizes = [(150, 150), (97, 301), (301, 97), (600, 120), (45, 40), (40, 45), (33, 31), (20, 28), (1000, 700)]
    out = []
    for i, img in enumerate(photos.values()):
        for h, w in sizes[i % 3 :: 3]:
            resized = F.interpolate(img[None].float(), size=(h, w), mode="bilinear", antialias=True)
            out.append(resized[0].round().clamp(0, 255).to(torch.uint8))
    return out


def reference_hashes(images: list[torch.Tensor] | torch.Tensor) -> list[str]:
    return phash_reference([img.permute(1, 2, 0).numpy() for img in images])


# ----------------------------------------------------------------------------------------------------- PHash parity


def test_chip_hashes_equal_imagededup(
    hamilton_chips: torch.Tensor, ryan_chips: torch.Tensor, photo_chips: torch.Tensor, all_chips: torch.Tensor
) -> None:
    assert len(hamilton_chips) >= 30 and len(ryan_chips) >= 80 and len(photo_chips) >= 10
    ours = hashes_to_hex(phash(all_chips))
    ref = reference_hashes(all_chips)
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(ours, ref, strict=True)) if a != b]
    assert not differ, f"{len(differ)} of {len(ref)} chip hashes differ: {differ[:5]}"
    # Chunking and per-image calls give the same bits.
    assert torch.equal(phash(all_chips[:30], chunk=7), phash(all_chips[:30]))
    assert hashes_to_hex(phash(all_chips[:1])) == ref[:1]


def test_whole_and_resized_photo_hashes_equal_imagededup(photos: dict[str, torch.Tensor]) -> None:
    images = list(photos.values()) + resized_photos(photos)
    shapes = {tuple(img.shape[-2:]) for img in images}
    assert len(shapes) >= 15 and any(h > 2 * w for h, w in shapes) and any(max(h, w) < 32 for h, w in shapes)
    ours = hashes_to_hex(phash(images))  # mixed sizes: grouped by size inside, results in input order
    assert ours == reference_hashes(images)


def test_imagededup_file_loader_path(shared_data: Path) -> None:
    """Through imagededup's own loader (PIL decode, RGBA → RGB): same hash when we hash the same decoded pixels."""
    names = ("alex-lacamoire.png", "lin-manuel-miranda.png", "obama_small.jpg", "hugh-jackman-reference.jpg")
    paths = [shared_data / "faces" / name for name in names]  # two RGBA PNGs, two JPEGs
    arrays = [np.asarray(Image.open(p).convert("RGBA").convert("RGB")) for p in paths]
    ours = hashes_to_hex(phash([torch.from_numpy(a.copy()).permute(2, 0, 1) for a in arrays]))
    assert ours == phash_reference(paths)


def test_resize_equals_pillow_per_channel(photo_chips: torch.Tensor, photos: dict[str, torch.Tensor]) -> None:
    """The 32×32 RGB image before the luma step is Pillow's LANCZOS resize, every byte."""
    images = [*photo_chips[:2], *resized_photos(photos)[:9], next(iter(photos.values()))]
    for img in images:
        expected = np.asarray(Image.fromarray(img.permute(1, 2, 0).numpy()).resize((32, 32), Image.LANCZOS))
        got = resize_like_pil(img[None])[0].permute(1, 2, 0).to(torch.uint8).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"shape {tuple(img.shape)}")


def test_grayscale_input_equals_imagededup_2d_arrays(photo_chips: torch.Tensor) -> None:
    gray = photo_chips[:, :1]
    assert hashes_to_hex(phash(gray)) == phash_reference([g[0].numpy() for g in gray])


def test_flat_and_mirrored_crops_equal_imagededup(hamilton_chips: torch.Tensor) -> None:
    """Mathematically zero DCT coefficients (flat or mirror-symmetric images) must be exact zeros, as scipy's are,
    or the >= median comparison flips on rounding noise."""
    chips = hamilton_chips[:8]
    half = chips[..., :75]
    images = [
        torch.zeros(3, 150, 150, dtype=torch.uint8),
        torch.full((3, 150, 150), 77, dtype=torch.uint8),
        torch.full((3, 1, 1), 200, dtype=torch.uint8),
        *torch.cat([half, half.flip(-1)], -1),  # left-right mirrored faces
        *torch.cat([chips[..., :75, :], chips[..., :75, :].flip(-2)], -2),  # top-bottom mirrored
        *chips[..., :1, :].expand(-1, -1, 150, -1),  # every row the same
    ]
    assert hashes_to_hex(phash(images)) == reference_hashes(images)


def test_hex_conversions_and_distances() -> None:
    values = [0, 1, -1, -(1 << 63), (1 << 63) - 1, 0x0123456789ABCDEF, -0x0123456789ABCDEF]
    for v in values:
        text = hash_to_hex(v)
        assert len(text) == 16 and text == text.lower() and hex_to_hash(text) == v
    assert hash_to_hex(-1) == "f" * 16 and hash_to_hex(-(1 << 63)) == "8" + "0" * 15
    t = hex_to_hashes([hash_to_hex(v) for v in values])
    assert t.tolist() == values and hashes_to_hex(t) == [hash_to_hex(v) for v in values]
    with pytest.raises(ValueError):
        hex_to_hash("1" + "0" * 16)

    rng = random.Random(0)
    a = values + [rng.getrandbits(64) - (1 << 63) for _ in range(200)]
    ta = torch.tensor(a, dtype=torch.int64)
    assert popcount64(ta).tolist() == [bin(x & ((1 << 64) - 1)).count("1") for x in a]
    d = pairwise_hamming(ta)
    for i in range(0, len(a), 17):
        for j in range(0, len(a), 13):
            assert int(d[i, j]) == bin((a[i] ^ a[j]) & ((1 << 64) - 1)).count("1")
    assert torch.equal(hamming(ta[:, None], ta[None]).to(torch.uint8), d)


# ----------------------------------------------------------------------------------------------------- dedup parity


def assert_same_as_imagededup(hashes: torch.Tensor, max_distance: int = DEFAULT_MAX_DISTANCE, **kwargs) -> int:
    """Our mask vs imagededup's find_duplicates_to_remove on the same hashes in index order; returns #dropped."""
    ours = duplicates_to_remove(hashes, max_distance, **kwargs).tolist()
    assert ours == duplicates_to_remove_reference(hashes_to_hex(hashes), max_distance)
    return sum(ours)


def test_video_duplicates_equal_imagededup(ryan_chips: torch.Tensor, hamilton_chips: torch.Tensor) -> None:
    for chips in (ryan_chips, hamilton_chips):
        hashes = phash(chips)
        dropped = assert_same_as_imagededup(hashes)
        # Consecutive 0.5 s samples of the same face: real near-duplicates, but far from all.
        assert 0 < dropped < len(chips)
        for threshold in (0, 4, 20):
            assert_same_as_imagededup(hashes, threshold)
        # Several blocks: crops kept in earlier blocks must still remove later ones.
        assert_same_as_imagededup(hashes, block=5)


def test_traversal_order_matches_encoding_map_order(all_chips: torch.Tensor) -> None:
    """imagededup keeps whichever near-duplicate comes first in its map: our ``order`` is that key order."""
    hashes = phash(all_chips)
    order = list(range(len(hashes)))
    random.Random(1).shuffle(order)
    ours = duplicates_to_remove(hashes, order=order, block=16)
    in_order = duplicates_to_remove_reference(hashes_to_hex(hashes[order]))
    expected = torch.zeros(len(hashes), dtype=torch.bool)
    expected[torch.tensor(order)] = torch.tensor(in_order)
    assert torch.equal(ours, expected)
    assert not torch.equal(ours, duplicates_to_remove(hashes))  # the order does matter on these crops
    with pytest.raises(ValueError):
        duplicates_to_remove(hashes, order=[0] * len(hashes))


def test_groups_deduplicate_independently(
    hamilton_chips: torch.Tensor, ryan_chips: torch.Tensor, photo_chips: torch.Tensor
) -> None:
    parts = [hamilton_chips, ryan_chips, photo_chips]
    hashes = phash(torch.cat(parts))
    labels = torch.cat([torch.full((len(p),), g, dtype=torch.int64) for g, p in zip((7, 3, 5), parts, strict=True)])
    # Interleave the groups in traversal order, as crops arrive from several videos at once.
    order = torch.randperm(len(hashes), generator=torch.Generator().manual_seed(2))
    for block in (4096, 9):
        ours = duplicates_to_remove(hashes, order=order, groups=labels, block=block)
        for g in (7, 3, 5):
            members = order[labels[order] == g]  # this group's crops in traversal order
            expected = duplicates_to_remove_reference(hashes_to_hex(hashes[members]))
            assert ours[members].tolist() == expected


def test_many_hashes_in_blocks_equal_imagededup() -> None:
    """1000 hashes in clusters (a few bits flipped around 40 seeds, chains included), 7 groups, small blocks."""
    gen = torch.Generator().manual_seed(3)
    seeds = torch.randint(-(1 << 62), 1 << 62, (40,), generator=gen) * 2 + torch.randint(0, 2, (40,), generator=gen)
    pick = torch.randint(0, 40, (1000,), generator=gen)
    flips = torch.zeros(1000, dtype=torch.int64)
    for _ in range(6):
        bit = torch.randint(0, 64, (1000,), generator=gen)
        on = torch.rand(1000, generator=gen) < 0.7
        flips ^= torch.where(on, torch.ones_like(bit) << bit, torch.zeros_like(bit))
    hashes = seeds[pick] ^ flips
    dropped = assert_same_as_imagededup(hashes, block=128)
    assert 300 < dropped < 990
    labels = pick % 7
    ours = duplicates_to_remove(hashes, groups=labels, block=100)
    for g in range(7):
        members = (labels == g).nonzero().flatten()
        assert ours[members].tolist() == duplicates_to_remove_reference(hashes_to_hex(hashes[members]))


def test_arguments_are_checked_like_imagededup() -> None:
    hashes = torch.zeros(3, dtype=torch.int64)
    assert duplicates_to_remove(hashes).tolist() == [False, True, True]  # identical hashes: the first one stays
    assert duplicates_to_remove(torch.zeros(0, dtype=torch.int64)).tolist() == []
    with pytest.raises(TypeError):
        duplicates_to_remove(hashes, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        duplicates_to_remove(hashes, 65)
    with pytest.raises(ValueError):
        duplicates_to_remove(hashes.to(torch.int32))
    with pytest.raises(TypeError):
        phash(torch.zeros(1, 3, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu(all_chips: torch.Tensor, photos: dict[str, torch.Tensor]) -> None:
    cpu = phash(all_chips)
    gpu = phash(all_chips.cuda())
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    images = resized_photos(photos)
    assert torch.equal(phash([img.cuda() for img in images]).cpu(), phash(images))
    labels = torch.arange(len(cpu)) % 3
    for kwargs in ({}, {"groups": labels}, {"block": 7}):
        assert torch.equal(duplicates_to_remove(cpu.cuda(), **kwargs).cpu(), duplicates_to_remove(cpu, **kwargs))
