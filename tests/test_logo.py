"""Platform logos: the [logo] table, finding the Hamilton clip's "WH.GOV" logo by itself, and covering it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from engine import logo, media
from engine.config import ConfigError, LogoSettings, parse_challenge
from engine.config.sections import parse_logo
from engine.logo import LogoBox

# Where the "WH.GOV" logo of the shared Hamilton clip is (640 x 360): the static blue square, measured on the
# temporal mean of its sampled frames (bluish pixels: columns 576..607, rows 18..49).
HAMILTON_LOGO = LogoBox(576, 18, 32, 32)
# The same square in the clip rotated by 90 degrees (display matrix): torchcodec shows it turned
# counter-clockwise, i.e. rotated[i, j] = plain[j, 639 - i].
ROTATED_LOGO = LogoBox(18, 640 - 576 - 32, 32, 32)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def audio_md5(path: Path) -> str:
    """MD5 of the first audio stream's packets: equal only when the audio was copied bit for bit."""
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-c", "copy", "-f", "md5", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip()


def overlap(a: LogoBox, b: LogoBox) -> tuple[float, float]:
    """(intersection over union, fraction of ``b`` inside ``a``)."""
    iw = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    ih = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = iw * ih
    return inter / (a.area + b.area - inter), inter / b.area


def edge_energy(frames: torch.Tensor, box: LogoBox, inset: int = 2) -> float:
    """Mean squared Sobel contrast of luma inside ``box`` (shrunk by ``inset``), over all frames."""
    gray = frames.float().mean(1)
    contrast = torch.stack([logo._edge_contrast(g) for g in gray])
    region = contrast[:, box.y + inset : box.y + box.h - inset, box.x + inset : box.x + box.w - inset]
    return region.pow(2).mean().item()


def centre(frames: torch.Tensor) -> torch.Tensor:
    h, w = frames.shape[2:]
    return frames[:, :, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].float()


# ---------------------------------------------------------------------------------------------- [logo] table


def test_settings_from_challenge_toml() -> None:
    base = 'name = "c"\nbaseline = "b.mp4"\n'
    assert parse_challenge(base).logo is None
    pixels = parse_challenge(base + "[logo]\nbox = [570, 10, 50, 44]\n").logo
    assert pixels == LogoSettings(box=(570.0, 10.0, 50.0, 44.0), method="blur") and not pixels.fractional
    fractions = parse_challenge(base + '[logo]\nbox = [0.9, 0, 0.1, 0.15]\nmethod = "inpaint"').logo
    assert fractions is not None and fractions.fractional and fractions.method == "inpaint"
    auto = parse_challenge(base + "[logo]\nauto = true\n").logo
    assert auto == LogoSettings(auto=True)
    assert parse_challenge(base + "[logo]\nauto = false\n").logo is None  # switched off explicitly
    assert parse_logo({"auto": False}) is None


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({}, "needs box"),
        ({"box": [1, 2, 3]}, "logo.box must be a list of four"),
        ({"box": "0,0,10,10"}, "logo.box must be a list"),
        ({"box": [0, 0, "a", 4]}, "logo.box values must be numbers"),
        ({"box": [0, 0, True, 4]}, "logo.box values must be numbers"),
        ({"box": [-1, 0, 10, 10]}, "logo.box: x and y must be >= 0"),
        ({"box": [0, 0, 0, 10]}, "logo.box: width and height must be > 0"),
        ({"box": [0.5, 0.5, 0.6, 0.2]}, "x + w <= 1"),
        ({"box": [0, 0, 10, 10], "auto": True}, "not both"),
        ({"auto": "yes"}, "logo.auto must be true or false"),
        ({"auto": True, "method": "pixelate"}, "logo.method must be one of blur, inpaint"),
        ({"auto": True, "size": 3}, "logo.size is not a known key"),
    ],
)
def test_invalid_logo_tables(table: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("+", r"\+").replace("(", r"\(")):
        parse_logo(table)


def test_logo_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="'logo' must be a table"):
        parse_logo([1, 2, 3, 4])


def test_resolve_box_pixels_fractions_and_clipping() -> None:
    assert logo.resolve_box(LogoSettings(box=(570, 10, 50, 44)), 640, 360) == LogoBox(570, 10, 50, 44)
    # Fractions scale with the picture: the same corner at any resolution.
    frac = LogoSettings(box=(0.9, 0.0, 0.1, 0.15))
    assert logo.resolve_box(frac, 640, 360) == LogoBox(576, 0, 64, 54)
    assert logo.resolve_box(frac, 1920, 1080) == LogoBox(1728, 0, 192, 162)
    # Pixels beyond the frame are clipped; a box wholly outside it is an error naming the key.
    assert logo.resolve_box(LogoSettings(box=(600, 340, 100, 100)), 640, 360) == LogoBox(600, 340, 40, 20)
    with pytest.raises(ConfigError, match=r"logo.box .* is empty once clipped to the 640x360 picture"):
        logo.resolve_box(LogoSettings(box=(700, 10, 20, 20)), 640, 360)
    with pytest.raises(ValueError, match="no explicit box"):
        logo.resolve_box(LogoSettings(auto=True), 640, 360)


