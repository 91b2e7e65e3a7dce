"""Shared fixtures: the real media in ../shared/data, a throw-away PostgreSQL schema, a moto S3 server."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Collection, Iterator, Mapping
from functools import partial
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# As `make test` does: weights come from the shared mirror when it is beside the repo.
if (REPO.parent / "shared" / "weights").is_dir():
    os.environ.setdefault("ENGINE_WEIGHTS_MIRROR", str(REPO.parent / "shared" / "weights"))
PG_BASE = os.environ.get("ENGINE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("ENGINE_SHARED_DATA") or REPO.parent / "shared" / "data")
    if not (path / "videos").is_dir():
        pytest.fail(f"shared test data not found at {path}: put ../shared beside the repo or set ENGINE_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def shared_videos(shared_data: Path) -> Path:
    return shared_data / "videos"


@pytest.fixture(scope="session")
def hamilton(shared_videos: Path) -> Path:
    return shared_videos / "short_hamilton_clip.mp4"


@pytest.fixture(scope="session")
def ryan(shared_videos: Path) -> Path:
    return shared_videos / "ryan-reynolds.mp4"


def ffmpeg(*args: str) -> None:
    """Run FFmpeg quietly (it is installed by `make setup`); used to build small test media."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory, hamilton: Path) -> Path:
    """Small derived media: a rotated clip, an audio-only file, a clip without audio."""
    d = tmp_path_factory.mktemp("media")
    ffmpeg("-i", str(hamilton), "-t", "2", "-c", "copy", "-metadata:s:v:0", "rotate=90", str(d / "rotated.mp4"))
    ffmpeg("-i", str(hamilton), "-t", "2", "-c", "copy", str(d / "plain2s.mp4"))
    ffmpeg("-i", str(hamilton), "-vn", "-c:a", "copy", str(d / "audio_only.m4a"))
    ffmpeg("-i", str(hamilton), "-t", "2", "-an", "-c:v", "copy", str(d / "no_audio.mp4"))
    return d


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, hamilton: Path, media_dir: Path) -> dict[str, Path]:
    """One file per kind of bad input the engine must survive, in a folder of its own."""
    d = tmp_path_factory.mktemp("bad")
    (d / "zero_byte.mp4").write_bytes(b"")
    (d / "truncated.mp4").write_bytes(hamilton.read_bytes()[:300_000])  # moov atom at the end: cut off
    (d / "text_file.mp4").write_text("this is a text file, not a video\n")
    shutil.copy(media_dir / "no_audio.mp4", d / "no_audio.mp4")
    shutil.copy(media_dir / "audio_only.m4a", d / "audio_only.mp4")
    (d / "unreadable.mp4").symlink_to(d / "does-not-exist" / "gone.mp4")
    return {p.stem: p for p in d.iterdir()}


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_BASE)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_BASE} is not reachable: {exc}")
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback (server mode: real HTTP, so subprocesses can use it too)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3's normal chain pointed at the moto server: credentials and endpoint from the environment."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    return s3_endpoint


@pytest.fixture
def bucket(s3_env: str) -> str:
    import boto3

    name = f"b-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static HTTP server on loopback serving a temp folder: (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run `python cli.py ...` as a user would, in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
    )


def synthetic_corpus(out: Path, **kwargs: object) -> Path:
    """``benchmarks/make_corpus.build_corpus(out, **kwargs)`` on the shared media: a small challenge with exact prompt
    ground truth; returns its ``challenge.toml`` (its videos are in ``out/videos``)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from make_corpus import build_corpus

    return build_corpus(out, **kwargs)


def db_tables(
    work: Path, apart: Mapping[str, Collection[str]] | None = None
) -> tuple[dict[str, list[tuple]], dict[tuple, object]]:
    """A run's tables for comparing runs (``benchmarks/run_dump.db_tables``: the same dump the layout check uses)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from run_dump import db_tables as dump

    return dump(work, apart)
