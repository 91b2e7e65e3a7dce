"""`cli.py run` end to end as a user runs it: SQLite + folder, PostgreSQL + S3, re-runs, bad input, limits."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from conftest import ffmpeg, run_cli
from sqlalchemy import select

from engine import media
from engine.hashing import sha256_file
from engine.store import Database, open_object_store
from engine.store.schema import Frame, Video, VideoError


def run_demo(videos: object, db: str, store: str, *extra: str, challenge: object = "demo", **kw: object):  # noqa: ANN201
    """`cli.py run -c demo --videos V --db D --store S ...` (``challenge``: another TOML than the bundled demo)."""
    return run_cli("run", "-c", str(challenge), "--videos", str(videos), "--db", db, "--store", store, *extra, **kw)


@pytest.fixture(scope="module")
def demo_toml(tmp_path_factory: pytest.TempPathFactory, hamilton: Path) -> Path:
    """The demo challenge with its baseline where any folder of videos finds it (the bundled one looks for it in
    the --videos folder, and a run whose baseline cannot be read does not exit 0)."""
    toml = tmp_path_factory.mktemp("challenge") / "demo.toml"
    toml.write_text(
        f'name = "demo"\nbaseline = "{hamilton}"\n[[prompts]]\nname = "opening"\nstart = 0.5\nend = 3.5\n'
        '[[prompts]]\nname = "verse"\nstart = 4.0\nend = 8.5\n'
    )
    return toml


def _expected_frames(path: Path) -> int:
    info = media.probe(path).video
    return math.floor((info.end_s - info.start_s) / 0.5) + 1


def _check_shared_run(db_url: str, store_url: str, shared_videos: Path) -> None:
    db = Database(db_url)
    store = open_object_store(store_url)
    videos = sorted(shared_videos.glob("*.mp4"))
    with db.session() as s:
        rows = {v.sha256: v for v in s.scalars(select(Video))}
        assert set(rows) == {sha256_file(p) for p in videos}
        for path in videos:
            v = rows[sha256_file(path)]
            assert v.object_key == f"videos/{v.sha256}.mp4" and path.name not in v.object_key
            assert store.get_bytes(v.object_key) == path.read_bytes()
            frames = s.scalars(select(Frame).where(Frame.video_sha256 == v.sha256)).all()
            assert len(frames) == _expected_frames(path)
            assert {f.frame_index for f in frames} == set(range(len(frames)))
        ham = rows[sha256_file(shared_videos / "short_hamilton_clip.mp4")]
        assert ham.video_start_s == pytest.approx(0.852, abs=1e-3) and ham.has_audio
    errors = {(e.stage, e.kind) for e in _errors(db)}
    assert errors == {("audio", "no_audio")}  # ryan-reynolds.mp4 has no audio: noted, not fatal
    db.dispose()


def _errors(db: Database) -> list[VideoError]:
    with db.session() as s:
        return list(s.scalars(select(VideoError)))


def test_run_defaults_write_under_runs_demo(tmp_path: Path, shared_videos: Path) -> None:
    env = {"ENGINE_DB_URL": "", "ENGINE_STORE_URL": "", "ENGINE_RUNS_DIR": ""}
    res = run_cli(
        "run", "--challenge", "demo", "--videos", str(shared_videos), "--device", "cpu", env=env, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert "videos: 2 found, 2 processed" in res.stdout and "frames sampled: 130" in res.stdout
    assert "ryan-reynolds.mp4: no audio stream" in res.stderr
    db_file = tmp_path / "runs" / "demo" / "engine.db"
    assert db_file.is_file()
    _check_shared_run(f"sqlite:///{db_file}", str(tmp_path / "runs" / "demo" / "objects"), shared_videos)

    before = Database(f"sqlite:///{db_file}").counts()
    again = run_cli("run", "--challenge", "demo", "--videos", str(shared_videos), env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "2 already stored" in again.stdout
    after = Database(f"sqlite:///{db_file}").counts()
    assert {k: v for k, v in after.items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}
    assert after["runs"] == before["runs"] + 1

    forced = run_cli("run", "--challenge", "demo", "--videos", str(shared_videos), "--force", env=env, cwd=tmp_path)
    assert forced.returncode == 0 and "2 processed" in forced.stdout
    assert Database(f"sqlite:///{db_file}").counts()["frames"] == before["frames"]


def test_postgres_and_s3(pg_url: str, bucket: str, shared_videos: Path) -> None:
    """The acceptance command: real PostgreSQL, moto S3 server; credentials/endpoint through boto3's chain."""
    store_url = f"s3://{bucket}/demo-run"
    cli_url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    res = run_demo(str(shared_videos), cli_url, store_url)
    assert res.returncode == 0, res.stderr
    _check_shared_run(pg_url, store_url, shared_videos)
    before = Database(pg_url).counts()
    again = run_demo(str(shared_videos), cli_url, store_url)
    assert again.returncode == 0, again.stderr
    assert {k: v for k, v in Database(pg_url).counts().items() if k != "runs"} == {
        k: v for k, v in before.items() if k != "runs"
    }


