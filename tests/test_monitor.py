"""The watch-list monitor: settle rule, webhook back-off, matching, dedup across names and restarts, bad files, CLI.

Real media only: the Hamilton clip (the singer is Lin-Manuel Miranda) and a 3 s cut of the Ryan Reynolds face crops;
Biden is the watched person who appears in neither. Who a track is, is decided by ``engine.apps.identify`` (the rule
search uses), tested here on the labelled Friends clip too.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from conftest import REPO, ffmpeg, free_port, run_cli

from engine.apps.identify import rule_for
from engine.apps.monitor import Monitor
from engine.apps.monitor_match import alert_payload, faces_in_video, nearest_faces, watched_people
from engine.apps.monitor_source import check_source, is_settled
from engine.apps.people import People, PeopleError, load_people
from engine.apps.webhook import post_json
from engine.config import Settings, resolve_device
from engine.faces.batching import FaceModels
from engine.hashing import sha256_file
from engine.store import Database, StoreUnreachable
from engine.store.objects import alert_key
from engine.types import Faces, VideoFaces

LIN, BIDEN, RYAN = "lin-manuel-miranda", "biden", "ryan-reynolds-reference"
MONITOR_TEST = "monitor"


# --- fixtures -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels.load(resolve_device("auto"))


@pytest.fixture(scope="module")
def faces_dir(shared_data: Path) -> Path:
    return shared_data / "faces"


@pytest.fixture(scope="module")
def people(faces_dir: Path, models: FaceModels) -> People:
    return load_people(
        [faces_dir / "lin-manuel-miranda.png", faces_dir / "biden.jpg", faces_dir / "ryan-reynolds-reference.jpg"],
        models,
    )


@pytest.fixture(scope="module")
def ryan_cut(tmp_path_factory: pytest.TempPathFactory, ryan: Path) -> Path:
    """The first 3 s of the Ryan Reynolds clip, where his face is 0.48 from the reference photo."""
    out = tmp_path_factory.mktemp("ryan") / "ryan3s.mp4"
    ffmpeg("-i", str(ryan), "-t", "3", "-an", "-c:v", "libx264", "-preset", "ultrafast", str(out))
    return out


def _settings(tmp_path: Path) -> Settings:
    return Settings.load(
        MONITOR_TEST,
        db_url=f"sqlite:///{tmp_path / 'monitor.db'}",
        store_url=str(tmp_path / "objects"),
        runs_dir=tmp_path,
    )


class Hook:
    """What a webhook receiver saw: one (status answered, JSON payload, content type) per request."""

    def __init__(self, fail_first: int, status: int) -> None:
        self.fail_first = fail_first
        self.status = status
        self.requests: list[tuple[int, dict, str | None]] = []
        self.lock = threading.Lock()
        self.url = ""

    @property
    def accepted(self) -> list[dict]:
        return [payload for status, payload, _ in self.requests if status == 200]


@pytest.fixture
def webhook() -> Iterator[Callable[..., Hook]]:
    """Start a receiver on loopback that answers ``status`` to its first ``fail_first`` requests, then 200."""
    servers = []

    def start(fail_first: int = 0, status: int = 500) -> Hook:
        hook = Hook(fail_first, status)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    status = hook.status if len(hook.requests) < hook.fail_first else 200
                    hook.requests.append((status, json.loads(body), self.headers.get("Content-Type")))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        hook.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
        return hook

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


# --- units ------------------------------------------------------------------------------------------------------------
def test_settle_rule() -> None:
    now = 1_000_000.0
    ns = lambda t: int(t * 1e9)  # noqa: E731
    # Written 0.5 s ago and never listed before: too young.
    assert not is_settled((10, ns(now - 0.5)), None, 0.0, now, 5.0)
    # Old when first listed (a finished copy, a restart): taken at once.
    assert is_settled((10, ns(now - 60)), None, 0.0, now, 5.0)
    # Old mtime but grew since the previous listing (a writer that preserves timestamps): wait.
    assert not is_settled((20, ns(now - 60)), (10, ns(now - 60)), 0.0, now, 5.0)
    # Unchanged since the previous listing and old enough: taken.
    assert is_settled((20, ns(now - 6)), (20, ns(now - 6)), 1.0, now, 5.0)
    # mtime in the future (a server clock ahead of ours): taken once we have seen it unchanged for the settle time.
    future = (20, ns(now + 3600))
    assert not is_settled(future, future, 4.0, now, 5.0)
    assert is_settled(future, future, 5.0, now, 5.0)


def test_post_json_backs_off_then_delivers(webhook: Callable[..., Hook]) -> None:
    hook = webhook(2)
    slept: list[float] = []
    result = post_json(hook.url, {"person": "x"}, attempts=5, base_delay_s=0.5, sleep=slept.append)
    assert result.ok and result.attempts == 3
    assert slept == [0.5, 1.0]  # exponential: base, then twice the base
    assert [status for status, _, _ in hook.requests] == [500, 500, 200]
    assert all(p == {"person": "x"} and ctype == "application/json" for _, p, ctype in hook.requests)


def test_post_json_gives_up_after_bounded_attempts() -> None:
    slept: list[float] = []
    closed = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    result = post_json(closed, {"a": 1}, attempts=4, base_delay_s=0.01, sleep=slept.append)
    assert not result.ok and result.attempts == 4
    assert slept == [0.01, 0.02, 0.04]
    assert "refused" in (result.error or "").lower()


def test_post_json_repeats_429_but_not_other_client_errors(webhook: Callable[..., Hook]) -> None:
    slept: list[float] = []
    refused = webhook(1, 404)
    result = post_json(refused.url, {"a": 1}, attempts=4, base_delay_s=0.01, sleep=slept.append)
    assert not result.ok and result.attempts == 1 and "404" in (result.error or "") and slept == []
    busy = webhook(1, 429)
    assert post_json(busy.url, {"a": 1}, attempts=4, base_delay_s=0.01, sleep=slept.append).attempts == 2


def test_nearest_faces_takes_each_persons_best_face() -> None:
    people = People(["a", "b", "a"], ["a1", "b", "a2"], torch.eye(3, 128))
    faces = torch.zeros(3, 128)
    faces[0, 1] = 1.0  # exactly b
    faces[1, 2] = 0.9  # 0.1 from a's second photo
    faces[2, 0] = 0.5  # 0.5 from a's first photo
    found = VideoFaces(
        faces=Faces(
            frame_index=torch.tensor([0, 1, 2]),
            face_index=torch.zeros(3, dtype=torch.int64),
            pts_s=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
            boxes=torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 12, 12]], dtype=torch.float32),
            scores=torch.ones(3),
            landmarks=torch.zeros(3, 10),
            rotation=torch.zeros(3, dtype=torch.int64),
            embedding=faces,
        )
    )
    best = {m.person: m for m in nearest_faces(found, people)}
    assert set(best) == {"a", "b"}
    assert best["a"].index == 1 and best["a"].time_s == 2.0 and best["a"].distance == pytest.approx(0.1, abs=1e-5)
    assert best["b"].index == 0 and best["b"].distance == pytest.approx(0.0, abs=1e-5)
    assert best["a"].box == [1.0, 1.0, 11.0, 11.0]
    assert nearest_faces(VideoFaces(), people) == []


def _faces(embedding: torch.Tensor, frames: list[int], x: list[float]) -> VideoFaces:
    n = len(frames)
    boxes = torch.tensor([[v, 10.0, v + 40.0, 60.0] for v in x])
    return VideoFaces(
        faces=Faces(
            frame_index=torch.tensor(frames), face_index=torch.zeros(n, dtype=torch.int64),
            pts_s=torch.tensor(frames, dtype=torch.float64) * 0.5, boxes=boxes, scores=torch.ones(n),
            landmarks=torch.zeros(n, 10), rotation=torch.zeros(n, dtype=torch.int64), embedding=embedding,
        )
    )  # fmt: skip


def test_watched_people_decides_per_track() -> None:
    """Two watched people; the video has a's track (faces 0.2-0.3 from a's photo, median 0.265) and a stranger's
    track whose one face happens to lie 0.52 from b's photo. a alerts (its nearest face, with how sure); b does not:
    the stranger's track as a whole is far from b."""
    people = People(["a", "b"], ["a.jpg", "b.jpg"], torch.eye(2, 128))
    emb = torch.zeros(8, 128)
    emb[:4, 0], emb[:4, 5] = 1.0, torch.tensor([0.3, 0.2, 0.25, 0.28])  # a's track, frames 0-3 at the left
    emb[4:, 1], emb[4:, 10] = 0.7, 0.714  # the stranger (0.78 from b's photo), frames 0-3 at the right
    emb[5, 1], emb[5, 10] = 0.85, 0.5  # one face 0.52 from b, 0.26 from the stranger's other faces: same track
    found = _faces(emb, [0, 1, 2, 3, 0, 1, 2, 3], [0, 2, 4, 6, 200, 202, 204, 206])
    seen = watched_people(found, people, rule_for("dlib", 0.6), "dlib")
    assert [m.person for m in seen.matches] == ["a"]
    a = seen.matches[0]
    assert a.index == 1 and a.distance == pytest.approx(0.265, abs=1e-3) and 0.5 <= a.confidence <= 1
    assert seen.nearest["b"] > 0.6
    assert watched_people(VideoFaces(), people, rule_for("dlib"), "dlib").matches == []


