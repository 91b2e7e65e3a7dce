"""Faults of the services a run depends on (issue 16), each made real: the database or the object store goes away
mid-run through a TCP proxy on loopback that the test closes, SQLite's disk fills up, two runs share one
PostgreSQL challenge. Each run ends with one clear line and an exit code that says what happened, and running the
same command again gives the tables of an uninterrupted run: no row lost, none duplicated, no orphaned object.
``make faults`` (``benchmarks/faults.py``) runs the same faults and more, and prints the counts."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import pytest
from conftest import REPO
from sqlalchemy import event, text

sys.path.insert(0, str(REPO / "benchmarks"))
from fault_tools import (  # noqa: E402
    DB_PASSWORD,
    cli,
    count,
    diff,
    finish,
    make_corpus,
    orphans,
    pg_schema,
    run_args,
    secrets_in,
    sqlite_url,
    start,
    table_text,
    tables,
    wait_until,
    with_port,
)
from tcp_proxy import TcpProxy  # noqa: E402

CLIPS = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, hamilton: Path) -> Path:
    return make_corpus(tmp_path_factory.mktemp("faults-corpus"), hamilton, CLIPS)


@pytest.fixture(scope="module")
def reference(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple]]:
    """The tables of one uninterrupted run (SQLite, local objects): what every faulty run must end up with."""
    work = tmp_path_factory.mktemp("faults-reference")
    code, out, err = cli(run_args(corpus, sqlite_url(work), str(work / "objects")), {}, work / "log")
    assert code == 0, err
    want = tables(sqlite_url(work))
    assert len(want["videos"]) == CLIPS and want["faces"] and want["unique_faces"]
    return want


def _one_error_line(err: str) -> str:
    """The run's closing error: one line, no traceback."""
    assert "Traceback" not in err, err
    [line] = [x for x in err.splitlines() if x.startswith("error:")]
    return line


def test_database_lost_mid_run_is_one_line_and_a_rerun_completes_it(
    corpus: Path, reference: dict, tmp_path: Path
) -> None:
    """PostgreSQL goes away after the first committed video: exit 2 and one line (was: a 100-290-line double
    traceback, exit 1); the run's row, left "running", is marked interrupted by the re-run, which completes the
    challenge: every table as after an uninterrupted run, objects all referenced."""
    store = str(tmp_path / "objects")
    with pg_schema() as url:
        proxy = TcpProxy(int(url.split("@127.0.0.1:")[1].split("/")[0]))
        args = run_args(corpus, with_port(url, proxy.port), store)
        proc = start(args, {}, tmp_path / "lost.log")
        committed = wait_until(lambda: count(url, "videos") >= 1, proc)
        proxy.close()
        code, out, err = finish(proc, tmp_path / "lost.log")
        assert committed, f"the run ended before a video was committed: {err}"
        assert code == 2, (code, err)
        line = _one_error_line(err)
        assert "stopped working" in line and "run the same command again" in line and DB_PASSWORD not in line
        assert 1 <= count(url, "videos") < CLIPS

        code, out, err = cli(run_args(corpus, url, store), {}, tmp_path / "again.log")
        assert code == 0, err
        assert "marked interrupted" in err
        with_runs = text("SELECT status FROM runs ORDER BY id")
        from sqlalchemy import create_engine

        engine = create_engine(url)
        with engine.connect() as conn:
            assert [s for (s,) in conn.execute(with_runs)] == ["interrupted", "ok"]
        engine.dispose()
        assert diff(tables(url), reference) == (0, 0)
        assert orphans(url, store) == (0, 0)
        assert secrets_in(out, err, table_text(url)) == 0