def test_save_frames_stores_jpegs(tmp_path: Path, hamilton: Path, demo_toml: Path) -> None:
    res = run_demo(
        str(hamilton), f"sqlite:///{tmp_path}/e.db", str(tmp_path / "obj"), "--save-frames", "-q", challenge=demo_toml
    )
    assert res.returncode == 0, res.stderr
    db = Database(f"sqlite:///{tmp_path}/e.db")
    with db.session() as s:
        keys = [f.object_key for f in s.scalars(select(Frame))]
    assert len(keys) == 19 and all(k.startswith("frames/") for k in keys)
    assert all((tmp_path / "obj" / k).read_bytes()[:2] == b"\xff\xd8" for k in keys)


def test_bad_inputs_are_recorded_and_the_run_goes_on(
    tmp_path: Path, bad_inputs: dict[str, Path], hamilton: Path, demo_toml: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for p in bad_inputs.values():
        dest = folder / p.name
        if p.is_symlink():
            dest.symlink_to(p.readlink())
        else:
            shutil.copy(p, dest)
    shutil.copy(hamilton, folder / "good.mp4")
    db_url = f"sqlite:///{tmp_path}/e.db"
    res = run_demo(folder, db_url, str(tmp_path / "obj"), "--runtype", "prod", challenge=demo_toml)
    assert res.returncode == 0, res.stderr
    assert "7 found, 2 processed" in res.stdout and "5 failed" in res.stdout
    errors = {Path(e.source_uri).name: (e.kind, e.fatal) for e in _errors(Database(db_url))}
    assert errors == {
        "zero_byte.mp4": ("empty_file", True),
        "truncated.mp4": ("not_media", True),
        "text_file.mp4": ("not_media", True),
        "audio_only.mp4": ("no_video_stream", True),
        "unreadable.mp4": ("unreadable_path", True),
        "no_audio.mp4": ("no_audio", False),
    }
    for name in ("zero_byte.mp4", "truncated.mp4", "text_file.mp4", "audio_only.mp4", "unreadable.mp4"):
        assert name in res.stderr  # one line each
    assert Database(db_url).counts()["videos"] == 2

    # Only bad files: nothing could be processed, so the exit code says so.
    (folder / "good.mp4").unlink()
    (folder / "no_audio.mp4").unlink()
    db2, store2 = f"sqlite:///{tmp_path}/e2.db", str(tmp_path / "obj2")
    res = run_demo(folder, db2, store2, "--runtype", "prod", challenge=demo_toml)
    assert res.returncode == 1
    assert "nothing could be processed" in res.stderr


def test_runtype_test_takes_first_four(tmp_path: Path, demo_toml: Path) -> None:
    folder = tmp_path / "five"
    folder.mkdir()
    for i in range(5):
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=96x64:rate=10:duration={1 + i * 0.5}",
            "-pix_fmt",
            "yuv420p",
            str(folder / f"v{i}.mp4"),
        )
    common = ["-c", str(demo_toml), "--videos", str(folder), "--store", str(tmp_path / "obj"), "-q"]
    res = run_cli("run", *common, "--db", f"sqlite:///{tmp_path}/t.db")
    assert res.returncode == 0, res.stderr
    assert "5 found" not in res.stdout and "4 found, 4 processed" in res.stdout
    res = run_cli("run", *common, "--db", f"sqlite:///{tmp_path}/p.db", env={"ENGINE_RUNTYPE": "prod"})
    assert "5 found, 5 processed" in res.stdout
    # v4 lasts 3 s at 10 fps: samples at 0, 0.5, ..., 2.5 (the stream ends at 3.0, its last frame starts at 2.9)
    assert Database(f"sqlite:///{tmp_path}/p.db").counts()["frames"] == sum(
        _expected_frames(folder / f"v{i}.mp4") for i in range(5)
    )


