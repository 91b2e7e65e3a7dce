"""Reference-person search on the shared clips: who is found, the clips, the metadata, the seed comparison.

Ground truth, checked by eye (every 8th frame of the Ryan Reynolds clip, and the Hamilton frames): the seed's
"Ryan Reynolds" clip shows Ryan Reynolds (with glasses) only in a minority of its frames — frames 168-264 among
others; frames 440-1384 and 1416-1608 show other people (a bearded man, an older woman, Hugh Jackman). In the
Hamilton clip the singer (``lin-manuel-miranda.png``) stands at the right at first and is in close-up from about
3.6 s to 7.9 s; the pianist (``alex-lacamoire.png``) sits at the left edge.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from engine.apps.boxes import frame_boxes
from engine.apps.identify import rule_for
from engine.apps.people import PeopleError
from engine.apps.search import (
    SearchSettings,
    appearances,
    clip_span,
    load_reference,
    scan_video,
    search,
    search_scan,
)
from engine.faces.batching import FaceModels
from engine.media import cut_clip, iter_frames, probe

SEED_KEYS = ["file_name", "face_clips", "timestamp_start", "timestamp_end"]


@pytest.fixture(scope="module")
def ryan_meta(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, ryan: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("search-ryan")
    [meta] = search(shared_data / "faces" / "ryan-reynolds-reference.jpg", [ryan], out, log=lambda _m: None)
    return out, meta


@pytest.fixture(scope="module")
def hamilton_meta(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, hamilton: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("search-hamilton")
    settings = SearchSettings(clip_kind="frame")
    [meta] = search(shared_data / "faces" / "lin-manuel-miranda.png", [hamilton], out, settings=settings,
                    log=lambda _m: None)  # fmt: skip
    return out, meta


def _matched(meta: dict) -> list[dict]:
    return [f for clip in meta["clips"] for f in clip["face_clips"]]


def test_finds_ryan_where_he_is_and_nowhere_else(ryan_meta: tuple[Path, dict]) -> None:
    _out, meta = ryan_meta
    frames = [f["frame"] for f in _matched(meta)]
    assert meta["frames_matched"] == len(frames)
    sampled_in_shot = [f for f in range(168, 265) if f % 6 == 0]  # 0.2 s at 30 fps = every 6th frame
    found = [f for f in sampled_in_shot if f in frames]
    assert len(found) >= 0.8 * len(sampled_in_shot), (found, sampled_in_shot)
    wrong = [f for f in frames if 440 <= f <= 1384 or 1416 <= f <= 1608]
    assert not wrong, f"matched frames where Ryan Reynolds is not on screen: {wrong}"


def test_singer_not_pianist(hamilton_meta: tuple[Path, dict], hamilton: Path) -> None:
    _out, meta = hamilton_meta
    width = probe(hamilton).video.width
    faces = _matched(meta)
    assert len(faces) >= 15
    assert all(f["x"] + f["w"] / 2 > 0.25 * width for f in faces), "the pianist at the left edge was matched"
    closeup = [f for f in faces if 3.6 <= f["time_s"] <= 7.9]
    assert len(closeup) >= 15


def test_clips_keep_audio_and_match_the_metadata(hamilton_meta: tuple[Path, dict]) -> None:
    out, meta = hamilton_meta
    assert meta["has_audio"] and len(meta["clips"]) >= 1
    for clip in meta["clips"]:
        info = probe(out / clip["file_name"])
        assert info.has_audio, "the clip lost the source's audio"
        length = clip["timestamp_end"] - clip["timestamp_start"]
        assert abs(info.video.duration_s - length) < 0.1
        assert info.video.num_frames == clip["last_frame"] - clip["first_frame"] + 1
        times = [f["time_s"] for f in clip["face_clips"]]
        assert clip["timestamp_start"] <= min(times) and max(times) <= clip["timestamp_end"]
        # Decided per track: the clip's weakest track is under the threshold, stands out of its cohort, and says so.
        assert clip["track_distance"] <= meta["threshold"] and clip["confidence"] >= 0.5
        assert clip["cohort_median"] is None or clip["cohort_median"] > clip["track_distance"]
        # No clip spans a scene change.
        assert not any(clip["timestamp_start"] < t < clip["timestamp_end"] for t in meta["scene_changes"])
    assert meta["embedder"] == "hse" and meta["threshold"] == rule_for("hse").threshold
    written = json.loads((out / "short_hamilton_clip.json").read_text())
    assert written == meta and meta["clip_kind"] == "frame"


def test_seed_metadata_shape_and_face_clips(ryan_meta: tuple[Path, dict]) -> None:
    """``<stem>-metadata.json`` is the seed's own format: a list, each entry exactly the seed's keys in its order,
    ``file_name`` the clip's absolute path (``saved_file_N.mp4``), one box of ints per frame of the face-crop clip."""
    out, meta = ryan_meta
    seed = json.loads((out / "ryan-reynolds-metadata.json").read_text())
    assert isinstance(seed, list) and len(seed) == len(meta["clips"]) >= 1
    for n, (entry, clip) in enumerate(zip(seed, meta["clips"], strict=True), start=1):
        assert list(entry) == SEED_KEYS
        path = Path(entry["file_name"])
        assert path.is_absolute() and path == (out / "clips" / "ryan-reynolds" / f"saved_file_{n}.mp4").resolve()
        assert all(
            list(b) == ["x", "y", "w", "h"] and all(type(v) is int for v in b.values()) for b in entry["face_clips"]
        )
        info = probe(path).video
        assert (info.width, info.height) == (256, 256) and not probe(path).has_audio
        assert info.num_frames == len(entry["face_clips"]) == clip["last_frame"] - clip["first_frame"] + 1
        assert entry["timestamp_start"] == clip["timestamp_start"] <= entry["timestamp_end"] < clip["timestamp_end"]
        # The sampled boxes are kept exactly; between them, boxes move linearly.
        for f in clip["face_clips"]:
            b = entry["face_clips"][f["frame"] - clip["first_frame"]]
            assert abs(b["x"] - f["x"]) <= 1 and abs(b["w"] - f["w"]) <= 1


