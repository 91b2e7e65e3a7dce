"""The streaming pipeline: its concurrency helpers (engine/pipeline/threads.py), frames of several videos packed into
model
batches (FaceBatcher), and a run through the streaming path giving the same tables and objects as the sequential
path on a small corpus with bad files among its videos."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import db_tables, ffmpeg

from engine import media
from engine.config import ConfigError, Settings, parse_challenge
from engine.faces.batching import FaceBatcher, FaceModels, analyze_batches
from engine.pipeline.run import run_challenge
from engine.pipeline.stages import batch_frames, packs_videos
from engine.pipeline.summary import RunSummary
from engine.pipeline.threads import Flusher, prefetch
from engine.store import face_key, open_object_store
from engine.types import VideoFaces

# --- engine/pipeline/threads.py ---


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


class _Source:
    """An endless (or ``n``-long) generator that counts what it produced and says when it was closed."""

    def __init__(self, n: int | None = None, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.produced = 0
        self.closed = threading.Event()
        self.thread: str | None = None

    def __iter__(self) -> Iterator[int]:
        try:
            i = 0
            while self.n is None or i < self.n:
                if i == self.fail_at:
                    raise ValueError(f"source failed at {i}")
                self.thread = threading.current_thread().name
                self.produced += 1
                yield i
                i += 1
        finally:
            self.closed.set()


def test_prefetch_keeps_order_and_runs_in_its_own_thread() -> None:
    source = _Source(200)
    assert list(prefetch(source, depth=3, name="reader")) == list(range(200))
    assert source.thread == "reader" and source.closed.is_set()
    assert list(prefetch([], depth=1)) == []
    with pytest.raises(ValueError, match="depth must be at least 1"):
        prefetch([1], depth=0)


def test_prefetch_queue_is_bounded() -> None:
    source = _Source()
    stream = prefetch(source, depth=3)
    try:
        # Three items wait in the queue and a fourth is held by the blocked producer: no more, however long we wait.
        assert _eventually(lambda: source.produced == 4)
        time.sleep(0.2)
        assert source.produced == 4
        assert next(stream) == 0
        assert _eventually(lambda: source.produced == 5)
        time.sleep(0.1)
        assert source.produced == 5
    finally:
        stream.close()


def test_prefetch_raises_the_producers_error_at_its_place() -> None:
    got = []
    with pytest.raises(ValueError, match="source failed at 3"):
        for value in prefetch(_Source(10, fail_at=3), depth=2):
            got.append(value)
    assert got == [0, 1, 2]


def test_prefetch_close_stops_the_producer() -> None:
    source = _Source()
    stream = prefetch(source, depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close(timeout=5)
    assert not stream.alive and source.closed.is_set()  # the generator's finally ran (in the producer thread)
    assert source.produced <= 3 + 2 + 1
    assert list(stream) == []  # closed: nothing more, no hang
    # Leaving a with block early (break, an exception in the consumer) closes it the same way.
    source = _Source()
    with pytest.raises(KeyError), prefetch(source, depth=2) as stream:
        for value in stream:
            if value == 5:
                raise KeyError(value)
    assert not stream.alive and source.closed.is_set()


def test_flusher_runs_jobs_in_order_and_keeps_errors_at_their_job() -> None:
    done: list[int] = []

    def job(i: int) -> int:
        time.sleep(0.002 * (i % 3))
        if i == 4:
            raise RuntimeError("job 4 failed")
        done.append(i)
        return i * i

    with Flusher[int](depth=2) as flusher:
        futures = [flusher.submit(lambda i=i: job(i)) for i in range(8)]
    assert all(f.done() for f in futures)  # leaving the block waited for every job
    assert done == [0, 1, 2, 3, 5, 6, 7]  # one worker, submission order; a failed job does not stop the others
    assert [f.result() for f in futures if f is not futures[4]] == [i * i for i in (0, 1, 2, 3, 5, 6, 7)]
    with pytest.raises(RuntimeError, match="job 4 failed"):
        futures[4].result()
    with pytest.raises(RuntimeError, match="closed"):
        flusher.submit(lambda: 0)


def test_flusher_blocks_when_full_and_cancel_drops_waiting_jobs() -> None:
    release = threading.Event()
    flusher: Flusher[int] = Flusher(depth=2)
    running = flusher.submit(lambda: int(release.wait(10)))
    assert _eventually(lambda: running.running())
    waiting = [flusher.submit(lambda: 1), flusher.submit(lambda: 2)]  # the queue holds two
    submitted = threading.Event()
    extra = threading.Thread(target=lambda: (flusher.submit(lambda: 3), submitted.set()), daemon=True)
    extra.start()
    time.sleep(0.2)
    assert not submitted.is_set()  # a third waiting job blocks its submitter
    release.set()
    assert submitted.wait(5)
    extra.join(5)
    flusher.close()
    assert running.result() == 1 and [w.result() for w in waiting] == [1, 2] and not flusher.alive

    release.clear()
    flusher = Flusher(depth=3)
    running = flusher.submit(lambda: int(release.wait(10)))
    assert _eventually(lambda: running.running())
    waiting = [flusher.submit(lambda: 1), flusher.submit(lambda: 2)]
    threading.Timer(0.1, release.set).start()
    flusher.close(cancel=True)
    assert running.result() == 1 and all(w.cancelled() for w in waiting) and not flusher.alive


# --- frames of several videos in one model batch -------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels.load("cpu")


def _same_faces(got: VideoFaces, want: VideoFaces, exact: bool = False) -> None:
    """The same frames, faces and images; unless ``exact``, boxes, scores, landmarks and descriptors within float
    tolerance (see FaceBatcher: packing moves their last bits), and the crops of faces whose landmarks moved may
    differ."""
    frames = zip(got.frames.state().values(), want.frames.state().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in frames)
    assert torch.equal(got.noface_frames, want.noface_frames) and got.frame_jpegs == want.frame_jpegs
    assert (got.sampled is None) == (want.sampled is None)
    if want.sampled is not None:
        assert torch.equal(got.sampled, want.sampled)
    assert got.faces.state().keys() == want.faces.state().keys()
    tolerance = {} if exact else {"boxes": 1e-3, "scores": 1e-4, "landmarks": 1e-3, "embedding": 1e-5}
    for name, value in want.faces.state().items():
        if name in tolerance:
            torch.testing.assert_close(getattr(got.faces, name), value, rtol=0, atol=tolerance[name])
        else:
            assert torch.equal(getattr(got.faces, name), value), name
    same = (got.faces.landmarks == want.faces.landmarks).all(1).tolist()
    assert len(got.faces.crops) == len(want.faces.crops)
    assert all(a == b for a, b, s in zip(got.faces.crops, want.faces.crops, same, strict=True) if s)


def _batcher_videos(ryan: Path, media_dir: Path) -> dict[str, tuple[Path, float]]:
    """name -> (video, sampling interval): frame sizes 170x170, 640x360, 360x640, then 170x170 again; 6, 2, 2, 3 and
    7 sampled frames."""
    return {
        "a": (ryan, 11.0),
        "plain": (media_dir / "plain2s.mp4", 1.0),
        "rotated": (media_dir / "rotated.mp4", 1.0),
        "b": (ryan, 20.0),
        "dropped": (ryan, 9.0),
    }


KEEP: dict[str, Any] = dict(keep_frames=True, frame_jpegs=True)


@pytest.fixture(scope="module")
def one_by_one(models: FaceModels, media_dir: Path, ryan: Path) -> dict[str, VideoFaces]:
    """Each video alone through ``analyze_batches``, in decode chunks (= model batches) of 3 frames."""
    return {
        name: analyze_batches(media.sample_frames(path, interval, chunk=3), models, **KEEP)
        for name, (path, interval) in _batcher_videos(ryan, media_dir).items()
        if name != "dropped"
    }


def _through(batcher: FaceBatcher[str], videos: dict[str, tuple[Path, float]], chunk: int) -> tuple[list, list[int]]:
    """Every video's decode chunks through ``batcher`` ("dropped" is dropped after its last chunk): what it completed,
    in order, and the size of every detector call."""
    models = batcher.models
    sizes: list[int] = []
    detect = models.detector.detect_with_rotation

    def counting(frames: torch.Tensor, *args: Any) -> Any:
        sizes.append(len(frames))
        return detect(frames, *args)

    got: list[tuple[str, VideoFaces]] = []
    try:
        models.detector.detect_with_rotation = counting  # type: ignore[method-assign]
        for name, (path, interval) in videos.items():
            for batch in media.sample_frames(path, interval, chunk=chunk):
                got += batcher.add(name, batch)
            got += batcher.drop(name) if name == "dropped" else batcher.end(name)
        got += batcher.finish()
    finally:
        del models.detector.detect_with_rotation
    return got, sizes


def test_face_batcher_packs_videos_into_full_batches(
    models: FaceModels, media_dir: Path, ryan: Path, one_by_one: dict[str, VideoFaces]
) -> None:
    batcher: FaceBatcher[str] = FaceBatcher(models, batch_frames=4, **KEEP)
    got, sizes = _through(batcher, _batcher_videos(ryan, media_dir), chunk=3)
    assert [name for name, _ in got] == ["a", "plain", "rotated", "b"]
    for name, found in got:
        _same_faces(found, one_by_one[name])
    assert [len(found.frames) for found in one_by_one.values()] == [6, 2, 2, 3]
    assert sum(len(found) for _, found in got) > 0
    # Batches of 4 frames across videos ("b" and "dropped" share one); a batch ends early only where the frame size
    # changes (after "a", "plain" and "rotated"). "dropped" (7 frames) had 5 through the models when it was dropped
    # (their results discarded); its last 2 never were.
    assert sizes == [4, 2, 2, 2, 4, 4]


def test_face_batcher_without_packing_equals_one_video_at_a_time(
    models: FaceModels, media_dir: Path, ryan: Path, one_by_one: dict[str, VideoFaces]
) -> None:
    """``pack=False`` (the stream's default on a CPU): decode chunks of 2 frames go in, and each video's frames run in
    batches of 3 from its first frame, the calls ``analyze_batches`` makes over chunks of 3: results bit-identical."""
    batcher: FaceBatcher[str] = FaceBatcher(models, batch_frames=3, pack=False, **KEEP)
    got, sizes = _through(batcher, _batcher_videos(ryan, media_dir), chunk=2)
    assert [name for name, _ in got] == ["a", "plain", "rotated", "b"]
    for name, found in got:
        _same_faces(found, one_by_one[name], exact=True)
    assert sizes == [3, 3, 2, 2, 3, 3, 3]


# --- the streaming pipeline against the sequential one ----------------------------------------------------------

#: Columns that differ between equal runs by design: autoincrement ids, run ids and timestamps.
#: Float columns that packing frames of several videos into one batch may move (FaceBatcher), and by how much.
LOOSE = {
    "faces": {"x1": 1e-3, "y1": 1e-3, "x2": 1e-3, "y2": 1e-3, "score": 1e-4, "landmarks": 2e-3, "embedding": 1e-5},
    "similarities": {"cosine": 1e-5},
}


def test_stream_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENGINE_STREAM", "ENGINE_BATCH_FRAMES", "ENGINE_PACK_VIDEOS"):
        monkeypatch.delenv(name, raising=False)
    cpu = Settings.load("demo", device="cpu")
    assert cpu.stream and (batch_frames(cpu), packs_videos(cpu)) == (16, False)
    gpu = Settings.load("demo", device="cuda", resolve=False)
    assert (batch_frames(gpu), packs_videos(gpu)) == (64, True)
    monkeypatch.setenv("ENGINE_STREAM", "off")
    monkeypatch.setenv("ENGINE_BATCH_FRAMES", "32")
    monkeypatch.setenv("ENGINE_PACK_VIDEOS", "1")
    env = Settings.load("demo", device="cpu")
    assert not env.stream and (batch_frames(env), packs_videos(env)) == (32, True)
    assert Settings.load("demo", device="cpu", stream=True).stream  # the flag beats the environment
    monkeypatch.setenv("ENGINE_STREAM", "maybe")
    with pytest.raises(ConfigError, match="ENGINE_STREAM must be one of"):
        Settings.load("demo", device="cpu")
    monkeypatch.setenv("ENGINE_STREAM", "1")
    monkeypatch.setenv("ENGINE_BATCH_FRAMES", "-1")
    with pytest.raises(ConfigError, match="batch frames must be 0"):
        Settings.load("demo", device="cpu")


@pytest.fixture(scope="module")
def stream_corpus(tmp_path_factory: pytest.TempPathFactory, shared_videos: Path, media_dir: Path) -> tuple[Path, Path]:
    """The shared clips, short cuts of them and a test pattern (frame sizes 640x360, 360x640, 170x170 and 160x96;
    with and without audio, with and without faces), a copy of one (same content, another name), a file that is not
    a video and an empty one; a challenge with the demo prompts and ``[logo] auto``."""
    root = tmp_path_factory.mktemp("stream")
    folder = root / "videos"
    folder.mkdir()
    shutil.copy(shared_videos / "short_hamilton_clip.mp4", folder)
    ffmpeg("-i", str(shared_videos / "ryan-reynolds.mp4"), "-t", "10", "-c", "copy", str(folder / "ryan10s.mp4"))
    pattern = "testsrc2=size=160x96:rate=10:duration=3"
    ffmpeg("-f", "lavfi", "-i", pattern, "-pix_fmt", "yuv420p", str(folder / "noface.mp4"))
    for name in ("plain2s.mp4", "rotated.mp4", "no_audio.mp4"):
        shutil.copy(media_dir / name, folder / name)
    shutil.copy(shared_videos / "short_hamilton_clip.mp4", folder / "short_hamilton_copy.mp4")
    (folder / "broken.mp4").write_text("not a video at all\n")
    (folder / "empty.mp4").write_bytes(b"")
    toml = root / "challenge.toml"
    toml.write_text(
        f'name = "streaming"\nbaseline = "{shared_videos / "short_hamilton_clip.mp4"}"\n'
        '[[prompts]]\nname = "opening"\nstart = 0.5\nend = 3.5\n'
        '[[prompts]]\nname = "verse"\nstart = 4.0\nend = 8.5\n'
        "[logo]\nauto = true\n"
    )
    return toml, folder


@dataclass
class _Run:
    work: Path
    summary: RunSummary
    log: list[str]


def _run(corpus: tuple[Path, Path], work: Path, stream: bool, pack: int = 0) -> _Run:
    """A run in this process; ``pack=N``: model batches of N frames packed across videos."""
    toml, folder = corpus
    challenge = parse_challenge(toml.read_text(), toml)
    settings = Settings.load(
        challenge.name,
        db_url=f"sqlite:///{work / 'engine.db'}",
        store_url=str(work / "objects"),
        runtype="prod",
        device="cpu",
        runs_dir=work / "runs",
        sample_interval=2.0,
        save_frames=True,
        executor="local",
        stream=stream,
        batch_frames=pack or None,
        pack_videos=bool(pack) or None,
    )
    lines: list[str] = []
    return _Run(work, run_challenge(settings, challenge, folder, log=lines.append), lines)


@pytest.fixture(scope="module")
def simple(stream_corpus: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> _Run:
    """The reference: the sequential path (``--no-stream``), each video through every stage in turn."""
    return _run(stream_corpus, tmp_path_factory.mktemp("simple"), stream=False)


def _tables(work: Path, loose: bool) -> tuple[dict[str, list[tuple]], dict[tuple, Any]]:
    """Every table as rows to compare (``conftest.db_tables``); with ``loose``, the LOOSE columns apart."""
    return db_tables(work, LOOSE if loose else None)


def _objects(work: Path) -> dict[str, bytes]:
    store = open_object_store(str(work / "objects"))
    return {key: store.get_bytes(key) for key in store.list()}


def _assert_same_run(got: _Run, want: _Run, loose: bool = False) -> None:
    """The same outcomes, summary, log lines, tables and objects; with ``loose`` the LOOSE columns within their
    tolerance, and the crops of the faces whose box or landmarks moved allowed to differ."""
    a, b = got.summary, want.summary
    assert (a.videos_found, a.ok, a.skipped, a.failed) == (9, 6, 1, 2), a.outcomes
    assert [(o.name, o.status, o.sha256, o.message) for o in a.outcomes] == [
        (o.name, o.status, o.sha256, o.message) for o in b.outcomes
    ]  # in the videos' order; the copy is skipped in both
    for key in ("ok", "skipped", "failed", "frames", "faces", "tracks", "prompts", "individuals", "unique_faces"):
        assert getattr(a, key) == getattr(b, key), key
    assert sorted(got.log) == sorted(want.log)
    stages = {"fetch", "hash", "probe", "decode", "detect", "embed", "crops", "logo", "audio", "track", "store", "sql"}
    assert stages <= set(a.stage_seconds) and stages <= set(b.stage_seconds)

    (tables, floats), (want_tables, want_floats) = _tables(got.work, loose), _tables(want.work, loose)
    assert tables.keys() == want_tables.keys()
    for name, rows in want_tables.items():
        missing = [r for r in rows if r not in tables[name]][:2]
        extra = [r for r in tables[name] if r not in rows][:2]
        assert tables[name] == rows, f"{name}: {len(tables[name])} rows vs {len(rows)}; {missing=} {extra=}"
    assert floats.keys() == want_floats.keys()
    moved = set()
    for (table, key, column), value in want_floats.items():
        tolerance = LOOSE[table][column]
        assert np.allclose(floats[table, key, column], value, rtol=0, atol=tolerance), (table, key, column)
        if table == "faces" and column != "embedding" and not np.array_equal(floats[table, key, column], value):
            moved.add(key)
    # The comparison compared something: every kind of row, a covered logo, errors fatal and not.
    for name in ("videos", "frames", "faces", "nofaces", "subvideos", "faces_with_intra_ind", "similarities",
                 "faces_with_final_ind", "unique_faces", "video_errors"):  # fmt: skip
        assert want_tables[name], name
    kinds = {(dict(r)["kind"], dict(r)["fatal"]) for r in want_tables["video_errors"]}
    assert {("not_media", True), ("empty_file", True), ("no_audio", False)} <= kinds, kinds
    assert any(dict(r)["logo_box"] for r in want_tables["videos"])

    objects, want_objects = _objects(got.work), _objects(want.work)
    assert objects.keys() == want_objects.keys()
    allowed = {face_key(*key) for key in moved}
    differ = [k for k in want_objects if objects[k] != want_objects[k]]
    assert set(differ) <= allowed, differ[:3]
    assert sum(k.startswith("faces/") for k in want_objects) == a.faces > 0
    assert sum(k.startswith("frames/") for k in want_objects) == a.frames


def test_streaming_gives_the_same_tables_as_the_sequential_path(
    stream_corpus: tuple[Path, Path], simple: _Run, tmp_path: Path
) -> None:
    """The default on a CPU: the stream runs each video's frames in the batches the sequential path runs (16
    frames from the video's first), so every number is bit-identical."""
    streamed = _run(stream_corpus, tmp_path, stream=True)
    _assert_same_run(streamed, simple)


def test_packed_streaming_gives_the_same_tables_within_float_tolerance(
    stream_corpus: tuple[Path, Path], simple: _Run, tmp_path: Path
) -> None:
    """Model batches of 4 frames packed across videos (the default on a GPU): the same rows, objects and discrete
    results; boxes, scores and descriptors within float tolerance of the one-video batches."""
    packed = _run(stream_corpus, tmp_path, stream=True, pack=4)
    _assert_same_run(packed, simple, loose=True)
