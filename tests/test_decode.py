"""Decoding real video: 0.5 s sampling by pts from the stream's real start, rotation, audio, bad files."""

from __future__ import annotations

import logging
import math
import subprocess
from pathlib import Path

import pytest
import torch

from engine import media
from engine.media import streams


def _check_sampling(path: Path, interval: float = 0.5) -> tuple[media.VideoInfo, int]:
    info = media.probe(path).video
    batches = list(media.sample_frames(path, interval, "cpu", chunk=16))
    pts = torch.cat([b.pts_s for b in batches])
    index = torch.cat([b.index for b in batches])
    n = math.floor((info.end_s - info.start_s) / interval) + 1
    assert len(pts) == n
    assert index.tolist() == list(range(n))
    expected = info.start_s + interval * torch.arange(n, dtype=torch.float64)
    half_frame = 0.5 / info.fps
    assert (pts - expected).abs().max().item() <= half_frame + 1e-6
    for b in batches:
        assert b.frames.dtype == torch.uint8 and b.frames.shape[1:] == (3, info.height, info.width)
    return info, n


def test_hamilton_samples_from_real_video_start(hamilton: Path) -> None:
    info, n = _check_sampling(hamilton)
    assert info.start_s == pytest.approx(0.852, abs=1e-3)  # the video stream starts late; audio at 0
    assert (info.width, info.height) == (640, 360)
    assert n == 19


def test_ryan_reynolds_sampling(ryan: Path) -> None:
    info, n = _check_sampling(ryan)
    assert info.start_s == 0.0 and n == 111


def test_other_intervals(hamilton: Path) -> None:
    _, n = _check_sampling(hamilton, interval=1.0)
    assert n == 10


def test_display_rotation_is_honoured(media_dir: Path) -> None:
    """Frames come out as a player shows them: compared with FFmpeg's own auto-rotated decode."""
    import subprocess

    import numpy as np

    info = media.probe(media_dir / "rotated.mp4").video
    assert info.rotation == 90 and (info.width, info.height) == (360, 640)
    rotated = next(media.sample_frames(media_dir / "rotated.mp4", 0.5)).frames[0]
    assert rotated.shape == (3, 640, 360)
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(media_dir / "rotated.mp4"),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    reference = torch.from_numpy(np.frombuffer(raw, np.uint8).copy().reshape(640, 360, 3)).permute(2, 0, 1)
    assert torch.equal(rotated, reference)
    plain = next(media.sample_frames(media_dir / "plain2s.mp4", 0.5)).frames[0]
    assert torch.equal(rotated, torch.rot90(plain, k=1, dims=(1, 2)))


def test_audio_is_mono_float_at_requested_rate(hamilton: Path) -> None:
    track = media.decode_audio(hamilton, 16_000)
    assert track.sample_rate == 16_000 and track.samples.dtype == torch.float32 and track.samples.ndim == 1
    assert track.duration_s == pytest.approx(10.0, abs=0.1)
    assert 0.01 < track.samples.abs().max().item() <= 1.0
    assert media.decode_audio(hamilton, 44_100).samples.numel() == pytest.approx(44_100 * 10.0, rel=0.01)


def test_no_audio_stream(ryan: Path) -> None:
    assert not media.probe(ryan).has_audio
    with pytest.raises(media.DecodeError) as info:
        media.decode_audio(ryan)
    assert info.value.kind == "no_audio"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("zero_byte", "empty_file"),
        ("truncated", "not_media"),
        ("text_file", "not_media"),
        ("audio_only", "no_video_stream"),
        ("unreadable", "unreadable_path"),
    ],
)
def test_bad_inputs_raise_clear_errors(bad_inputs: dict[str, Path], name: str, kind: str) -> None:
    with pytest.raises(media.DecodeError) as info:
        media.probe(bad_inputs[name])
    assert info.value.kind == kind
    assert "SingleStreamDecoder" not in str(info.value) and ".cpp" not in str(info.value)


def test_truncated_but_indexed_file_keeps_what_decodes(tmp_path: Path, hamilton: Path) -> None:
    from conftest import ffmpeg

    faststart = tmp_path / "fs.mp4"
    ffmpeg("-i", str(hamilton), "-c", "copy", "-movflags", "+faststart", str(faststart))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[:300_000])
    info = media.probe(cut).video
    assert info.truncated_s > media.TRUNCATION_TOLERANCE_S
    frames = sum(len(b) for b in media.sample_frames(cut))
    assert frames == math.floor(info.duration_s / 0.5) + 1


@pytest.mark.parametrize("seed", [131, 1713])
def test_random_bytes_that_fool_the_container_probe_are_not_a_readable_video(tmp_path: Path, seed: int) -> None:
    """Most random bytes are "Invalid data"; these seeds open as a container whose stream cannot be sought to pts 0
    (131) or has no picture size (1713): the same fact for the user, one wording."""
    import random

    path = tmp_path / "broken.mp4"
    path.write_bytes(random.Random(seed).randbytes(50_000))
    with pytest.raises(media.DecodeError) as info:
        media.probe(path)
    assert info.value.kind == "not_media" and "not a readable video" in str(info.value)


