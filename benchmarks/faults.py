"""The fault suite (``make faults``, issue 16): bad inputs, ``kill -9`` at several moments, the database and the
object store lost mid-run, SQLite's disk full, and two runs at once on one PostgreSQL challenge; then one table.

Each fault is made real: a process killed with SIGKILL, PostgreSQL and a moto S3 server behind a TCP proxy on
loopback that is closed mid-run (``tcp_proxy.py``), SQLite capped with ``max_page_count``. After each fault the same
command is run again, and its tables are compared with one uninterrupted run of the same corpus. Printed: inputs
tried / handled, rows lost, rows duplicated (or extra), orphaned objects after the re-run, and secrets (the test's
database password, S3 secret key and URL password) found in any log line or table. The target: every input handled,
0 lost, 0 duplicated, 0 orphans, 0 secrets; the exit code is 1 when one is missed.

Usage: ``python benchmarks/faults.py [--out runs/faults] [--clips 4]`` (needs ``../shared`` or
``ENGINE_SHARED_DATA``, PostgreSQL on 127.0.0.1 (``ENGINE_TEST_PG``) and FFmpeg; about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import http.server
import logging
import os
import random
import shutil
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from fault_tools import (
    REPO,
    S3_SECRET,
    URL_PASSWORD,
    cli,
    count,
    diff,
    ffmpeg,
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
from tcp_proxy import TcpProxy


@dataclass
class Outcome:
    """One scenario: whether it behaved (exit codes, one line, no traceback) and what its re-run left."""

    name: str
    ok: bool
    detail: str
    lost: int = 0
    extra: int = 0
    orphans: int = 0
    secrets: int = 0
    tried: int = 0
    handled: int = 0
    seconds: float = 0.0


class Suite:
    """The corpus, the services and the reference every scenario compares with."""

    def __init__(self, out: Path, clips: int, hamilton: Path) -> None:
        self.out, self.clips, self.hamilton = out, clips, hamilton
        self.toml = make_corpus(out / "corpus", hamilton, clips)
        self.texts: list[str] = []  # every log line and table seen, searched for secrets at the end
        from moto.server import ThreadedMotoServer

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.s3_port = s.getsockname()[1]
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.s3_port, verbose=False)
        self.moto.start()
        os.environ.update(AWS_ACCESS_KEY_ID="fault", AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_DEFAULT_REGION="us-east-1",
                          AWS_ENDPOINT_URL=f"http://127.0.0.1:{self.s3_port}")  # fmt: skip
        self.reference = self._reference()

    def work(self, name: str) -> Path:
        path = self.out / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def bucket(self, name: str) -> str:
        import boto3

        bucket = f"{name}-{random.Random(name).randrange(1 << 30):x}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        return f"s3://{bucket}/objects"

    def run(self, db: str, store: str, log: Path, env: dict | None = None) -> tuple[int, str, str]:
        code, out, err = cli(run_args(self.toml, db, store), env or {}, log)
        self.texts += [out, err]
        return code, out, err

    def _reference(self) -> dict:
        work = self.work("reference")
        code, _, err = self.run(sqlite_url(work), str(work / "objects"), work / "log")
        assert code == 0, f"the uninterrupted run failed: {err}"
        with sqlite3.connect(work / "engine.db") as conn:
            self.full_pages = conn.execute("PRAGMA page_count").fetchone()[0]  # what the whole corpus takes
        return tables(sqlite_url(work))

    def compared(self, outcome: Outcome, db: str, store: str) -> Outcome:
        """Fill in what the scenario's final tables and objects hold against the reference."""
        outcome.lost, outcome.extra = diff(tables(db), self.reference)
        stray, missing = orphans(db, store)
        outcome.orphans = stray
        outcome.lost += missing  # a row whose object is gone lost its data
        self.texts.append(table_text(db))
        return outcome


