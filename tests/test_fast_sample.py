"""``sampling = "fast"``: the nearest reference frame to each sample time, B-frames never decoded.

Checked against exact sampling on the same files: the same samples (numbers and targets), frames equal wherever
both modes took the same frame, the pts never more than a B-run from the target, fewer frames decoded, rotation
and corrupt data handled alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import media
from engine.config import ConfigError, Settings


@pytest.fixture(scope="module")
def bframes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s at 24 fps in x264's usual GOP: runs of up to 3 B-frames, the middle one a reference (b-pyramid)."""
    from conftest import ffmpeg

    path = tmp_path_factory.mktemp("fast") / "bframes.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=24:duration=4", "-c:v", "libx264", "-preset", "medium",
           "-bf", "3", "-pix_fmt", "yuv420p", str(path))  # fmt: skip
    return path


def _all(path: Path, mode: str, **kwargs: object) -> media.FrameBatch:
    batches = list(media.sample_frames(path, 0.5, mode=mode, **kwargs))
    return media.FrameBatch(
        frames=torch.cat([b.frames for b in batches]),
        index=torch.cat([b.index for b in batches]),
        target_s=torch.cat([b.target_s for b in batches]),
        pts_s=torch.cat([b.pts_s for b in batches]),
    )


def _decoded_frames(path: Path, skip: str) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = skip
        return sum(1 for _ in container.decode(stream))


def test_fast_sampling_takes_the_nearest_reference_frame(bframes: Path) -> None:
    exact, fast = _all(bframes, "exact"), _all(bframes, "fast", chunk=3)
    assert fast.index.tolist() == exact.index.tolist() == list(range(9))
    assert torch.equal(fast.target_s, exact.target_s)
    error = (fast.pts_s - fast.target_s).abs()
    assert float(error.max()) <= 2 / 24 + 1e-9  # at most two frames off: the middle of a run of three B-frames
    same = fast.pts_s == exact.pts_s
    assert bool(same.any()) and not bool(same.all())  # some samples land on a skipped B-frame: the mode changes them
    assert torch.equal(fast.frames[same], exact.frames[same])  # the same frame gives the same pixels
    assert _decoded_frames(bframes, "NONREF") < 0.7 * _decoded_frames(bframes, "DEFAULT")


def test_fast_sampling_honours_display_rotation(media_dir: Path) -> None:
    exact, fast = _all(media_dir / "rotated.mp4", "exact"), _all(media_dir / "rotated.mp4", "fast")
    assert fast.frames.shape[1:] == exact.frames.shape[1:] == (3, 640, 360)
    same = fast.pts_s == exact.pts_s
    assert bool(same.any()) and torch.equal(fast.frames[same], exact.frames[same])


def test_fast_sampling_keeps_what_decodes_around_corrupt_data(tmp_path: Path) -> None:
    from test_decode import corrupt_clip

    told: list[tuple[list[int], str]] = []
    fast = _all(corrupt_clip(tmp_path / "corrupt.mp4"), "fast", chunk=4, on_corrupt=lambda s, m: told.append((s, m)))
    ((lost, message),) = told
    kept = fast.index.tolist()
    assert lost and sorted(kept + lost) == list(range(11)) and max(kept) > max(lost)
    assert f"{len(lost)} of 11 sampled frames could not be decoded" in message
    assert ((fast.pts_s - fast.target_s).abs() <= 0.25).all()  # never a far-away frame in place of a lost one


def test_sampling_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_SAMPLING", "fast")
    assert Settings.load("x", resolve=False).sampling == "fast"
    assert Settings.load("x", sampling="exact", resolve=False).sampling == "exact"
    with pytest.raises(ConfigError, match="sampling must be one of exact, fast"):
        Settings.load("x", sampling="keyframes", resolve=False)
    with pytest.raises(ValueError, match="sampling mode must be exact or fast"):
        media.sample_frames("whatever.mp4", mode="nearest")


def test_exact_sampling_needs_no_pyav(media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare GPU image has torchcodec but no PyAV: exact sampling of a constant-rate video still works (time queries,
    the same frames); only the frame list for variable frame rates is then unavailable."""
    import sys

    from engine.media.decode import frame_pts

    before = _all(media_dir / "plain2s.mp4", "exact")
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    assert frame_pts(media_dir / "plain2s.mp4") is None
    after = _all(media_dir / "plain2s.mp4", "exact")
    assert torch.equal(before.pts_s, after.pts_s) and torch.equal(before.frames, after.frames)