def test_seed_metadata_boxes_against_the_seed(ryan_meta: tuple[Path, dict], shared_data: Path) -> None:
    """Every per-frame box we write (interpolated between samples) against the seed's box on the same frame, mapped
    as in :func:`test_boxes_against_the_seed_metadata`."""
    out, meta = ryan_meta
    seed = json.loads((shared_data / "seed_outputs" / "ryan-reynolds-metadata.json").read_text())[0]["face_clips"]
    ours = json.loads((out / "ryan-reynolds-metadata.json").read_text())
    ious = []
    for entry, clip in zip(ours, meta["clips"], strict=True):
        for i, b in enumerate(entry["face_clips"]):
            s = seed[clip["first_frame"] + i]
            ox, oy = s["x"] - (170 - s["w"]) / 2, s["y"] - (170 - s["h"]) / 2
            mine = torch.tensor([[ox + b["x"], oy + b["y"], ox + b["x"] + b["w"], oy + b["y"] + b["h"]]]).float()
            theirs = torch.tensor([[s["x"], s["y"], s["x"] + s["w"], s["y"] + s["h"]]]).float()
            ious.append(float(box_iou(mine, theirs)))
    iou = torch.tensor(ious)
    print(f"\nper-frame seed comparison on {len(ious)} frames: IoU median {iou.median():.3f}, min {iou.min():.3f}")
    assert iou.median() > 0.5 and (iou > 0.3).float().mean() > 0.9


def test_frame_boxes_interpolate_and_hold() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [6.0, 0, 16, 10]])
    got = frame_boxes(torch.tensor([10, 16]), boxes, 8, 18)
    assert got.shape == (11, 4)
    assert got[:3, 0].tolist() == [0, 0, 0] and got[5, 0] == 3 and got[-3:, 0].tolist() == [6, 6, 6]