def test_unreachable_stores_fail_fast(tmp_path: Path, hamilton: Path, s3_env: str) -> None:
    res = run_demo(str(hamilton), "postgresql://nobody:pw@127.0.0.1:1/none", str(tmp_path))
    assert res.returncode == 2 and "cannot reach database" in res.stderr and "pw@" not in res.stderr
    res = run_demo(str(hamilton), f"sqlite:///{tmp_path}/e.db", "s3://bucket-that-is-not-there/x")
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = run_demo(str(tmp_path / "nope"), f"sqlite:///{tmp_path}/e.db", str(tmp_path / "o"))
    assert res.returncode == 2 and "not found" in res.stderr


def test_url_list_source_through_the_cli(
    tmp_path: Path, hamilton: Path, http_server: tuple[str, Path], demo_toml: Path
) -> None:
    base, root = http_server
    shutil.copy(hamilton, root / "clip.mp4")
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{base}/clip.mp4\n{base}/missing.mp4\n")
    res = run_demo(
        str(urls),
        f"sqlite:///{tmp_path}/e.db",
        str(tmp_path / "obj"),
        "-q",
        challenge=demo_toml,
        env={"ENGINE_RUNS_DIR": str(tmp_path / "runs")},
    )
    assert res.returncode == 0, res.stderr
    assert "2 found, 1 processed" in res.stdout and "missing.mp4" in res.stderr
    errors = [(e.stage, e.kind) for e in _errors(Database(f"sqlite:///{tmp_path}/e.db"))]
    assert errors == [("fetch", "download_failed")]


def _clip(src: Path, dest: Path, start: float) -> Path:
    """Two seconds of ``src`` from ``start`` (a small, distinct video)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg("-ss", str(start), "-i", str(src), "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", str(dest))
    return dest


def test_summary_shows_this_run_apart_from_the_challenge(tmp_path: Path, hamilton: Path, demo_toml: Path) -> None:
    """A second run that adds one video to a challenge says what it did itself (1 processed) apart from what the
    challenge now holds over both runs (2 videos), as issue 15 asks (a one-video run printed the totals of
    earlier runs as its own)."""
    db, store = f"sqlite:///{tmp_path}/e.db", str(tmp_path / "obj")
    first = run_demo(_clip(hamilton, tmp_path / "a" / "one.mp4", 1.0), db, store, "-q", challenge=demo_toml)
    assert first.returncode == 0, first.stderr
    second = run_demo(_clip(hamilton, tmp_path / "b" / "two.mp4", 5.0), db, store, "-q", challenge=demo_toml)
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    [this_run] = [x for x in lines if x.startswith("this run · videos:")]
    [challenge] = [x for x in lines if x.startswith("challenge demo ·")]
    assert "1 found, 1 processed, 0 already stored" in this_run
    assert "2 videos" in challenge and "individuals: " in challenge and "unique faces: " in challenge


def test_a_baseline_that_cannot_be_read_is_not_exit_0(tmp_path: Path, hamilton: Path) -> None:
    """The bundled demo on a folder without its baseline: every other stage runs, the summary is printed, and the
    run exits 2 with the reason (it printed "cannot read the baseline's audio" and exited 0)."""
    folder = tmp_path / "mine"
    _clip(hamilton, folder / "clip.mp4", 1.0)
    res = run_demo(folder, f"sqlite:///{tmp_path}/e.db", str(tmp_path / "obj"), "-q")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "cannot read the baseline's audio" in res.stderr and "this run · videos: 1 found, 1 processed" in res.stdout
    assert Database(f"sqlite:///{tmp_path}/e.db").last_run("demo")["status"] == "partial"


@pytest.mark.parametrize("verb", ["report", "export"])
def test_report_and_export_of_a_challenge_never_run_say_so(verb: str, tmp_path: Path) -> None:
    """Nothing stored for the challenge in that database: one line saying so and a non-zero exit (report wrote an
    empty page and exited 0)."""
    from engine import api
    from engine.store import NothingStored

    db, store = f"sqlite:///{tmp_path}/e.db", str(tmp_path / "obj")
    with pytest.raises(NothingStored, match="never been run"):
        getattr(api, verb)("demo", tmp_path / "out", db_url=db, store_url=store)
    res = run_cli(verb, "-c", "demo", "--out", str(tmp_path / "out"), "--db", db, "--store", store)
    assert res.returncode != 0 and "never been run" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()