def kill_at(suite: Suite, name: str, moment: Callable[[str], bool], postgres: bool = False) -> Outcome:
    """Start a run, SIGKILL it at ``moment`` (a test on the database), then run the same command again."""
    work = suite.work(name)
    with pg_schema() if postgres else _nothing(sqlite_url(work)) as db:
        store = suite.bucket(name) if postgres else str(work / "objects")
        proc = start(run_args(suite.toml, db, store), {}, work / "killed")
        reached = wait_until(lambda: moment(db), proc)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        finish(proc, work / "killed")
        code, out, err = suite.run(db, store, work / "again")
        ok = reached and code == 0 and "Traceback" not in err
        detail = f"killed {'at the moment' if reached else 'too late'}; re-run exit {code}"
        return suite.compared(Outcome(name, ok, detail), db, store)


class _nothing:
    """``with _nothing(x) as x``: a value that needs no setting up (beside ``pg_schema``)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __enter__(self) -> str:
        return self.value

    def __exit__(self, *exc: object) -> None:
        pass


def database_lost(suite: Suite) -> Outcome:
    """PostgreSQL behind a proxy closed after the first committed video: exit 2 and one line; then the re-run."""
    work = suite.work("database-lost")
    store = str(work / "objects")
    with pg_schema() as db:
        proxy = TcpProxy(int(db.split("@127.0.0.1:")[1].split("/")[0]))
        proc = start(run_args(suite.toml, with_port(db, proxy.port), store), {}, work / "lost")
        reached = wait_until(lambda: count(db, "videos") >= 1, proc)
        proxy.close()
        code, out, err = finish(proc, work / "lost")
        suite.texts += [out, err]
        one_line = "Traceback" not in err and sum(line.startswith("error:") for line in err.splitlines()) == 1
        again, _, err2 = suite.run(db, store, work / "again")
        ok = reached and code == 2 and one_line and again == 0 and "marked interrupted" in err2
        detail = f"exit {code}, {'one line' if one_line else 'NOT one line'}; re-run exit {again}"
        return suite.compared(Outcome("database lost mid-run (PostgreSQL)", ok, detail), db, store)


def disk_full(suite: Suite) -> Outcome:
    """SQLite that cannot grow to half of what the corpus needs (``max_page_count``): ``StoreLost``, one line, after
    some commits; then the re-run with room again. In this process, since the cap is set on the engine's own
    connections."""
    from sqlalchemy import event, text

    from engine.config import Settings, load_challenge
    from engine.pipeline import run as run_module
    from engine.store import StoreLost

    work = suite.work("disk-full")
    real_open = run_module.open_stores

    def capped(*args: object, **kw: object):  # noqa: ANN202
        db, store = real_open(*args, **kw)
        with db.engine.connect() as conn:
            pages = conn.execute(text("PRAGMA page_count")).scalar()
        cap = pages + max(1, (suite.full_pages - pages) // 2)
        event.listen(db.engine, "connect", lambda c, _r: c.execute(f"PRAGMA max_page_count={cap}"))
        db.engine.dispose()
        return db, store

    challenge = load_challenge(suite.toml)
    settings = Settings.load(
        challenge.name, db_url=sqlite_url(work), store_url=str(work / "objects"), runtype="prod", device="cpu",
        sample_interval=1.0, runs_dir=work / "runs",
    )  # fmt: skip
    message = ""
    with mock.patch.object(run_module, "open_stores", capped):
        try:
            run_module.run_challenge(settings, challenge, suite.toml.parent / "videos", log=lambda _: None)
        except StoreLost as exc:
            message = str(exc)
    again = run_module.run_challenge(settings, challenge, suite.toml.parent / "videos", log=lambda _: None)
    ok = "database or disk is full" in message and "\n" not in message and again.exit_code == 0
    detail = f"{'StoreLost, one line' if message else 'NO error'}; re-run exit {again.exit_code}"
    return suite.compared(Outcome("disk full (SQLite)", ok, detail), sqlite_url(work), str(work / "objects"))


def store_lost(suite: Suite) -> Outcome:
    """The S3 server behind a proxy closed after the first video: exit 3, partial, no grouping; then the re-run."""
    work = suite.work("store-lost")
    db, store = sqlite_url(work), suite.bucket("store-lost")
    proxy = TcpProxy(suite.s3_port)
    proc = start(run_args(suite.toml, db, store), {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}, work / "l")
    reached = wait_until(lambda: count(db, "videos") >= 1, proc)
    proxy.close()
    code, out, err = finish(proc, work / "l")
    suite.texts += [out, err]
    grouped = count(db, "faces_with_final_ind")
    again, _, _ = suite.run(db, store, work / "again")
    ok = reached and code == 3 and grouped == 0 and "Traceback" not in err and again == 0
    detail = f"exit {code}, {'not grouped' if not grouped else 'GROUPED a partial challenge'}; re-run exit {again}"
    return suite.compared(Outcome("object store lost mid-run (S3)", ok, detail), db, store)


def concurrent(suite: Suite, trial: int) -> Outcome:
    """Two runs started together on one new PostgreSQL challenge."""
    work = suite.work(f"concurrent-{trial}")
    store = str(work / "objects")
    with pg_schema() as db:
        procs = [start(run_args(suite.toml, db, store), {}, work / f"run{i}") for i in range(2)]
        results = [finish(p, work / f"run{i}") for i, p in enumerate(procs)]
        for _, out, err in results:
            suite.texts += [out, err]
        ok = all(code == 0 and "Traceback" not in err for code, _, err in results)
        detail = "exits " + ", ".join(str(code) for code, _, _ in results)
        return suite.compared(Outcome(f"two runs at once (PostgreSQL), trial {trial}", ok, detail), db, store)


def bad_inputs(suite: Suite) -> Outcome:
    """Every kind of bad input beside good ones, from a folder and from a URL list; handled: the run ends without a
    traceback, and each input is stored or has its ``video_errors`` row (a failed one also its line on stderr)."""
    from engine.store import Database

    work = suite.work("bad-inputs")
    folder = work / "in"
    names = make_bad_inputs(folder, suite.hamilton)
    server, base = _http_server(folder)
    urls = work / "urls.txt"
    port = base.rsplit(":", 1)[1]
    listed = {f"http://user:{URL_PASSWORD}@127.0.0.1:{port}/missing.mp4": "missing.mp4",
              f"{base}/redirect-ftp.mp4": "redirect-ftp.mp4", f"{base}/good.mp4": "good.mp4"}  # fmt: skip
    urls.write_text("".join(f"{u}\n" for u in listed))
    handled = tried = 0
    try:
        for source, inputs in ((folder, names), (urls, list(listed.values()))):
            db = sqlite_url(work / source.stem)
            code, out, err = cli(run_args(suite.toml, db, str(work / source.stem / "o"), "--videos", str(source)),
                                 {}, work / f"{source.stem}.log")  # fmt: skip
            suite.texts += [out, err, table_text(db)]
            database = Database(db)
            with database.session() as s:
                from sqlalchemy import select

                from engine.store.schema import Video, VideoError

                seen = {Path(v.source_uri).name for v in s.scalars(select(Video))}
                failed = {Path(e.source_uri).name for e in s.scalars(select(VideoError)) if e.fatal}
            database.dispose()
            clean = code in (0, 1) and "Traceback" not in err
            for name in inputs:
                tried += 1
                handled += clean and (name in seen or (name in failed and name in err))
    finally:
        server.shutdown()
    return Outcome("bad inputs", handled == tried, f"{handled} of {tried} handled", tried=tried, handled=handled)


def make_bad_inputs(folder: Path, hamilton: Path) -> list[str]:
    """The bad-input corpus (seeded), with two good videos; returns the names a run lists."""
    folder.mkdir(parents=True)
    rng = random.Random(16)
    ffmpeg("-ss", "1", "-i", str(hamilton), "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
           str(folder / "good.mp4"))  # fmt: skip
    data = (folder / "good.mp4").read_bytes()
    (folder / "zero_byte.mp4").write_bytes(b"")
    (folder / "truncated.mp4").write_bytes(hamilton.read_bytes()[:300_000])
    (folder / "text_file.mp4").write_text("this is a text file, not a video\n")
    (folder / "random1.mp4").write_bytes(rng.randbytes(200_000))
    (folder / "random2.mp4").write_bytes(b"\x00\x00\x00\x20ftypisom" + rng.randbytes(100_000))
    middle = len(data) // 2
    (folder / "corrupt_middle.mp4").write_bytes(data[:middle] + rng.randbytes(65_536) + data[middle + 65_536 :])
    ffmpeg("-i", str(folder / "good.mp4"), "-an", "-c:v", "copy", str(folder / "no_audio.mp4"))
    ffmpeg("-i", str(hamilton), "-vn", "-c:a", "copy", "-f", "mp4", str(folder / "audio_only.mp4"))
    shutil.copy(folder / "audio_only.mp4", folder / "song.m4a")
    (folder / "unreadable.mp4").symlink_to(folder / "does-not-exist" / "gone.mp4")
    (folder / "folder.mp4").mkdir()
    return sorted(p.name for p in folder.iterdir())


def _http_server(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Loopback HTTP serving ``root``, with ``/redirect-ftp.mp4`` answering a redirect to ``ftp://``."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, directory=str(root), **kw)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/redirect-ftp"):
                self.send_response(302)
                self.send_header("Location", "ftp://127.0.0.1/x.mp4")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def scenarios(suite: Suite) -> list[tuple[str, Callable[[], Outcome]]]:
    n = suite.clips
    return [
        ("bad inputs", lambda: bad_inputs(suite)),
        ("kill -9 after the run starts", lambda: kill_at(suite, "kill-start", lambda db: count(db, "runs") >= 1)),
        ("kill -9 after 1 video", lambda: kill_at(suite, "kill-1", lambda db: count(db, "videos") >= 1)),
        ("kill -9 mid-run", lambda: kill_at(suite, "kill-mid", lambda db: count(db, "videos") >= n // 2 + 1)),
        ("kill -9 in the cross-video step", lambda: kill_at(suite, "kill-end", lambda db: count(db, "videos") >= n)),
        ("kill -9 after 1 video (PostgreSQL + S3)",
         lambda: kill_at(suite, "kill-pg", lambda db: count(db, "videos") >= 1, postgres=True)),
        ("database lost", lambda: database_lost(suite)),
        ("disk full", lambda: disk_full(suite)),
        ("object store lost", lambda: store_lost(suite)),
        ("two runs at once, 1", lambda: concurrent(suite, 1)),
        ("two runs at once, 2", lambda: concurrent(suite, 2)),
    ]  # fmt: skip


def report(outcomes: list[Outcome], secrets: int) -> bool:
    """Print the table and the totals; whether every target was met."""
    print(f"\n{'scenario':<44} {'ok':<4} {'lost':>5} {'extra':>6} {'orphans':>8} {'s':>6}  detail")
    for o in outcomes:
        print(f"{o.name:<44} {'yes' if o.ok else 'NO':<4} {o.lost:>5} {o.extra:>6} {o.orphans:>8} {o.seconds:>6.0f}  "
              f"{o.detail}")  # fmt: skip
    tried, handled = sum(o.tried for o in outcomes), sum(o.handled for o in outcomes)
    lost, extra = sum(o.lost for o in outcomes), sum(o.extra for o in outcomes)
    stray = sum(o.orphans for o in outcomes)
    print(
        f"\ninputs tried / handled: {tried} / {handled} · rows lost: {lost} · rows duplicated: {extra} · "
        f"orphaned objects after re-run: {stray} · secrets found in logs and tables: {secrets}"
    )
    met = all(o.ok for o in outcomes) and tried == handled and not (lost or extra or stray or secrets)
    print("every target met" if met else "TARGET MISSED")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "faults")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    args = parser.parse_args()
    shared = Path(os.environ.get("ENGINE_SHARED_DATA") or REPO.parent / "shared" / "data")
    suite = Suite(args.out.resolve(), args.clips, shared / "videos" / "short_hamilton_clip.mp4")
    outcomes = []
    try:
        for name, scenario in scenarios(suite):
            if args.only and args.only not in name:
                continue
            t0 = time.perf_counter()
            outcome = scenario()
            outcome.seconds, outcome.name = time.perf_counter() - t0, name
            print(f"{name}: {'ok' if outcome.ok else 'FAILED'} ({outcome.detail})", flush=True)
            outcomes.append(outcome)
    finally:
        suite.moto.stop()
    return 0 if report(outcomes, secrets_in(*suite.texts)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
