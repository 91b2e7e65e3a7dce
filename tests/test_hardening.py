"""Issue 16's security items: no password stored or printed, redirects to http(s) only, a webhook's redirect is not
a delivery, the export cannot write outside its folder nor put a formula in a spreadsheet, and inputs that are not
videos (a folder named like one, a sound file) each get their row."""

from __future__ import annotations

import csv
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from sqlalchemy import select
from test_report import A, DictStore, db  # noqa: F401 - db: the fixture the export tests start from

from engine.apps.webhook import post_json
from engine.config import Settings
from engine.redact import redact_mapping, redact_text
from engine.sources import FetchError, SourceItem, fetch, list_sources
from engine.store import Database, redact
from engine.store.schema import Run, Subvideo, Video, VideoError
from engine.tools.export import export_dataset, neutralise_cell, safe_component

SECRET = "hunter2"


# --- redaction ----------------------------------------------------------------------------------------------------
def test_redact_text_masks_the_password_of_every_url() -> None:
    assert redact_text(f"http://user:{SECRET}@h.example/x.mp4") == "http://user:***@h.example/x.mp4"
    assert (
        redact_text(f"postgresql+psycopg://postgres:{SECRET}@db:5432/x")
        == "postgresql+psycopg://postgres:***@db:5432/x"
    )
    assert redact_text(f"https://{SECRET}@github.com/a.mp4") == "https://***@github.com/a.mp4"  # a bare token
    assert redact_text(f"http://u:p@ss:{SECRET}@h/x") == "http://u:***@h/x"  # an unencoded @ in the password
    message = f"cannot download http://a:{SECRET}@h/1.mp4 (then ftp://b:{SECRET}@h/2.mp4): refused"
    assert SECRET not in redact_text(message) and "http://a:***@h/1.mp4" in redact_text(message)
    for plain in ("https://www.tiktok.com/@scout2015/video/67", "/videos/a@b.mp4", "sqlite:///runs/x/engine.db"):
        assert redact_text(plain) == plain  # an @ in a path is not a userinfo
    assert redact(f"postgresql://u:{SECRET}/x@db/name") == "postgresql://u:***@db/name"  # a / in the password
    masked = redact_mapping({"aws_secret_access_key": SECRET, "nested": {"url": f"s3://k:{SECRET}@b/p"}, "n": 3})
    assert SECRET not in json.dumps(masked) and masked["n"] == 3


def test_doctor_shows_no_password_from_an_error() -> None:
    from engine.tools.doctor import _guard

    def fails() -> None:
        raise RuntimeError(f"Could not connect to the endpoint URL: http://key:{SECRET}@127.0.0.1:1/bucket")

    check = _guard("object store", "fix it", fails)
    assert not check.ok and SECRET not in check.found and "http://key:***@127.0.0.1:1/bucket" in check.found


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'e.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    db_ = Database(url).connect()
    yield db_
    db_.dispose()


def test_runs_settings_and_error_rows_hold_no_password(database: Database) -> None:
    settings = Settings.load(
        "c",
        db_url=f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/prod",
        s3_endpoint_url=f"http://AKIAKEY:{SECRET}@127.0.0.1:9000",
        store_url="s3://bucket/prefix",
        resolve=False,
    )
    run_id = database.start_run("c", "prod", "cpu", f"http://u:{SECRET}@h/list.txt", settings.public_dict())
    url = f"http://user:{SECRET}@127.0.0.1:9/x.mp4"
    database.record_error(run_id, url, "fetch", "download_failed", f"cannot download {url}: refused")
    database.monitor_save_video(url, name="x.mp4", status="retry", message=f"cannot download {url}")
    with database.session() as s:
        run = s.scalars(select(Run)).one()
        error = s.scalars(select(VideoError)).one()
        stored = json.dumps([run.settings, run.source, error.source_uri, error.message])
    assert SECRET not in stored and SECRET not in json.dumps(database.monitor_videos(), default=str)
    assert run.settings["db_url"] == "postgresql+psycopg://postgres:***@127.0.0.1:5432/prod"
    assert error.source_uri == "http://user:***@127.0.0.1:9/x.mp4" and list(database.monitor_videos()) == [
        error.source_uri
    ]