def _vfr_clip(path: Path) -> Path:
    """3 s at 4 fps then 24 fps from 2.0 s on (frames every 0.25 s, then every 1/24 s): a variable frame rate whose
    average frame lasts 0.094 s, so a step of half an average frame lands past the frame at exactly 2.000 s."""
    from conftest import ffmpeg

    keep = r"select='gte(t\,2)+not(mod(n\,6))'"  # every 6th frame before 2 s, every frame from 2 s on
    source = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=24:duration=3", "-vf", keep]
    encode = ["-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)]
    try:
        ffmpeg(*source, "-fps_mode", "vfr", *encode)
    except subprocess.CalledProcessError:  # FFmpeg before 5.1
        ffmpeg(*source, "-vsync", "vfr", *encode)
    return path


def test_variable_frame_rate_samples_the_frame_nearest_each_target(tmp_path: Path) -> None:
    clip = _vfr_clip(tmp_path / "vfr.mp4")
    every = torch.cat([b.pts_s for b in media.iter_frames(clip)])  # every frame's pts, decoded
    assert len(set((every[1:] - every[:-1]).round(decimals=4).tolist())) > 1  # the clip is VFR indeed
    batches = list(media.sample_frames(clip, 0.5, chunk=3))
    targets = torch.cat([b.target_s for b in batches])
    got = torch.cat([b.pts_s for b in batches])
    nearest = every[(every[None, :] - targets[:, None]).abs().argmin(dim=1)]
    assert got.tolist() == nearest.tolist()
    assert 2.0 in got.tolist() and 2.5 in got.tolist()  # not 2.042 and 2.542: the frames at 2.000 s and 2.500 s
    assert all(b.frames.shape[0] == len(b) for b in batches)


def test_constant_frame_rate_sampling_is_unchanged(hamilton: Path, ryan: Path) -> None:
    """A constant frame rate keeps the time query; the nearest-by-pts rule picks exactly its frames."""
    from engine.media.decode import frame_pts, nearest_frames

    for clip in (hamilton, ryan):
        pts = frame_pts(clip)
        batches = list(media.sample_frames(clip, 0.5))
        targets = torch.cat([b.target_s for b in batches])
        chosen = pts.seconds()[nearest_frames(pts, targets)]
        assert chosen.tolist() == torch.cat([b.pts_s for b in batches]).tolist(), clip.name


def corrupt_clip(path: Path) -> Path:
    """5 s at 24 fps (11 samples at 0.5 s), a key frame every 6 frames, with 64 KiB of (seeded) garbage written over
    the middle of the file: FFmpeg still decodes most frames, torchcodec refuses the packets the garbage hit."""
    import random

    from conftest import ffmpeg

    clean = path.with_name("clean-" + path.name)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=24:duration=5", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-g", "6", str(clean))  # fmt: skip
    data = bytearray(clean.read_bytes())
    clean.unlink()
    middle = len(data) // 2
    data[middle : middle + 65536] = random.Random(0).randbytes(65536)
    path.write_bytes(bytes(data))
    return path


def test_corrupt_data_in_the_middle_costs_only_the_samples_it_touches(tmp_path: Path) -> None:
    clip = corrupt_clip(tmp_path / "corrupt.mp4")
    told: list[tuple[list[int], str]] = []
    batches = list(media.sample_frames(clip, 0.5, chunk=4, on_corrupt=lambda s, m: told.append((s, m))))
    kept = torch.cat([b.index for b in batches]).tolist()
    assert len(told) == 1
    lost, message = told[0]
    assert lost and kept and sorted(kept + lost) == list(range(11))  # every sample kept or reported, once
    assert max(kept) > max(lost)  # the samples after the garbage are kept too
    assert f"{len(lost)} of 11 sampled frames could not be decoded" in message and "corrupt.mp4" in message
    for b in batches:
        assert b.frames.shape[0] == len(b.index) == len(b.pts_s) == len(b.target_s)
        assert ((b.pts_s - b.target_s).abs() <= 1 / 24 + 1e-6).all()  # the last sample (5.0 s) is the last frame


def test_a_video_of_which_nothing_decodes_still_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.media import decode

    def broken(self: object, samples: list[int]) -> None:
        raise RuntimeError("Could not push packet to decoder: Invalid data found when processing input")

    monkeypatch.setattr(decode._Sampler, "get", broken)
    with pytest.raises(media.DecodeError, match=r"decoding frames 0\.\.10 failed: Could not push packet"):
        list(media.sample_frames(corrupt_clip(tmp_path / "c.mp4"), 0.5))


def test_jpeg_encoding_roundtrip(hamilton: Path) -> None:
    from torchvision.io import decode_jpeg

    frames = next(media.sample_frames(hamilton, 0.5, chunk=2)).frames
    jpegs = media.encode_jpegs(frames)
    assert len(jpegs) == 2 and all(j[:2] == b"\xff\xd8" for j in jpegs)
    back = decode_jpeg(torch.frombuffer(bytearray(jpegs[0]), dtype=torch.uint8))
    assert back.shape == frames[0].shape
    assert (back.float() - frames[0].float()).abs().mean() < 4


def test_gpu_decoding_falls_back_to_the_cpu_once(hamilton: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A torchcodec without CUDA support (the PyPI wheel) decodes on the CPU when asked for a GPU, saying so once."""
    import torchcodec

    if "cpu" not in getattr(torchcodec, "__version__", "cpu"):
        pytest.skip("this torchcodec build may decode on CUDA")
    streams._cpu_fallback_said = False
    with caplog.at_level(logging.WARNING, logger="engine.media.streams"):
        first = streams._open_video(hamilton, "cuda")
        second = streams._open_video(hamilton, "cuda")
    assert first.get_frame_at(0).data.device.type == "cpu" and len(second) == len(first)
    said = [r.message for r in caplog.records if "decoding on the CPU" in r.message]
    assert len(said) == 1 and "NVDEC" in said[0]


def test_codec_facts_for_doctor_and_bench() -> None:
    """``doctor`` and ``bench`` ask ``engine.media`` about the codecs instead of importing torchcodec themselves."""
    import torchcodec

    assert media.codecs_load() is None
    assert media.torchcodec_version() == torchcodec.__version__
