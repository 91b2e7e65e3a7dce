"""SQL round trips of every model (SQLite and PostgreSQL), idempotent writes, local and S3 object stores."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from engine.store import Database, LocalObjectStore, S3ObjectStore, StoreUnreachable, open_object_store
from engine.store.schema import (
    ALL_MODELS,
    Face,
    FaceFinalInd,
    FaceIntraInd,
    Frame,
    NoFace,
    Run,
    Similarity,
    Subvideo,
    UniqueFace,
    Video,
    VideoError,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


def _video(sha: str, **over: object) -> dict:
    row = dict(
        sha256=sha,
        challenge="demo",
        source_uri=f"/v/{sha[:4]}.mp4",
        file_name=f"{sha[:4]}.mp4",
        object_key=f"videos/{sha}.mp4",
        size_bytes=5_000_000_000,
        width=720,
        height=1280,
        rotation=90.0,
        fps=29.97,
        num_frames=300,
        video_start_s=0.852,
        video_end_s=10.02,
        duration_s=9.17,
        has_audio=True,
        audio_sample_rate=44_100,
        audio_channels=2,
        audio_start_s=0.0,
        sample_interval_s=0.5,
        stages_done=["frames", "ingest"],
        author="someone",
        sound_id="123",
    )
    row.update(over)
    return row


def _frames(n: int) -> list[dict]:
    return [
        dict(frame_index=k, target_s=0.852 + 0.5 * k, pts_s=0.85 + 0.5 * k, width=720, height=1280) for k in range(n)
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    url = f"sqlite:///{tmp_path / 'sub' / 'e.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    database = Database(url).connect()
    yield database
    database.dispose()


def test_every_model_round_trips(db: Database) -> None:
    run_id = db.start_run("demo", "test", "cpu", "/videos", {"x": 1})
    db.write_video(_video(SHA_A, run_id=run_id), _frames(3))
    db.write_video(_video(SHA_B), _frames(1))
    emb = np.linspace(-1, 1, 128, dtype=np.float32)
    with db.session() as s:
        frame = s.scalars(select(Frame).where(Frame.video_sha256 == SHA_A, Frame.frame_index == 1)).one()
        face = Face(
            frame_id=frame.id,
            video_sha256=SHA_A,
            face_index=0,
            pts_s=frame.pts_s,
            x1=1.5,
            y1=2.5,
            x2=100.25,
            y2=120.75,
            score=0.998,
            landmarks=[float(i) for i in range(10)],
            rotation=90,
            crop_key="faces/x.jpg",
            embedding=emb,
        )
        s.add(face)
        s.flush()
        s.add_all(
            [
                Subvideo(video_sha256=SHA_A, prompt="happy", start_s=4.0, end_s=8.5, score=0.91),
                NoFace(frame_id=frame.id + 1, video_sha256=SHA_A, rotations_tried=[0, 90, 270]),
                FaceIntraInd(face_id=face.id, video_sha256=SHA_A, track=0),
                Similarity(video_a=SHA_A, track_a=0, video_b=SHA_B, track_b=2, cosine=0.87),
                FaceFinalInd(face_id=face.id, video_sha256=SHA_A, track=0, individual=7),
                UniqueFace(face_id=face.id, video_sha256=SHA_A, individual=7, phash="8f373714acfcf4d0"),
                VideoError(run_id=run_id, source_uri="/v/bad.mp4", stage="probe", kind="not_media", message="bad"),
            ]
        )
    db.finish_run(run_id, "ok", videos_ok=2, frames=4, stage_seconds={"decode": 1.5})

    with db.session() as s:
        video = s.get(Video, SHA_A)
        assert (video.size_bytes, video.rotation, video.stages_done, video.sound_id) == (
            5_000_000_000,
            90.0,
            ["frames", "ingest"],
            "123",
        )
        assert [
            f.frame_index
            for f in s.scalars(select(Frame).where(Frame.video_sha256 == SHA_A).order_by(Frame.frame_index))
        ] == [0, 1, 2]
        face = s.scalars(select(Face)).one()
        assert face.embedding.dtype == np.float32 and np.array_equal(face.embedding, emb)
        assert face.landmarks == [float(i) for i in range(10)] and face.x2 == 100.25
        assert s.scalars(select(NoFace)).one().rotations_tried == [0, 90, 270]
        assert s.scalars(select(Subvideo)).one().score == pytest.approx(0.91)
        assert s.scalars(select(Similarity)).one().cosine == pytest.approx(0.87)
        assert s.scalars(select(FaceFinalInd)).one().individual == 7
        assert s.scalars(select(UniqueFace)).one().phash == "8f373714acfcf4d0"
        assert s.scalars(select(FaceIntraInd)).one().track == 0
        run = s.get(Run, run_id)
        assert (run.status, run.videos_ok, run.stage_seconds, run.settings) == ("ok", 2, {"decode": 1.5}, {"x": 1})
        assert run.finished_at is not None
    counts = db.counts()
    assert set(counts) == {m.__tablename__ for m in ALL_MODELS}
    assert all(v >= 1 for v in counts.values()), counts


def test_rewriting_a_video_replaces_its_rows(db: Database) -> None:
    db.write_video(_video(SHA_A), _frames(5))
    before = db.counts()
    db.write_video(_video(SHA_A), _frames(5))
    assert db.counts() == before
    db.write_video(_video(SHA_A, width=640), _frames(2))  # a re-run with other results replaces, not appends
    assert db.counts()["frames"] == 2 and db.counts()["videos"] == 1
    assert db.video_stages(SHA_A) == ["frames", "ingest"] and db.video_stages(SHA_B) is None


def test_failed_transaction_leaves_no_half_video(db: Database) -> None:
    bad_frames = _frames(3) + [dict(frame_index=0, target_s=0, pts_s=0, width=1, height=1)]  # duplicate key
    with pytest.raises(Exception):  # noqa: B017 - the backend's IntegrityError
        db.write_video(_video(SHA_A), bad_frames)
    assert db.counts()["videos"] == 0 and db.counts()["frames"] == 0


def test_same_error_is_recorded_once(db: Database) -> None:
    for _ in range(3):
        db.record_error(None, "/v/x.mp4", "probe", "not_media", "x is not a video")
    assert db.counts()["video_errors"] == 1


def test_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(StoreUnreachable, match="cannot reach database"):
        Database("postgresql+psycopg://nobody:secret@127.0.0.1:1/none").connect()
    try:
        Database("postgresql+psycopg://nobody:secret@127.0.0.1:1/none").connect()
    except StoreUnreachable as exc:
        assert "secret" not in str(exc)


def _exercise_store(store) -> None:  # noqa: ANN001
    store.check()
    assert not store.exists("videos/abc.mp4")
    store.put_bytes("videos/abc.mp4", b"\x00\x01video", "video/mp4")
    src = Path(__file__)
    store.put_file("frames/abc/000001.jpg", src)
    assert store.exists("videos/abc.mp4")
    assert store.get_bytes("videos/abc.mp4") == b"\x00\x01video"
    assert store.get_bytes("frames/abc/000001.jpg") == src.read_bytes()
    assert sorted(store.list()) == ["frames/abc/000001.jpg", "videos/abc.mp4"]
    assert list(store.list("frames/")) == ["frames/abc/000001.jpg"]


def test_local_object_store(tmp_path: Path) -> None:
    store = open_object_store(str(tmp_path / "objects"))
    assert isinstance(store, LocalObjectStore)
    _exercise_store(store)
    with pytest.raises(ValueError, match="escapes"):
        store.put_bytes("../outside.txt", b"x")


def test_s3_object_store_against_moto_server(bucket: str, tmp_path: Path) -> None:
    store = open_object_store(f"s3://{bucket}/some/prefix")
    assert isinstance(store, S3ObjectStore)
    _exercise_store(store)
    assert store.download("videos/abc.mp4", tmp_path / "d.mp4").read_bytes() == b"\x00\x01video"
    import boto3

    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["some/prefix/frames/abc/000001.jpg", "some/prefix/videos/abc.mp4"]


def test_missing_bucket_is_one_clear_error(s3_env: str) -> None:
    with pytest.raises(StoreUnreachable, match="does not exist"):
        open_object_store("s3://no-such-bucket-here/x").check()


# ------------------------------------------------------------------------------------------ migrations and locks


def _previous_release_database(url: str, *, older_faces: bool = False) -> None:
    """A database as the engine made it before migrations existed (revision 0001's tables by ``create_all``, no
    revision recorded), with a run, a video and a frame in it; ``older_faces``: from an even older version, whose
    ``faces`` lacked the quality columns and whose ``unique_faces`` had another column."""
    import importlib.util

    from sqlalchemy import Column, Integer, MetaData, create_engine

    spec = importlib.util.spec_from_file_location(
        "baseline", Path(__file__).parent.parent / "engine/store/migrations/versions/0001_baseline.py"
    )
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    meta = MetaData()
    for table in baseline.SNAPSHOT.sorted_tables:
        table.to_metadata(meta)
    if older_faces:
        faces = meta.tables["faces"]
        for name in ("quality", "yaw", "embedder"):
            faces._columns.remove(faces.columns[name])
        meta.tables["unique_faces"].append_column(Column("legacy", Integer, nullable=True))
    engine = create_engine(url)
    meta.create_all(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(meta.tables["runs"].insert().values(
            id=1, challenge="demo", runtype="test", device="cpu", source="/v", settings={}, status="ok",
            started_at=now, videos_ok=1, videos_skipped=0, videos_failed=0, frames=1, stage_seconds={},
        ))  # fmt: skip
        conn.execute(meta.tables["videos"].insert().values(**{**_video(SHA_A), "run_id": 1, "ingested_at": now}))
        conn.execute(meta.tables["frames"].insert().values(video_sha256=SHA_A, **_frames(1)[0]))
    engine.dispose()


@pytest.mark.parametrize("older_faces", [False, True])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_of_the_previous_schema_is_upgraded_in_place(
    backend: str, older_faces: bool, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Revision 0001 adopts what an older version made (its rows kept, ``faces`` columns added, a changed
    challenge-wide table rebuilt), then 0002 adds the run's process columns and 0003 the faces' descriptor magnitude;
    connecting again changes nothing."""
    from sqlalchemy import inspect, text

    from engine.store.migrations import head

    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    _previous_release_database(url, older_faces=older_faces)
    db = Database(url).connect()
    try:
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head() == "0003"
            columns = {t: {c["name"] for c in inspect(conn).get_columns(t)} for t in ("faces", "runs", "unique_faces")}
        assert {"quality", "yaw", "embedder", "magnitude"} <= columns["faces"]
        assert {"host", "pid", "message"} <= columns["runs"]
        assert "legacy" not in columns["unique_faces"]
        assert db.counts()["videos"] == 1 and db.counts()["frames"] == 1 and db.last_run("demo")["status"] == "ok"
        db.write_video(_video(SHA_B), _frames(2))  # the upgraded tables take new rows
        db.connect()
        assert db.counts()["frames"] == 3
    finally:
        db.dispose()


