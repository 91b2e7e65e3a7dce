"""Decoding real video: 0.5 s sampling by pts from the stream's real start, rotation, audio, bad files."""

from __future__ import annotations

import logging
import math
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