# --- redirects ----------------------------------------------------------------------------------------------------
class _Redirects(http.server.SimpleHTTPRequestHandler):
    """Serves its folder; ``/to-ftp.mp4`` redirects to an ftp:// URL (with credentials), ``/hop.mp4`` to
    ``/clip.mp4``, and a POST to ``/hook`` answers 302 to ``/landing``, which answers a GET with 200."""

    gets: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.gets.append(self.path)
        targets = {"/to-ftp.mp4": f"ftp://ftpuser:{SECRET}@127.0.0.1:1/x.mp4", "/hop.mp4": "/clip.mp4"}
        if self.path in targets:
            self.send_response(302)
            self.send_header("Location", targets[self.path])
            self.end_headers()
        elif self.path == "/landing":
            self.send_response(200)
            self.end_headers()
        else:
            super().do_GET()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(302)
        self.send_header("Location", "/landing")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def redirecting(tmp_path: Path, hamilton: Path) -> Iterator[tuple[str, list[str]]]:
    """(base URL, paths requested with GET) of a loopback server with the redirects of :class:`_Redirects`."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(hamilton, root / "clip.mp4")
    gets: list[str] = []
    handler = type("Handler", (_Redirects,), {"gets": gets})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", gets
    server.shutdown()
    server.server_close()


def test_download_redirects_only_to_http(
    redirecting: tuple[str, list[str]], tmp_path: Path, hamilton: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("engine.sources._yt_dlp_command", lambda: None)
    base, _ = redirecting
    path, _ = fetch(SourceItem(f"{base}/hop.mp4", "hop.mp4", "url"), tmp_path / "cache")
    assert path.read_bytes() == hamilton.read_bytes()  # http → http is followed
    with pytest.raises(FetchError, match="only http:// and https:// redirects are followed") as info:
        fetch(SourceItem(f"{base}/to-ftp.mp4", "to-ftp.mp4", "url"), tmp_path / "cache")
    assert "ftp://ftpuser:***@127.0.0.1:1/x.mp4" in str(info.value) and SECRET not in str(info.value)
    assert not list((tmp_path / "cache").glob(".dl-*"))


def test_webhook_redirect_is_not_a_delivery(redirecting: tuple[str, list[str]]) -> None:
    base, gets = redirecting
    result = post_json(f"{base}/hook", {"person": "x"}, attempts=3, sleep=lambda _s: None)
    assert not result.ok and result.attempts == 1
    assert "HTTP 302" in result.error and "redirects to /landing" in result.error
    assert gets == []  # the redirect was not followed as a GET


# --- inputs that are not videos -------------------------------------------------------------------------------------
def test_folder_lists_a_folder_named_like_a_video_and_sound_files(tmp_path: Path, media_dir: Path) -> None:
    (tmp_path / "x.mp4").mkdir()
    shutil.copy(media_dir / "audio_only.m4a", tmp_path / "song.m4a")
    (tmp_path / "notes.txt").write_text("x")
    assert [i.name for i in list_sources(tmp_path)] == ["song.m4a", "x.mp4"]


def test_run_records_each_bad_input_without_a_password(
    tmp_path: Path, media_dir: Path, redirecting: tuple[str, list[str]]
) -> None:
    """A URL with credentials, a redirect to ftp://, a folder named like a video and a sound file: one row each,
    and the password nowhere: not in the output, not in any table, not in the database file's bytes."""
    base, _ = redirecting
    (tmp_path / "x.mp4").mkdir()
    shutil.copy(media_dir / "audio_only.m4a", tmp_path / "song.m4a")
    urls = tmp_path / "urls.txt"
    port = base.rsplit(":", 1)[1]
    urls.write_text(f"http://user:{SECRET}@127.0.0.1:{port}/missing.mp4\n{base}/to-ftp.mp4\nx.mp4\nsong.m4a\n")
    db_url = f"sqlite:///{tmp_path / 'e.db'}"
    res = run_cli("run", "-c", "demo", "--videos", str(urls), "--db", db_url, "--store", str(tmp_path / "o"))
    assert res.returncode == 1, res.stderr  # nothing could be processed
    assert SECRET not in res.stdout + res.stderr
    assert "user:***@127.0.0.1" in res.stdout + res.stderr
    database = Database(db_url)
    with database.session() as s:
        rows = {Path(e.source_uri).name: (e.kind, e.message) for e in s.scalars(select(VideoError))}
    assert rows["missing.mp4"][0] == "download_failed"
    assert rows["to-ftp.mp4"][0] == "download_failed" and "only http:// and https://" in rows["to-ftp.mp4"][1]
    assert rows["x.mp4"] == ("unreadable_path", f"{tmp_path / 'x.mp4'} is a folder, not a video file")
    assert rows["song.m4a"][0] == "no_video_stream" and "audio only" in rows["song.m4a"][1]
    database.dispose()
    assert SECRET.encode() not in (tmp_path / "e.db").read_bytes()


