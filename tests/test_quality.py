"""engine.faces.quality: each cue moves the right way, the combination stays in [0, 1], batching changes nothing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from engine.faces.align import CHIP_TEMPLATE
from engine.faces.quality import QUALITY_FLOOR, FaceQuality, face_quality, pose

TEMPLATE = torch.tensor(CHIP_TEMPLATE)  # [5, 2], a frontal face in chip pixels (eye distance ~54.5 px)


def landmarks(scale: float = 1.0, yaw_shift: float = 0.0, origin: tuple[float, float] = (300.0, 200.0)) -> torch.Tensor:
    """A ``[1, 10]`` landmark set: the chip template scaled, placed at ``origin``, its nose moved sideways by
    ``yaw_shift`` eye distances (what a head turn does to the nose tip) and the eyes drawn together as it would."""
    pts = TEMPLATE.clone()
    mid_x = (pts[0, 0] + pts[1, 0]) / 2
    iod = pts[1, 0] - pts[0, 0]
    if yaw_shift:
        pts[:2, 0] = mid_x + (pts[:2, 0] - mid_x) * 0.4  # eyes foreshortened
        pts[2, 0] = mid_x + yaw_shift * iod * 0.4
    return (pts * scale + torch.tensor(origin)).reshape(1, 10)


def textured_chips(n: int, seed: int = 0) -> torch.Tensor:
    """``[n, 3, 150, 150]`` whole-number chips: broad shading plus fine texture, a sharp face's stand-in (its
    sharpness is ~0.15, like the benchmark clip's sharp chips), 0..255."""
    g = torch.Generator().manual_seed(seed)
    shading = F.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=150, mode="bicubic", align_corners=False)
    fine = F.avg_pool2d(torch.rand(n, 1, 150, 150, generator=g), 3, 1, 1, count_include_pad=False)
    return (60 + 120 * shading + 25 * fine).expand(n, 3, 150, 150).round().clamp(0, 255).contiguous()