def test_sqlite_disk_full_is_one_line(corpus: Path, tmp_path: Path) -> None:
    """SQLite's file cannot grow (``max_page_count``, as a full disk): the run stops with ``StoreLost`` ("database
    or disk is full"), which the CLI shows as one line with exit 2; with room again, the re-run completes."""
    from engine.config import Settings, load_challenge
    from engine.pipeline import run as run_module
    from engine.store import StoreLost

    real_open = run_module.open_stores

    def full_disk(*args: object, **kw: object):  # noqa: ANN202
        db, store = real_open(*args, **kw)
        with db.engine.connect() as conn:
            pages = conn.execute(text("PRAGMA page_count")).scalar()

        @event.listens_for(db.engine, "connect")
        def _cap(dbapi_conn: object, _record: object) -> None:
            dbapi_conn.execute(f"PRAGMA max_page_count={pages + 4}")

        db.engine.dispose()  # every connection from now on has the cap
        return db, store

    challenge = load_challenge(corpus)
    settings = Settings.load(
        challenge.name, db_url=sqlite_url(tmp_path), store_url=str(tmp_path / "objects"), runtype="prod",
        device="cpu", sample_interval=1.0, runs_dir=tmp_path / "runs",
    )  # fmt: skip
    with mock.patch.object(run_module, "open_stores", full_disk), pytest.raises(StoreLost) as lost:
        run_module.run_challenge(settings, challenge, corpus.parent / "videos", log=lambda _: None)
    assert "database or disk is full" in str(lost.value) and "\n" not in str(lost.value)
    summary = run_module.run_challenge(settings, challenge, corpus.parent / "videos", log=lambda _: None)
    assert summary.exit_code == 0 and summary.processed == CLIPS
    assert orphans(sqlite_url(tmp_path), str(tmp_path / "objects")) == (0, 0)


def test_object_store_lost_mid_run_leaves_a_partial_challenge(
    corpus: Path, reference: dict, tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 goes away after the first video: every later video fails to upload, so the challenge is partial: exit 3
    with one line, the run "partial", no individuals computed from the videos that made it (was: exit 0, "ok",
    individuals of 2 of 6 videos). The re-run completes it, and nothing is orphaned in the bucket."""
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "fault", "AWS_SECRET_ACCESS_KEY": "fault-s3-secret-91b2e0",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    bucket = "faults-store"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    store, db = f"s3://{bucket}/run", sqlite_url(tmp_path)
    proxy = TcpProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    proc = start(run_args(corpus, db, store), {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}, tmp_path / "s3")
    committed = wait_until(lambda: count(db, "videos") >= 1, proc)
    proxy.close()
    code, out, err = finish(proc, tmp_path / "s3")
    assert committed, f"the run ended before a video was committed: {err}"
    stored = count(db, "videos")
    assert code == 3, (code, out, err)
    assert stored < CLIPS and f"{CLIPS - stored} video(s) could not be stored" in err and "Traceback" not in err
    assert "not recomputed" in out and count(db, "faces_with_final_ind") == 0 and count(db, "unique_faces") == 0
    from engine.store import Database

    assert Database(db).last_run("faults")["status"] == "partial"

    code, out, err = cli(run_args(corpus, db, store), {}, tmp_path / "again")
    assert code == 0, err
    assert diff(tables(db), reference) == (0, 0)
    assert orphans(db, store) == (0, 0)


def test_two_runs_share_one_postgres_challenge(corpus: Path, reference: dict, tmp_path: Path) -> None:
    """Two ``run`` processes started together on one new PostgreSQL challenge: no table-creation race, no
    duplicate key, no foreign-key violation in the cross-video step (3 of 4 trials before); both exit 0, each
    video is computed once, and the tables are those of one uninterrupted run."""
    store = str(tmp_path / "objects")
    with pg_schema() as url:
        procs = [start(run_args(corpus, url, store), {}, tmp_path / f"run{i}") for i in range(2)]
        results = [finish(p, tmp_path / f"run{i}") for i, p in enumerate(procs)]
        for code, _out, err in results:
            assert code == 0 and "Traceback" not in err, err
        assert diff(tables(url), reference) == (0, 0)
        assert orphans(url, store) == (0, 0)
        taken = sum(int(line.split(" processed")[0].rsplit(" ", 1)[1]) for _, out, _ in results
                    for line in out.splitlines() if line.startswith("this run · videos"))  # fmt: skip
        assert taken == CLIPS, [r[1] for r in results]  # every video computed by exactly one of the two runs