def test_run_keeps_the_frames_of_a_video_with_corrupt_data(tmp_path: Path) -> None:
    """64 KiB of garbage in the middle: the video is stored with every sample that decodes, and a non-fatal
    ``corrupt_frames`` row says how many were lost (it was discarded whole, "decoding frames 0..10 failed")."""
    from test_decode import corrupt_clip

    folder = tmp_path / "videos"
    folder.mkdir()
    corrupt_clip(folder / "corrupt.mp4")
    db_url = f"sqlite:///{tmp_path / 'e.db'}"
    # A faces-only run: the bundled demo's baseline is not in this folder (that alone would exit 2).
    res = run_cli("faces", "--videos", str(folder), "--db", db_url, "--store", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    database = Database(db_url)
    counts = database.counts()
    with database.session() as s:
        errors = [(e.kind, e.fatal, e.message) for e in s.scalars(select(VideoError))]
    database.dispose()
    assert counts["videos"] == 1 and 0 < counts["frames"] < 11
    assert {kind for kind, _, _ in errors} - {"no_audio"} == {"corrupt_frames"} and not any(f for _, f, _ in errors)
    [message] = [m for kind, _, m in errors if kind == "corrupt_frames"]
    assert f"{11 - counts['frames']} of 11 sampled frames could not be decoded" in message
    assert "note   corrupt.mp4: " in res.stdout + res.stderr


# --- export -------------------------------------------------------------------------------------------------------
def test_safe_component_and_neutralised_cells() -> None:
    for name in ("..", ".", "", "../../etc", "a/b", "a\\b", ".hidden", "=1+2", "-x", "+x", "@x", "\tx", "\rx"):
        safe = safe_component(name)
        assert safe not in (".", "..") and not safe.startswith((".", "=", "+", "-", "@", "\t", "\r"))
        assert "/" not in safe and "\\" not in safe
    assert safe_component("smile") == "smile" and safe_component("no_prompt") == "no_prompt"
    assert neutralise_cell("=1+2;cmd.mp4") == "'=1+2;cmd.mp4" and neutralise_cell("-0.5") == "'-0.5"
    assert neutralise_cell("a.mp4") == "a.mp4" and neutralise_cell(-0.5) == -0.5


def test_export_stays_in_its_folder_and_writes_no_formula(db: Database, tmp_path: Path) -> None:  # noqa: F811
    with db.session() as s:
        s.get(Video, A).file_name = "=1+2;cmd.mp4"
        s.add(Subvideo(video_sha256=A, prompt="..", start_s=0.0, end_s=10.0, score=0.9))
    out = tmp_path / "deep" / "out"
    summary = export_dataset(db, DictStore(), "c", out, log=lambda _m: None)
    assert summary.faces > 0 and summary.per_prompt[".."] > 0
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert written and all(p.is_relative_to(out) for p in written), written
    for table in ("labels.csv", "metadata.csv"):
        with (out / table).open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        first = "file" if table == "labels.csv" else "file_name"
        assert all(not r[first].startswith(("..", "/")) and (out / r[first]).is_file() for r in rows)
        for row in rows:
            assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values()), row
        assert {r["video_file"] for r in rows} >= {"'=1+2;cmd.mp4"} and {r["prompt"] for r in rows} >= {".."}


def test_export_refuses_a_link_out_of_its_folder(db: Database, tmp_path: Path) -> None:  # noqa: F811
    """The resolved-path check: a prompt folder that already exists in ``--out`` as a link to elsewhere."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "no_prompt").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="resolves outside"):
        export_dataset(db, DictStore(), "c", out, log=lambda _m: None)
    assert not any(elsewhere.iterdir())