def blur(chips: torch.Tensor, k: int = 7) -> torch.Tensor:
    """A ``k``-px box blur (out of focus, or blown up from a face ``k`` times smaller), kept in whole numbers."""
    return F.avg_pool2d(chips, k, 1, k // 2, count_include_pad=False).round()


def quality(scores: torch.Tensor, lms: torch.Tensor, chips: torch.Tensor) -> FaceQuality:
    return face_quality(scores, lms, chips)


def test_sharp_chip_beats_blurred() -> None:
    chips = textured_chips(1)
    lm, s = landmarks(1.2), torch.tensor([0.99])
    sharp, soft = quality(s, lm, chips), quality(s, lm, blur(chips))
    assert float(sharp.sharpness) > 2 * float(soft.sharpness)
    assert float(sharp.quality) > 0.9 and float(soft.quality) < 0.3


def test_large_face_beats_small() -> None:
    chips, s = textured_chips(1), torch.tensor([0.99])
    big, small = quality(s, landmarks(1.2), chips), quality(s, landmarks(0.12), chips)
    assert float(big.interocular_px) == pytest.approx(54.49 * 1.2, abs=0.1)
    assert float(small.interocular_px) == pytest.approx(54.49 * 0.12, abs=0.1)
    assert float(big.quality) > float(small.quality)
    assert float(small.quality) < QUALITY_FLOOR


def test_frontal_beats_turned() -> None:
    chips, s = textured_chips(1), torch.tensor([0.99])
    frontal, turned = quality(s, landmarks(1.2), chips), quality(s, landmarks(1.2, yaw_shift=1.5), chips)
    assert abs(float(frontal.yaw)) < 5 and abs(float(frontal.pitch)) < 5 and abs(float(frontal.roll)) < 1
    assert float(turned.yaw) > 60
    assert float(frontal.quality) > 0.9 > float(turned.quality)


def test_pose_ignores_roll_and_mirrors_yaw() -> None:
    lm = landmarks(1.0, yaw_shift=0.5)
    iod, yaw, pitch, roll = pose(lm)
    a = torch.tensor(0.6)
    rot = torch.stack([torch.stack([a.cos(), -a.sin()]), torch.stack([a.sin(), a.cos()])])
    iod2, yaw2, pitch2, roll2 = pose((lm.reshape(5, 2) @ rot.T).reshape(1, 10))
    torch.testing.assert_close((iod2, yaw2, pitch2), (iod, yaw, pitch), atol=1e-3, rtol=1e-4)
    assert float(roll2 - roll) == pytest.approx(float(torch.rad2deg(a)), abs=1e-3)
    mirrored = lm.reshape(5, 2).clone()
    mirrored[:, 0] *= -1
    mirrored = mirrored[[1, 0, 2, 4, 3]]  # image-left eye first again
    assert float(pose(mirrored.reshape(1, 10))[1]) == pytest.approx(-float(yaw), abs=1e-3)


def test_cut_by_frame_edge_is_low() -> None:
    chips, s, lm = textured_chips(1), torch.tensor([0.99]), landmarks(1.2)
    cut = chips.clone()
    cut[..., :, :50] = 0  # a third of the chip outside the frame
    whole, edge = quality(s, lm, chips), quality(s, lm, cut)
    assert float(edge.clipped) == pytest.approx(1 / 3, abs=0.01)
    assert float(edge.quality) < QUALITY_FLOOR < float(whole.quality)


def test_quality_in_unit_range_and_batched_equals_single() -> None:
    g = torch.Generator().manual_seed(1)
    n = 12
    lms = torch.cat(
        [landmarks(0.2 + 1.5 * float(torch.rand(1, generator=g)), float(torch.randn(1, generator=g))) for _ in range(n)]
    )
    lms = lms + torch.randn(n, 10, generator=g) * 3
    chips = textured_chips(n, seed=2)
    chips[::3] = blur(chips[::3])
    chips[1::4] *= 0.3
    scores = 0.5 + 0.5 * torch.rand(n, generator=g)
    mag = 12 * torch.rand(n, generator=g)
    batched = face_quality(scores, lms, chips, mag)
    assert len(batched) == n
    assert bool(((batched.quality >= 0) & (batched.quality <= 1)).all())
    for i in range(n):
        one = face_quality(scores[i : i + 1], lms[i : i + 1], chips[i : i + 1], mag[i : i + 1])
        for f in dataclasses.fields(FaceQuality):
            torch.testing.assert_close(getattr(one, f.name), getattr(batched, f.name)[i : i + 1], rtol=1e-6, atol=1e-6)
    picked = batched.select(torch.tensor([0, 5]))
    assert picked.quality.shape == (2,)


def test_empty_input() -> None:
    q = face_quality(torch.zeros(0), torch.zeros(0, 10), torch.zeros(0, 3, 150, 150))
    assert len(q) == 0
    for f in dataclasses.fields(FaceQuality):
        assert getattr(q, f.name).shape == (0,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_same_on_cuda() -> None:
    g = torch.Generator().manual_seed(3)
    n = 8
    lms = torch.cat(
        [landmarks(0.3 + float(torch.rand(1, generator=g)), float(torch.randn(1, generator=g))) for _ in range(n)]
    )
    chips, scores = textured_chips(n, seed=4), 0.5 + 0.5 * torch.rand(n, generator=g)
    mag = 12 * torch.rand(n, generator=g)
    cpu = face_quality(scores, lms, chips, mag)
    gpu = face_quality(scores.cuda(), lms.cuda(), chips.cuda(), mag.cuda())
    assert gpu.quality.device.type == "cuda"
    for f in dataclasses.fields(FaceQuality):
        torch.testing.assert_close(getattr(gpu, f.name).cpu(), getattr(cpu, f.name), rtol=1e-4, atol=1e-4)
