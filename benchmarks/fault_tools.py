"""What the fault suite (``benchmarks/faults.py``) and ``tests/test_faults.py`` share: a small corpus, runs of the
CLI as a user starts them, throw-away PostgreSQL schemas, and the measures (rows lost or extra against an
uninterrupted run, orphaned objects, secrets found).

Everything talks to loopback only: PostgreSQL on 127.0.0.1 (``ENGINE_TEST_PG``), a moto S3 server started here,
and :class:`tcp_proxy.TcpProxy` in front of either when a fault needs one.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PG_BASE = os.environ.get("ENGINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: The secrets every fault run is given: a database password (the test server trusts loopback, so any password is
#: accepted and the URL carries it as a real one would), the S3 secret key, and a password inside a URL list.
DB_PASSWORD = "Fault-Pw-7f3c1d"
S3_SECRET = "fault-s3-secret-91b2e0"
URL_PASSWORD = "url-pw-4410aa"
SECRETS = (DB_PASSWORD, S3_SECRET, URL_PASSWORD)
#: Runs sample a frame per second (not 0.5 s) to keep the suite short; every run of a comparison uses the same.
RUN_ENV = {"ENGINE_SAMPLE_INTERVAL": "1.0", "ENGINE_RUNTYPE": "prod", "ENGINE_DEVICE": "cpu"}
CLIP_SECONDS = 2.0


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def make_corpus(out: Path, hamilton: Path, n: int = 4) -> Path:
    """``n`` clips of 2 s cut from the Hamilton clip at different places (distinct videos, faces and audio in
    each) in ``out/videos``, and ``out/challenge.toml`` (the Hamilton clip as baseline); returns the TOML."""
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        clip = videos / f"clip{k}.mp4"
        if not clip.exists():
            ffmpeg("-ss", f"{1.0 + 1.7 * k:.1f}", "-i", str(hamilton), "-t", str(CLIP_SECONDS), "-c:v", "libx264",
                   "-preset", "ultrafast", "-c:a", "aac", str(clip))  # fmt: skip
    toml = out / "challenge.toml"
    toml.write_text(
        f'name = "faults"\nbaseline = "{hamilton.resolve()}"\nvideos = "videos"\n\n'
        '[[prompts]]\nname = "opening"\nstart = 0.5\nend = 3.5\n'
    )
    return toml


def sqlite_url(work: Path) -> str:
    return f"sqlite:///{work / 'engine.db'}"


@contextmanager
def pg_schema(password: str | None = DB_PASSWORD) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema (dropped afterwards), with ``password`` in it."""
    from sqlalchemy import create_engine, text

    schema = f"f_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_BASE)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = PG_BASE if password is None else PG_BASE.replace("postgres@", f"postgres:{password}@", 1)
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def with_port(url: str, port: int) -> str:
    """``url`` pointed at ``127.0.0.1:port`` (a proxy in front of the same server)."""
    return re.sub(r"@[^/@]+/", f"@127.0.0.1:{port}/", url, count=1)


def run_args(toml: Path, db: str, store: str, *extra: str) -> list[str]:
    return ["run", "-c", str(toml), "--db", db, "--store", store, "-q", *extra]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``python cli.py ARGS`` in the background, stdout and stderr to ``log`` (and ``log`` + ``.err``)."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "cli.py"), *args],
        env={**os.environ, **RUN_ENV, **env},
        cwd=REPO,
        stdout=open(log, "w"),  # noqa: SIM115 - closed with the process
        stderr=open(f"{log}.err", "w"),  # noqa: SIM115
    )


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> tuple[int, str, str]:
    """Wait for a started run: (exit code, stdout, stderr)."""
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    return code, log.read_text(), Path(f"{log}.err").read_text()


def cli(args: list[str], env: dict[str, str], log: Path, timeout: float = 600) -> tuple[int, str, str]:
    """``python cli.py ARGS`` to the end: (exit code, stdout, stderr)."""
    return finish(start(args, env, log), log, timeout)


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, timeout: float = 300) -> bool:
    """Poll ``ready`` every 50 ms while ``proc`` runs; whether it became true before the process ended."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.05)
    return False


def count(url: str, table: str) -> int:
    """Rows of ``table`` read straight from the database (not through any proxy); 0 while it is not there yet."""
    if url.startswith("sqlite:///"):
        try:
            with sqlite3.connect(f"file:{url[len('sqlite:///') :]}?mode=ro", uri=True, timeout=1) as conn:
                return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.Error:
            return 0
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    finally:
        engine.dispose()


def tables(url: str) -> dict[str, list[tuple]]:
    """Every table but ``runs``, as rows without volatile columns (ids, run ids, timestamps), frame and face ids
    replaced by their natural keys: what two equal runs share (``benchmarks/run_dump.py``'s rule, any backend)."""
    from run_dump import db_tables

    return db_tables(url)[0]


def diff(got: dict[str, list[tuple]], want: dict[str, list[tuple]]) -> tuple[int, int]:
    """(rows lost, rows extra or duplicated) of ``got`` against the uninterrupted ``want``, over every table."""
    lost = extra = 0
    for name in set(got) | set(want):
        a, b = Counter(got.get(name, [])), Counter(want.get(name, []))
        lost += sum((b - a).values())
        extra += sum((a - b).values())
    return lost, extra


def object_keys(store_url: str) -> set[str]:
    from engine.store import open_object_store

    return set(open_object_store(store_url).list())


def referenced_keys(url: str) -> set[str]:
    """Every object key a row points at (videos, face crops, saved frames)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    keys: set[str] = set()
    with engine.connect() as conn:
        for sql in ("SELECT object_key FROM videos", "SELECT crop_key FROM faces", "SELECT object_key FROM frames"):
            keys |= {k for (k,) in conn.execute(text(sql)) if k}
    engine.dispose()
    return keys


def orphans(url: str, store_url: str) -> tuple[int, int]:
    """(objects no row points at, rows whose object is missing)."""
    stored, wanted = object_keys(store_url), referenced_keys(url)
    return len(stored - wanted), len(wanted - stored)


def table_text(url: str) -> str:
    """Every value of every table (``runs`` included) as text, to look for secrets in."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    parts = []
    with engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            parts += [repr(tuple(r)) for r in conn.execute(text(f'SELECT * FROM "{name}"'))]
    engine.dispose()
    return "\n".join(parts)


def secrets_in(*texts: str) -> int:
    """How many times any of :data:`SECRETS` appears in ``texts``."""
    return sum(t.count(secret) for t in texts for secret in SECRETS)


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
    return dest