# ------------------------------------------------------------------------------------------ detection: tensors


def _moving_scene(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth random pictures that change completely from frame to frame (no edges survive the mean)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, h // 16, w // 16, generator=g) * 255
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear").to(torch.uint8)


def test_find_logo_on_tensors_anywhere_and_nothing_when_still() -> None:
    frames = _moving_scene(12, 240, 320)
    # A text-like static mark (white strokes with a dark outline) away from any corner: the prior is no rule.
    mark = torch.zeros(3, 20, 48, dtype=torch.uint8)
    mark[:, 4:16, ::6] = 255
    mark[:, 4:6, :] = 255
    frames[:, :, 200:220, 140:188] = mark
    box = logo.find_logo(frames)
    assert box is not None
    iou, inside = overlap(box, LogoBox(140, 200, 48, 20))
    assert inside == 1.0 and iou > 0.5, box
    # Everything static (one picture repeated): nothing can be told apart, whatever its edges.
    still = frames[:1].expand(8, -1, -1, -1).contiguous()
    assert logo.find_logo(still) is None
    # A moving scene with no static mark at all.
    assert logo.find_logo(_moving_scene(12, 240, 320, seed=1)) is None
    # Too few samples to tell static from one moment; a wrong layout is a caller error.
    assert logo.find_logo(frames[:2]) is None
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        logo.find_logo(frames[:, 0])


# -------------------------------------------------------------------------------- detection and cover: video


@pytest.fixture(scope="module")
def hamilton_frames(hamilton: Path) -> torch.Tensor:
    return logo.sampled_frames(hamilton)


@pytest.fixture(scope="module")
def hamilton_box(hamilton_frames: torch.Tensor) -> LogoBox:
    box = logo.find_logo(hamilton_frames)
    assert box is not None, "the WH.GOV logo was not found"
    return box


@pytest.fixture(scope="module")
def covered(tmp_path_factory: pytest.TempPathFactory, hamilton: Path, hamilton_box: LogoBox) -> Path:
    return logo.cover_logo(hamilton, tmp_path_factory.mktemp("logo") / "covered.mp4", hamilton_box)


def test_auto_finds_the_hamilton_logo(hamilton_box: LogoBox) -> None:
    iou, inside = overlap(hamilton_box, HAMILTON_LOGO)
    assert inside == 1.0, f"{hamilton_box} does not contain the logo {HAMILTON_LOGO}"
    assert iou >= 0.5, f"{hamilton_box} is much larger than the logo {HAMILTON_LOGO} (IoU {iou:.2f})"


def test_cover_blurs_the_logo_and_leaves_the_rest(hamilton: Path, hamilton_frames: torch.Tensor, covered: Path) -> None:
    after = logo.sampled_frames(covered)
    assert after.shape == hamilton_frames.shape
    before_energy, after_energy = edge_energy(hamilton_frames, HAMILTON_LOGO), edge_energy(after, HAMILTON_LOGO)
    assert after_energy < 0.02 * before_energy, (before_energy, after_energy)  # the logo's edges are gone
    diff = (centre(after) - centre(hamilton_frames)).abs().mean((1, 2, 3))
    assert diff.max().item() < 4.0, diff  # only re-encode noise where no logo was

    src, out = media.probe(hamilton), media.probe(covered)
    assert (out.video.width, out.video.height) == (src.video.width, src.video.height)
    assert out.video.codec == "h264" and out.video.num_frames == src.video.num_frames
    assert out.video.header_duration_s == pytest.approx(src.video.header_duration_s, abs=1e-3)
    # Every frame keeps its time: samples line up, and video and audio keep their offset.
    src_pts = torch.cat([b.pts_s for b in media.sample_frames(hamilton)]) - src.video.start_s
    out_pts = torch.cat([b.pts_s for b in media.sample_frames(covered)]) - out.video.start_s
    assert torch.allclose(src_pts, out_pts, atol=1e-3)
    assert src.audio is not None and out.audio is not None
    assert out.video.start_s - out.audio.start_s == pytest.approx(src.video.start_s - src.audio.start_s, abs=1e-3)
    assert audio_md5(covered) == audio_md5(hamilton)  # the audio is copied, not re-encoded


def test_rotated_clip_boxes_agree_with_ffmpeg(tmp_path: Path, hamilton: Path) -> None:
    """The box is found in the displayed (rotated) picture, and FFmpeg covers those same pixels."""
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-i", str(hamilton), "-t", "4", "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    frames = logo.sampled_frames(rotated)
    assert frames.shape[2:] == (640, 360)
    box = logo.find_logo(frames)
    assert box is not None and overlap(box, ROTATED_LOGO)[1] == 1.0, box
    out = logo.cover_logo(rotated, tmp_path / "covered.mp4", box, method="inpaint")
    after = logo.sampled_frames(out)
    assert after.shape == frames.shape
    assert edge_energy(after, ROTATED_LOGO) < 0.05 * edge_energy(frames, ROTATED_LOGO)
    assert (centre(after) - centre(frames)).abs().mean().item() < 4.0


def test_letterboxed_clip_and_explicit_fraction_box(tmp_path: Path, hamilton: Path) -> None:
    """Black bars are static but flat: the logo is still the one found. A fraction box covers the same place."""
    boxed = tmp_path / "letterbox.mp4"
    ffmpeg(
        "-i", str(hamilton), "-t", "4", "-vf", "pad=640:480:0:60", "-c:a", "copy", "-preset", "ultrafast", str(boxed)
    )
    frames = logo.sampled_frames(boxed)
    logo_there = LogoBox(HAMILTON_LOGO.x, HAMILTON_LOGO.y + 60, HAMILTON_LOGO.w, HAMILTON_LOGO.h)
    found = logo.find_logo(frames)
    assert found is not None
    iou, inside = overlap(found, logo_there)
    assert inside == 1.0 and iou >= 0.5, found

    settings = parse_logo({"box": [0.89, 0.15, 0.07, 0.1]})
    assert settings is not None
    box = logo.locate_logo(settings, boxed)
    assert box == LogoBox(570, 72, 44, 48)
    out = logo.cover_logo(boxed, tmp_path / "covered.mp4", box)
    after = logo.sampled_frames(out)
    assert edge_energy(after, logo_there) < 0.02 * edge_energy(frames, logo_there)
    assert media.probe(out).has_audio


def test_static_synthetic_clips_give_nothing_or_a_small_box(tmp_path: Path) -> None:
    for name, source in {"color": "color=c=gray:s=320x240:r=25:d=3", "testsrc": "testsrc=s=320x240:r=25:d=3"}.items():
        path = tmp_path / f"{name}.mp4"
        ffmpeg("-f", "lavfi", "-i", source, "-pix_fmt", "yuv420p", str(path))
        box = logo.locate_logo(LogoSettings(auto=True), path)
        if box is not None:  # a sensible box: inside the picture and small
            assert box.x >= 0 and box.y >= 0 and box.x + box.w <= 320 and box.y + box.h <= 240
            assert box.area <= 0.15 * 320 * 240
    assert logo.locate_logo(LogoSettings(auto=True), tmp_path / "color.mp4") is None


def test_cover_errors(tmp_path: Path, hamilton: Path) -> None:
    with pytest.raises(ValueError, match="is empty in the 640x360 frame"):
        logo.cover_logo(hamilton, tmp_path / "x.mp4", LogoBox(700, 10, 20, 20))
    with pytest.raises(ValueError, match="method must be one of"):
        logo.cover_logo(hamilton, tmp_path / "x.mp4", HAMILTON_LOGO, method="pixelate")
    with pytest.raises(media.DecodeError) as missing:
        logo.cover_logo(tmp_path / "nope.mp4", tmp_path / "x.mp4", HAMILTON_LOGO)
    assert missing.value.kind == "unreadable_path"
    with pytest.raises(media.DecodeError) as failed:  # FFmpeg itself refuses: its reason is in the message
        logo.cover_logo(hamilton, tmp_path / "x.unknownext", HAMILTON_LOGO)
    assert failed.value.kind == "encode_failed" and "output format" in str(failed.value)
    assert list(tmp_path.iterdir()) == []  # no half-written file is left behind


def test_cover_keeps_the_picture_outside_the_box(hamilton: Path, hamilton_box: LogoBox, covered: Path) -> None:
    """The cover's preset (``COVER_PRESET``) keeps the rest of the picture: PSNR and SSIM against the source on the
    largest band away from the box, measured as benchmarks/cover_quality.py measures every preset."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from cover_quality import outside_band, psnr_ssim

    band = outside_band(hamilton_box, 640, 360)
    assert band[2] * band[3] >= 0.5 * 640 * 360
    psnr, ssim = psnr_ssim(covered, hamilton, band)
    assert psnr >= 40.0 and ssim >= 0.98, (psnr, ssim)


def test_cover_presets_are_checked(tmp_path: Path, hamilton: Path) -> None:
    from engine.media.encode import COVER_PRESET, X264_PRESETS

    assert COVER_PRESET in X264_PRESETS
    with pytest.raises(ValueError, match="preset must be one of"):
        media.encode_with_region_covered(hamilton, tmp_path / "x.mp4", *HAMILTON_LOGO.as_tuple(), preset="warp9")


def test_covered_name_holds_everything_the_encode_depends_on() -> None:
    from engine.media.encode import COVER_PRESET

    name = logo.covered_name("ab12", LogoBox(1, 2, 3, 4), "blur")
    assert name == f"ab12-1_2_3_4-blur-{COVER_PRESET}.mp4"
    assert logo.covered_name("ab12", LogoBox(1, 2, 3, 5), "blur") != name
    assert logo.covered_name("ab12", LogoBox(1, 2, 3, 4), "inpaint") != name


class _Store:
    def __init__(self, keys: set[str]) -> None:
        self.keys = keys

    def exists(self, key: str) -> bool:
        return key in self.keys


def _cover_ctx(tmp_path: Path, settings: LogoSettings | None, stored: set[str], force: bool = False) -> object:
    """The parts of a RunContext that the cover stage reads."""
    from types import SimpleNamespace

    from engine.pipeline.summary import StageTimer

    return SimpleNamespace(
        challenge=SimpleNamespace(logo=settings),
        settings=SimpleNamespace(force=force, work_dir=tmp_path / "work"),
        store=_Store(stored),
        timer=StageTimer(),
        log=lambda _line: None,
    )


def test_cover_stage_encodes_only_what_will_be_stored(
    tmp_path: Path, hamilton: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No encode without a logo, none when the store already holds the video's copy (the flush would not upload a
    new one), none when an earlier run left the same cover in the work folder; otherwise exactly one."""
    from types import SimpleNamespace

    from engine.pipeline import stages
    from engine.pipeline.rows import stored_video_key
    from engine.types import VideoFaces

    encodes: list[Path] = []

    def fake_cover(src: Path, dst: Path, box: LogoBox, method: str = "blur") -> Path:
        encodes.append(dst)
        dst.write_bytes(b"covered")
        return dst

    monkeypatch.setattr(stages, "cover_logo", fake_cover)
    info = media.probe(hamilton)
    prepared = SimpleNamespace(item=SimpleNamespace(name="h.mp4"), info=info, path=hamilton, sha="f00d")
    box = LogoSettings(box=(576, 18, 32, 32))

    def cover(settings: LogoSettings | None, stored: set[str], force: bool = False) -> tuple[Path, object]:
        ctx = _cover_ctx(tmp_path, settings, stored, force)
        return stages.cover_stage(prepared, VideoFaces(), ctx)  # type: ignore[arg-type]

    assert cover(None, set()) == (hamilton, None) and encodes == []
    key = stored_video_key(prepared, True)  # type: ignore[arg-type]
    assert cover(box, {key}) == (hamilton, [576, 18, 32, 32]) and encodes == []  # already stored: nothing to do
    path, covered_box = cover(box, set())
    assert covered_box == [576, 18, 32, 32] and len(encodes) == 1 and path == encodes[0]
    assert path.name == logo.covered_name("f00d", LogoBox(576, 18, 32, 32), "blur")
    assert cover(box, set()) == (path, covered_box) and len(encodes) == 1  # left by an earlier run: reused
    path.unlink()
    assert cover(box, {key}, force=True)[0] == path and len(encodes) == 2  # --force: stored again, so encoded


def test_cover_is_the_same_bytes_every_time(tmp_path: Path, hamilton: Path) -> None:
    """Covering a video twice writes the same file (the stream and sequential paths must store the same object).
    An even-sized box is the case that once was not: a blur radius of half the box read past it, into whatever
    memory held, so each encode differed from the last."""
    cut = tmp_path / "cut.mp4"
    ffmpeg("-i", str(hamilton), "-t", "3", "-c", "copy", str(cut))
    box = LogoBox(20, 20, 100, 60)
    first = logo.cover_logo(cut, tmp_path / "first.mp4", box).read_bytes()
    for attempt in range(2):
        again = logo.cover_logo(cut, tmp_path / f"again{attempt}.mp4", box).read_bytes()
        assert again == first, f"encode {attempt + 2} differs from the first"