def test_concurrent_first_connects_create_the_tables_once(pg_url: str) -> None:
    """Six processes migrating one new PostgreSQL schema at once: no "duplicate key ... pg_type_typname_nsp_index"
    race and no deadlock (the upgrade runs under an advisory lock); one revision recorded."""
    import subprocess
    import sys

    from sqlalchemy import text

    code = f"from engine.store import Database; Database({pg_url!r}).connect().dispose()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
        for _ in range(6)
    ]
    try:
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(rc == 0 for rc, _ in results), [err for _, err in results]
    db = Database(pg_url)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    db.dispose()


def test_a_running_row_is_interrupted_only_when_its_process_is_gone(db: Database) -> None:
    """The next run marks a "running" row interrupted when its run is gone (its PostgreSQL lock free, or on SQLite
    its process dead), and leaves a run that is still going alone (two runs at once)."""
    from sqlalchemy import update

    dead = db.start_run("demo", "test", "cpu", "/v", {})
    alive = db.start_run("demo", "test", "cpu", "/v", {})
    other = Database(db.url).connect()  # the live run holds its lock from another connection (another process)
    other.hold_run(alive)
    with db.session() as s:
        s.execute(update(Run).where(Run.id == dead).values(pid=99_999_999))  # no such process
    me = db.start_run("demo", "test", "cpu", "/v", {})
    try:
        assert db.mark_runs_interrupted("demo", me) == 1
        status = {r.id: r.status for r in _runs(db)}
        assert status[dead] == "interrupted" and status[alive] == "running"
    finally:
        other.release_locks()
        other.dispose()


def _runs(db: Database) -> list[Run]:
    with db.session() as s:
        return list(s.scalars(select(Run)))


def test_store_lost_is_one_line(tmp_path: Path) -> None:
    """A database that fails under a session (here: its file made unwritable-sized) raises ``StoreLost`` with the
    driver's own first line, the URL's password masked, never SQLAlchemy's page of SQL."""
    from sqlalchemy import event, text

    from engine.store import StoreLost

    db = Database(f"sqlite:///{tmp_path / 'e.db'}").connect()
    with db.engine.connect() as conn:
        pages = conn.execute(text("PRAGMA page_count")).scalar()

    @event.listens_for(db.engine, "connect")
    def _cap(dbapi_conn: object, _record: object) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count={pages}")

    db.engine.dispose()
    with pytest.raises(StoreLost, match="database or disk is full") as lost:
        db.write_video(_video(SHA_A), _frames(400))
    assert "\n" not in str(lost.value) and "INSERT" not in str(lost.value)
    db.dispose()