def test_alert_key_is_safe_for_any_person_name() -> None:
    sha = "ab" * 32
    assert alert_key(sha, "lin-manuel-miranda") == f"alerts/{sha}/lin-manuel-miranda.jpg"
    escaped = alert_key(sha, "../../etc/passwd")
    assert escaped.startswith(f"alerts/{sha}/etc_passwd-") and escaped.count("/") == 2
    assert alert_key(sha, "José") != alert_key(sha, "Josè")


def test_photo_without_a_face_is_a_clear_error(tmp_path: Path, models: FaceModels) -> None:
    from torchvision.io import write_png

    blank = tmp_path / "empty-wall.png"
    write_png(torch.full((3, 120, 160), 200, dtype=torch.uint8), str(blank))
    (tmp_path / "in").mkdir()
    with pytest.raises(PeopleError, match="empty-wall.png.*no face"):
        Monitor.open(_settings(tmp_path), [blank], str(tmp_path / "in"), emit=print, models=models)


# --- the monitor on real media ---------------------------------------------------------------------------------------
def test_friends_watch_list_names_the_right_people(shared_data: Path, models: FaceModels) -> None:
    """The six Friends photos on the labelled poker clip: each person is found, and the face each alert shows is a
    face of that person (``benchmarks/identity/friends_poker.labels.csv``)."""
    from torchvision.ops import box_iou

    from benchmarks.identity.search_bench import GALLERY, load_labels

    watch = load_people(sorted(GALLERY.glob("*.png")), models)
    settings = Settings.load(MONITOR_TEST, device="cpu")
    found = faces_in_video(shared_data / "multi_person" / "friends_poker.mp4", settings, models)
    seen = watched_people(found, watch, rule_for(models.embedder.name), models.embedder.name)
    truth = load_labels()
    named = {}
    for m in seen.matches:
        near = ((truth.time_s - m.time_s).abs() <= 0.15).nonzero().flatten()
        iou = box_iou(torch.tensor([m.box]), truth.boxes[near])[0]
        named[m.person] = truth.label[int(near[iou.argmax()])] if len(near) and iou.max() >= 0.3 else None
        assert 0.5 <= m.confidence <= 1
    assert named == {p: p for p in watch.unique_names}, named
    for row in seen.decisions.decisions:
        assert sum(m.match for m in row) <= 1