@pytest.mark.parametrize("rate", ["24000/1001", "25"])
def test_clips_never_cross_a_cut(tmp_path: Path, rate: str) -> None:
    """A red shot then a blue one at 23.976 (and 25) fps: a clip running to the end of the red shot holds every
    red frame of its range and not the blue cut frame (the end comes from frame pts, half-way to the cut frame)."""
    from types import SimpleNamespace

    from conftest import ffmpeg

    video = tmp_path / "cut.mp4"
    red, blue = (f"color={c}:s=64x64:r={rate}:d=3" for c in ("red", "blue"))
    ffmpeg("-f", "lavfi", "-i", red, "-f", "lavfi", "-i", blue,
           "-filter_complex", "[0][1]concat=n=2:v=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video))  # fmt: skip
    info = probe(video)
    pts = torch.cat([b.pts_s for b in iter_frames(video)])
    colour = torch.cat([b.frames[:, :, 32, 32].float() for b in iter_frames(video)])
    cut = int((colour[:, 2] > colour[:, 0]).nonzero()[0])
    vs = SimpleNamespace(scan=SimpleNamespace(first=0, stop=len(pts), pts_s=pts), cuts=torch.tensor([cut]), info=info)
    for shot, lo, hi in ((0, cut - 20, cut - 3), (1, cut + 2, len(pts) - 5)):
        span = clip_span(vs, shot, lo, hi, 6)  # padding runs into the cut: clamped to the shot
        assert span.last < cut if shot == 0 else span.first == cut
        assert span.cut_start < float(pts[span.first]) and span.cut_end < span.end
        dst = cut_clip(video, tmp_path / f"clip{shot}.mp4", span.cut_start, span.cut_end)
        frames = torch.cat([b.frames[:, :, 32, 32].float() for b in iter_frames(dst)])
        assert len(frames) == span.last - span.first + 1, (rate, shot, len(frames), span)
        red = frames[:, 0] > frames[:, 2]
        assert bool(red.all()) if shot == 0 else not bool(red.any()), (rate, shot)
        assert span.end == float(pts[cut]) if shot == 0 else span.last == len(pts) - 1


def test_boxes_against_the_seed_metadata(ryan_meta: tuple[Path, dict], shared_data: Path) -> None:
    """The seed pasted each w x w face crop (film coordinates x, y, w, h) unscaled at the centre of its 170x170
    canvas, so a box found in the clip maps back to the film by ``x + seed.x - (170 - seed.w) / 2``. Our RetinaFace
    boxes and the seed's Haar boxes must then describe the same faces."""
    _out, meta = ryan_meta
    seed = json.loads((shared_data / "seed_outputs" / "ryan-reynolds-metadata.json").read_text())[0]["face_clips"]
    assert len(seed) == probe(meta["video"]).video.num_frames  # one seed box per frame of the clip
    ious, areas = [], []
    for f in _matched(meta):
        s = seed[f["frame"]]
        ox, oy = s["x"] - (170 - s["w"]) / 2, s["y"] - (170 - s["h"]) / 2
        ours = torch.tensor([[ox + f["x"], oy + f["y"], ox + f["x"] + f["w"], oy + f["y"] + f["h"]]], dtype=torch.float)
        theirs = torch.tensor([[s["x"], s["y"], s["x"] + s["w"], s["y"] + s["h"]]], dtype=torch.float)
        ious.append(float(box_iou(ours, theirs)))
        areas.append(f["w"] * f["h"] / (s["w"] * s["h"]))
    iou, area = torch.tensor(ious), torch.tensor(areas)
    print(f"\nseed comparison on {len(ious)} matched frames: IoU median {iou.median():.3f}, min {iou.min():.3f}; "
          f"area ours/seed median {area.median():.3f}")  # fmt: skip
    assert iou.median() > 0.55 and iou.min() > 0.4


def test_appearances_split_at_shots_and_gaps() -> None:
    times = torch.tensor([1.0, 1.2, 1.4, 3.0, 3.2, 3.4, 3.6])
    shots = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    assert appearances(times, shots, 1.0) == [(0, 2), (3, 4), (5, 6)]
    assert appearances(times, torch.zeros(7, dtype=torch.long), 2.0) == [(0, 6)]
    assert appearances(torch.zeros(0), torch.zeros(0, dtype=torch.long), 1.0) == []


def test_reference_without_a_face(tmp_path: Path, hamilton: Path) -> None:
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (200, 200), "gray").save(blank)
    with pytest.raises(PeopleError, match="no face found"):
        search(blank, [hamilton], tmp_path / "out", settings=SearchSettings(clips=False), log=lambda _m: None)