def test_monitor_takes_videos_copied_while_it_runs(
    tmp_path: Path,
    hamilton: Path,
    ryan_cut: Path,
    people: People,
    models: FaceModels,
    webhook: Callable[..., Hook],
) -> None:
    """Videos arrive while the loop runs, one in two halves with a pause (a slow copy), beside a broken file; the
    webhook fails twice first. Each video is checked once, complete; the right people alert, once, everywhere."""
    hook = webhook(2)
    watched = tmp_path / "watched"
    watched.mkdir()
    settings = _settings(tmp_path)
    emitted: list[dict] = []
    logs: list[str] = []
    options = dict(webhook=hook.url, settle_s=1.5, webhook_base_delay_s=0.05)
    mon = Monitor(settings, people, models, str(watched), emit=emitted.append, log=logs.append, **options)
    loop = threading.Thread(target=mon.run, args=(0.2,), daemon=True)
    loop.start()
    try:
        (watched / "a_broken.mp4").write_bytes(random.Random(0).randbytes(150_000))  # seeded: one wording
        data = hamilton.read_bytes()
        with open(watched / "stage.mp4", "wb") as fh:  # a slow copy: half, a pause shorter than the settle time, half
            fh.write(data[: len(data) // 2])
            fh.flush()
            time.sleep(1.0)
            fh.write(data[len(data) // 2 :])
        shutil.copy(ryan_cut, watched / "ryan.mp4")
        db = Database(settings.db_url)
        _wait_for(
            lambda: (
                len(hook.accepted) == 2
                and db.monitor_videos().get(str(watched / "a_broken.mp4"), {}).get("status") == "failed"
            ),
            120,
            "two delivered alerts and the broken file given up",
        )
    finally:
        mon.stop.set()
        loop.join(60)
    assert not loop.is_alive()

    full_sha = sha256_file(hamilton)
    assert sorted((a["person"], a["video"]) for a in emitted) == [(LIN, "stage.mp4"), (RYAN, "ryan.mp4")]
    stage = next(a for a in emitted if a["video"] == "stage.mp4")
    assert stage["sha256"] == full_sha  # the complete file, not the half seen during the pause
    for alert in emitted:
        assert 0 <= alert["distance"] <= mon.threshold == rule_for("hse").threshold
        assert 0.5 <= alert["score"] == alert["confidence"] <= 1  # how sure the decision is
        assert len(alert["box"]) == 4 and alert["box"][0] < alert["box"][2] and alert["box"][1] < alert["box"][3]
        assert mon.store.get_bytes(alert["thumbnail_key"])[:2] == b"\xff\xd8"  # a JPEG crop
    assert 0.85 <= stage["time_s"] <= 11  # inside the clip's video stream (it starts at 0.852 s)

    # The half-written file was seen and deferred, never read: one attempt, no error for it.
    assert any(line.startswith("wait   stage.mp4") for line in logs)
    assert not any(line.startswith("error  stage.mp4") for line in logs)
    rows = db.monitor_videos()
    assert rows[str(watched / "stage.mp4")]["status"] == "done" and rows[str(watched / "stage.mp4")]["attempts"] == 1
    nearest = rows[str(watched / "stage.mp4")]["nearest"]
    assert nearest[BIDEN] > nearest[LIN]
    assert {r["sha256"] for r in rows.values()} == {
        full_sha,
        sha256_file(ryan_cut),
        sha256_file(watched / "a_broken.mp4"),
    }
    broken = rows[str(watched / "a_broken.mp4")]
    assert broken["attempts"] == 3 and "not a readable video" in broken["message"]

    # Webhook: 500, 500, then the two alerts; what it took is exactly what was printed.
    assert [status for status, _, _ in hook.requests] == [500, 500, 200, 200]
    assert sorted(hook.accepted, key=lambda a: a["video"]) == sorted(emitted, key=lambda a: a["video"])
    assert all(a["delivered"] for a in db.monitor_alerts())

    # A restart over the same database, with a copy of the Hamilton clip under a new name: nothing is announced.
    again = watched / "stage (copy).mp4"
    shutil.copy(hamilton, again)
    old = time.time() - 60
    os.utime(again, (old, old))
    emitted_again: list[dict] = []
    logs_again: list[str] = []
    restarted = Monitor(
        settings, people, models, str(watched), emit=emitted_again.append, log=logs_again.append, **options
    )
    restarted.run(once=True)
    restarted.close()
    assert emitted_again == [] and len(hook.requests) == 4
    rows = db.monitor_videos()
    assert rows[str(again)]["status"] == "duplicate" and rows[str(again)]["sha256"] == full_sha
    assert rows[str(watched / "a_broken.mp4")]["attempts"] == 3  # given up for good: not tried again
    assert len(db.monitor_alerts()) == 2
    db.dispose()
    mon.close()


def test_undelivered_alert_is_retried_at_the_next_poll_and_printed_once(
    tmp_path: Path, ryan_cut: Path, people: People, models: FaceModels, webhook: Callable[..., Hook]
) -> None:
    hook = webhook(3)  # more failures than one poll's attempts
    watched = tmp_path / "in"
    watched.mkdir()
    (watched / "r.mp4").symlink_to(ryan_cut)
    emitted: list[dict] = []
    mon = Monitor(
        _settings(tmp_path),
        people,
        models,
        str(watched),
        emit=emitted.append,
        webhook=hook.url,
        settle_s=0,
        webhook_attempts=2,
        webhook_base_delay_s=0.01,
    )
    mon.poll()
    assert [a["person"] for a in emitted] == [RYAN] and hook.accepted == []
    owed = mon.db.monitor_alerts(undelivered=True)
    assert len(owed) == 1 and owed[0]["attempts"] == 2 and "500" in owed[0]["last_error"]
    mon.poll()  # third request still fails: the alert stays owed
    mon.poll()
    assert hook.accepted == [alert_payload(owed[0])] == emitted
    assert mon.db.monitor_alerts(undelivered=True) == [] and len(emitted) == 1
    mon.close()


def test_monitor_polls_an_s3_prefix(
    tmp_path: Path, bucket: str, ryan_cut: Path, people: People, models: FaceModels
) -> None:
    """An S3 prefix: empty at first (a note, not an error), then an object appears and alerts; its download is not
    kept, and a missing bucket is refused before the first poll."""
    import boto3

    with pytest.raises(StoreUnreachable, match="no-such-bucket"):
        check_source("s3://no-such-bucket-for-monitor/incoming/")
    emitted: list[dict] = []
    logs: list[str] = []
    settings = _settings(tmp_path)
    mon = Monitor(settings, people, models, f"s3://{bucket}/incoming/", emit=emitted.append, log=logs.append)
    mon.poll()
    assert emitted == [] and any("no video objects" in line for line in logs)
    boto3.client("s3").upload_file(str(ryan_cut), bucket, "incoming/clip.mp4")
    mon.poll()
    mon.poll()
    assert [(a["person"], a["uri"]) for a in emitted] == [(RYAN, f"s3://{bucket}/incoming/clip.mp4")]
    assert list((settings.work_dir / "downloads").glob("*.mp4")) == []
    mon.close()


# --- the command line -------------------------------------------------------------------------------------------------
def test_cli_monitor_once_then_restarted_loop(tmp_path: Path, hamilton: Path, faces_dir: Path) -> None:
    """`--once` prints the alert as one JSON line; a restarted loop over the same database announces nothing, not
    even for the same file under a new name, and stops cleanly on Ctrl-C with its summary on stderr."""
    watched = tmp_path / "in"
    watched.mkdir()
    (watched / "stage.mp4").symlink_to(hamilton)
    (watched / "broken.mp4").write_bytes(random.Random(0).randbytes(50_000))
    os.utime(watched / "broken.mp4", (time.time() - 60, time.time() - 60))
    common = [
        "monitor",
        "--watch", str(faces_dir / "lin-manuel-miranda.png"),
        "--watch", str(faces_dir / "biden.jpg"),
        "--source", str(watched),
        "--db", f"sqlite:///{tmp_path / 'm.db'}",
        "--store", str(tmp_path / "objects"),
    ]  # fmt: skip
    env = {"ENGINE_RUNS_DIR": str(tmp_path / "runs")}
    res = run_cli(*common, "--once", env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    alerts = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(a["person"], a["video"]) for a in alerts] == [(LIN, "stage.mp4")]
    assert (
        alerts[0]["sha256"] == sha256_file(hamilton) and (tmp_path / "objects" / alerts[0]["thumbnail_key"]).is_file()
    )
    assert "error  broken.mp4" in res.stderr and "monitor: 1 poll(s)" in res.stderr

    (watched / "encore.mp4").symlink_to(hamilton)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "cli.py"), *common, "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
    )
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        _wait_for(lambda: any(line.startswith("skip   encore.mp4") for line in stderr), 240, "the duplicate noted")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)  # a guard, not a speed check: a loaded 2-core CI machine once took over 60 s
    reader.join(10)
    stdout = proc.stdout.read()
    assert proc.returncode == 0, "".join(stderr)
    assert stdout == ""
    assert any(line.startswith("monitor: ") and "0 alert(s)" in line for line in stderr)
    rows = Database(f"sqlite:///{tmp_path / 'm.db'}").monitor_videos()
    assert rows[str(watched / "encore.mp4")]["status"] == "duplicate"