def test_search_cli(tmp_path: Path, shared_data: Path, bad_inputs: dict[str, Path], media_dir: Path) -> None:
    from conftest import run_cli

    ref = shared_data / "faces" / "lin-manuel-miranda.png"
    done = run_cli(
        "search", "--reference", str(ref), str(media_dir / "plain2s.mp4"), str(bad_inputs["text_file"]),
        "--out", str(tmp_path), "--interval", "0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "text_file.mp4" in done.stderr  # the broken file is reported, the good one still searched
    meta = json.loads((tmp_path / "plain2s.json").read_text())
    assert meta["frames_matched"] >= 2 and len(meta["clips"]) == 1 and meta["clip_kind"] == "face"
    assert (tmp_path / meta["clips"][0]["file_name"]).is_file()
    [entry] = json.loads((tmp_path / "plain2s-metadata.json").read_text())
    assert list(entry) == SEED_KEYS and Path(entry["file_name"]).is_file()


@pytest.mark.parametrize("clip", ["friends", "hamilton"])
def test_each_reference_finds_its_person_only(clip: str, shared_data: Path, tmp_path: Path) -> None:
    """The labelled clips with reference photos (``benchmarks/identity/search_bench.py``): six people at one table,
    one search per photo over a single scan (the look-alike problem: with a threshold alone, a photo also matches
    the tracks of whoever resembles it most), and the Hamilton clip's singer and pianist. Scored against the labelled
    faces: precision >= 0.95, recall >= 0.8 of the faces seen as faces."""
    from benchmarks.identity.search_bench import score, search_sets

    [one] = [s for s in search_sets() if s.name == clip]
    settings = SearchSettings(clips=False)
    models = FaceModels.load("cpu", settings.faces)
    vs = scan_video(models, settings, one.video)
    truth = one.truth()
    for photo, person in one.photos.items():
        meta = search_scan(vs, load_reference(photo, models), settings, tmp_path)
        s = score(meta, person, truth)
        print(f"{person}: precision {s['precision']:.3f}, recall {s['recall']:.3f} ({s['recall_face']:.3f})")
        assert s["precision"] >= 0.95 and s["recall_face"] >= 0.8, (person, s)
        assert all(0.5 <= c["confidence"] <= 1 for c in meta["clips"])
        # Cuts (many in the 23.976 fps Friends clip): every clip ends before the next shot's first frame.
        for c in meta["clips"]:
            shot_end = vs.cuts[vs.cuts > c["first_frame"]]
            if len(shot_end):
                # timestamp_end is rounded to 0.1 ms: allow that much.
                cut_s = float(vs.scan.pts_s[shot_end[0]])
                assert c["last_frame"] < int(shot_end[0]) and c["timestamp_end"] <= cut_s + 5e-5


def test_search_and_film_find_cuts_of_a_letterboxed_repost(tmp_path: Path, hamilton: Path) -> None:
    """The Hamilton clip padded into a phone-shaped frame (a third of it picture, as reposts are): with the shot
    settings search and film labelling use, its cuts are the clip's own (frames 20, 82, 211); PySceneDetect's
    whole-frame score (``crop_borders`` off) finds none of them."""
    from conftest import ffmpeg

    from engine.apps.film import LabelSettings
    from engine.shots import ShotSettings, scene_changes

    video = tmp_path / "repost.mp4"
    ffmpeg("-i", str(hamilton), "-vf", "pad=640:1080:0:360:black", "-fps_mode", "passthrough", "-c:v", "libx264",
           "-crf", "18", "-an", str(video))  # fmt: skip
    assert SearchSettings().shots == LabelSettings().shots
    assert scene_changes(video, settings=SearchSettings().shots).frames.tolist() == [20, 82, 211]
    assert scene_changes(video, settings=ShotSettings()).frames.tolist() == []
