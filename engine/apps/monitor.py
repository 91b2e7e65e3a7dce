"""Watch-list monitor: poll a source for new videos and raise an alert when a watched person appears in one.

Each poll lists the source (a folder, a file of URLs or an ``s3://`` prefix) and checks every video it has not seen:
frames sampled every ``sample_interval`` seconds go through the faces stage, the faces are tracked, and each track is
given to at most one watched person by the decision reference search uses (``engine.apps.identify``: its median
distance under the embedder's threshold *and* clearly below the photo's distances to the video's other tracks). A
watched person with a matching track makes one alert, saying how sure it is (``confidence``). State lives in the
database (``monitor_videos``, ``monitor_alerts``), so a restarted monitor carries on where it stopped:

* **Seen** means by URI *and* by content: a video is identified by the SHA-256 of its bytes, so the same file under
  another name is recorded as a ``duplicate`` and alerts nobody; an alert is unique per (video sha256, person).
* **Half-written files** are left alone: a local file is taken only when its size and mtime are the same as at the
  previous listing and have not changed for ``settle_s`` seconds (by its mtime, or by how long this process has
  seen it unchanged when the file's clock is ahead of ours). Names starting with ``.`` (``.x.partial.mp4``, rsync's
  temporary files) are never taken. Objects of an S3 prefix and downloads appear whole, so they need no settling.
* **Bad videos** are recorded with their reason and retried at later polls, at most ``max_attempts`` times in all;
  nothing a video does stops the monitor.
* **Alerts** are printed once (the ``emit`` callback: one JSON line) right after they are committed, and POSTed to
  the webhook with exponential back-off on connection errors, timeouts, 5xx, 408 and 429; an alert the webhook did
  not take stays undelivered in the database and is POSTed again at the next poll, never printed again.

The source side (the settle rule, the source check) is in ``engine.apps.monitor_source``, the face side (a video's
faces, the nearest one per watched person, the alert's JSON) in ``engine.apps.monitor_match``, the webhook's
delivery in ``engine.apps.webhook``; this module is the loop that keeps the rules above.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import media
from engine.apps.identify import rule_for
from engine.apps.monitor_match import alert_payload, faces_in_video, watched_people
from engine.apps.monitor_source import Stat, check_source, file_stat, is_settled
from engine.apps.people import People, load_people
from engine.apps.webhook import WEBHOOK_ATTEMPTS, WEBHOOK_BASE_DELAY_S, post_json
from engine.config import ConfigError, FaceSettings, Settings
from engine.faces.batching import FaceModels
from engine.hashing import sha256_file
from engine.redact import redact_text
from engine.sources import FetchError, SourceError, SourceItem, fetch, is_url, list_sources
from engine.store import Database, ObjectStore, open_stores
from engine.store.objects import alert_key

Log = Callable[[str], None]
Emit = Callable[[dict[str, Any]], None]

#: Settings' challenge name for the monitor: its default database and objects live under ``runs/monitor``.
MONITOR_NAME = "monitor"
#: Seconds a local file's size and mtime must stay unchanged before it is taken (longer than a copy's pauses).
DEFAULT_SETTLE_S = 10.0
#: Seconds between polls.
DEFAULT_INTERVAL_S = 30.0
#: Times a video that fails (unreadable, not a video, download error) is tried before it is left for good.
MAX_VIDEO_ATTEMPTS = 3


# --- the monitor ------------------------------------------------------------------------------------------------------
@dataclass
class MonitorTotals:
    """What a monitor did since it started, for its closing summary and for tests."""

    polls: int = 0
    checked: int = 0
    duplicates: int = 0
    failed: int = 0
    waiting: int = 0
    alerts: int = 0
    delivered: int = 0
    undelivered: int = 0
    poll_errors: int = 0
    seconds: float = 0.0
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)  # (name, status, message)

    def line(self) -> str:
        return (
            f"monitor: {self.polls} poll(s), {self.checked} video(s) checked, {self.duplicates} duplicate(s), "
            f"{self.failed} failure(s), {self.alerts} alert(s), webhook: {self.delivered} delivered, "
            f"{self.undelivered} owed · {self.seconds:.1f}s"
        )


class Monitor:
    """Polls one source and alerts on watched people; see the module's docstring for the rules it keeps."""

    def __init__(
        self,
        settings: Settings,
        people: People,
        models: FaceModels,
        source: str,
        *,
        emit: Emit,
        log: Log = lambda _m: None,
        webhook: str | None = None,
        threshold: float | None = None,
        settle_s: float = DEFAULT_SETTLE_S,
        max_attempts: int = MAX_VIDEO_ATTEMPTS,
        webhook_attempts: int = WEBHOOK_ATTEMPTS,
        webhook_base_delay_s: float = WEBHOOK_BASE_DELAY_S,
        db: Database | None = None,
        store: ObjectStore | None = None,
    ) -> None:
        if threshold is not None and not 0 < threshold <= 2:
            raise ConfigError(f"threshold must be a distance in (0, 2] (got {threshold})")
        if settle_s < 0:
            raise ConfigError(f"settle time must be >= 0 seconds (got {settle_s})")
        if max_attempts < 1 or webhook_attempts < 1:
            raise ConfigError("attempt counts must be at least 1")
        if webhook is not None and not is_url(webhook):
            raise ConfigError(f"webhook must be an http:// or https:// URL (got {webhook!r})")
        self.settings = settings
        self.people = people
        self.models = models
        self.source = str(source)
        self.emit = emit
        self.log = log
        self.webhook = webhook
        self.embedder = models.embedder.name
        self.rule = rule_for(self.embedder, threshold)
        self.threshold = self.rule.threshold
        self.settle_s = settle_s
        self.max_attempts = max_attempts
        self.webhook_attempts = webhook_attempts
        self.webhook_base_delay_s = webhook_base_delay_s
        if db is None or store is None:
            db, store = open_stores(settings.db_url, settings.store_url, settings.s3_endpoint_url)
        self.db = db
        self.store = store
        self.stop = threading.Event()
        self.totals = MonitorTotals()
        self._listing: dict[str, tuple[Stat, float]] = {}  # uri -> (stat, monotonic time first seen so)
        self._waiting_noted: set[str] = set()
        self._webhook_down = False

    @classmethod
    def open(
        cls,
        settings: Settings,
        watch: Sequence[str | Path],
        source: str,
        *,
        emit: Emit,
        log: Log = lambda _m: None,
        models: FaceModels | None = None,
        embedder: str | None = None,
        **options: Any,
    ) -> Monitor:
        """Check the source, connect the stores, load the models (unless given) and the watched people (one photo
        each, named by its file's stem). Every problem is a ``ConfigError``, ``PeopleError``, ``StoreUnreachable`` or
        ``WeightError`` raised before the first poll, so a misconfigured monitor never starts. ``embedder``: the
        descriptor network loaded when ``models`` is not given (``None``: the default, hse)."""
        check_source(str(source), settings.s3_endpoint_url)
        if models is None:
            faces = FaceSettings() if embedder is None else FaceSettings(embedder=embedder)
            models = FaceModels.load(settings.device, faces, mirror=settings.weights_mirror)
        people = load_people(list(watch), models)  # before the stores: a bad photo leaves no database behind
        log(f"watch  {len(people.unique_names)} person(s) ({models.embedder.name}): {', '.join(people.unique_names)}")
        db, store = open_stores(settings.db_url, settings.store_url, settings.s3_endpoint_url)
        try:
            return cls(settings, people, models, source, emit=emit, log=log, db=db, store=store, **options)
        except BaseException:
            db.dispose()
            raise

    # --- the loop ---------------------------------------------------------------------------------------------
    def run(self, interval_s: float = DEFAULT_INTERVAL_S, once: bool = False) -> MonitorTotals:
        """Poll until :attr:`stop` is set (or once). A failing poll (database down, source unreachable) is logged
        and the next one tried, except with ``once``, where it is raised: there is no next poll to wait for."""
        if interval_s <= 0:
            raise ConfigError(f"interval must be positive (got {interval_s})")
        t0 = time.perf_counter()
        try:
            while not self.stop.is_set():
                try:
                    self.poll()
                except Exception as exc:  # noqa: BLE001 - a poll's failure must not end a long-running monitor
                    if once:
                        raise
                    self.totals.poll_errors += 1
                    reason = redact_text(f"{type(exc).__name__}: {exc}")
                    self.log(f"error  poll failed: {reason}; trying again in {interval_s:g}s")
                if once:
                    break
                self.stop.wait(interval_s)
        finally:
            self.totals.seconds = time.perf_counter() - t0
        return self.totals

    def close(self) -> None:
        self.db.dispose()

    def poll(self) -> MonitorTotals:
        """One pass: deliver what the webhook still owes, list the source, check every new, settled video."""
        t = self.totals
        t.polls += 1
        self._webhook_down = False
        self._deliver(self.db.monitor_alerts(undelivered=True) if self.webhook else [])
        try:
            items = list_sources(self.source, self.settings.s3_endpoint_url)
        except SourceError as exc:  # e.g. an S3 prefix with nothing in it yet
            self.log(f"note   {exc}")
            items = []
        known = self.db.monitor_videos()
        listing: dict[str, tuple[Stat, float]] = {}
        waiting = 0
        for item in items:
            if self.stop.is_set():
                break
            if item.kind == "file" and item.name.startswith("."):
                continue  # a temporary file of a copy or download in progress
            stat = file_stat(item)
            previous = self._listing.get(item.uri)  # (stat, since when) at the previous listing
            if stat is not None:
                since = previous[1] if previous and previous[0] == stat else time.monotonic()
                listing[item.uri] = (stat, since)
            row = known.get(item.shown)  # rows are keyed by the URI without its password
            if row is not None and not self._wanted(row, stat):
                continue
            if stat is not None:
                unchanged_for = time.monotonic() - listing[item.uri][1]
                if not is_settled(stat, previous and previous[0], unchanged_for, time.time(), self.settle_s):
                    waiting += 1
                    self._note_waiting(item)
                    continue
            self._waiting_noted.discard(item.uri)
            self._check(item, stat, row)
        self._listing = listing
        t.waiting = waiting
        t.undelivered = len(self.db.monitor_alerts(undelivered=True)) if self.webhook else 0
        return t

    def _note_waiting(self, item: SourceItem) -> None:
        if item.uri not in self._waiting_noted:  # once, not at every poll
            self._waiting_noted.add(item.uri)
            self.log(f"wait   {item.name}: just written or still changing; taken once unchanged for {self.settle_s:g}s")

    def _wanted(self, row: dict[str, Any], stat: Stat | None) -> bool:
        """Whether a video the monitor already has a row for needs looking at again."""
        if stat is not None and row["size_bytes"] is not None and (row["size_bytes"], row["mtime_ns"]) != stat:
            return True  # the file at this path was replaced (or rewritten): new content, perhaps
        return row["status"] == "retry"

    # --- one video --------------------------------------------------------------------------------------------
    def _check(self, item: SourceItem, stat: Stat | None, row: dict[str, Any] | None) -> None:
        """Check one video; a downloaded copy (S3, URL) is deleted once the video needs no further attempt (a
        monitor runs for months: its download cache must not grow with every video it ever saw)."""
        fetched: list[Path] = []
        status = self._check_video(item, stat, row, fetched)
        if item.kind != "file" and status in ("done", "duplicate", "failed"):
            for path in fetched:
                for leftover in (path, path.with_suffix(".info.json"), path.with_suffix(".json")):
                    leftover.unlink(missing_ok=True)

    def _check_video(
        self, item: SourceItem, stat: Stat | None, row: dict[str, Any] | None, fetched: list[Path]
    ) -> str | None:
        """Check one video against the watch list and return its new status (``None``: left for a later poll);
        any failure is recorded, never raised. The local file it read is appended to ``fetched``."""
        replaced = row is not None and stat is not None and (row["size_bytes"], row["mtime_ns"]) != stat
        attempts = 0 if row is None or replaced else int(row["attempts"] or 0)
        base = dict(name=item.name, size_bytes=stat[0] if stat else None, mtime_ns=stat[1] if stat else None)
        s = self.settings
        sha = None
        try:
            path, _meta = fetch(item, s.work_dir / "downloads", s.s3_endpoint_url)
            fetched.append(path)
            sha = sha256_file(path)
            if stat is not None and file_stat(item) != stat:  # written to again while we read it: not settled after all
                self._note_waiting(item)
                return None
            twin = self.db.monitor_video_by_sha(sha)
            if twin is not None:
                if twin["source_uri"] == item.shown:  # the same bytes touched or rewritten in place
                    self.db.monitor_save_video(item.shown, **base)
                    return twin["status"]
                message = f"same content as {twin['source_uri']} ({twin['status']})"
                self.db.monitor_save_video(item.shown, **base, sha256=sha, status="duplicate", message=message)
                self.totals.duplicates += 1
                self.totals.outcomes.append((item.name, "duplicate", message))
                self.log(f"skip   {item.name}: {message}")
                return "duplicate"
            video = media.probe(path).video
            if video.truncated_s > media.TRUNCATION_TOLERANCE_S and attempts + 1 < self.max_attempts:
                # A second guard after the settle rule: a file that is still being copied looks truncated.
                raise media.DecodeError(
                    "truncated",
                    f"{item.name} is truncated ({video.duration_s:.1f}s of {video.header_duration_s:.1f}s decodable); "
                    "still being copied? Its decodable part is checked at the last attempt",
                )
            found = faces_in_video(path, s, self.models)
            seen = watched_people(found, self.people, self.rule, self.embedder)
            hits = seen.matches
            for m in hits:
                self.store.put_bytes(alert_key(sha, m.person), found.faces.crops[m.index], "image/jpeg")
        except (FetchError, media.DecodeError, OSError) as exc:
            return self._failed(item, base, sha, attempts, _reason(exc))
        except Exception as exc:  # noqa: BLE001 - one video must never stop the monitor, whatever it triggers
            return self._failed(item, base, sha, attempts, f"{type(exc).__name__}: {exc}")
        nearest = {person: round(d, 4) for person, d in seen.nearest.items()}
        alerts = [
            dict(
                video_sha256=sha,
                person=m.person,
                source_uri=item.shown,
                video_name=item.name,
                time_s=round(m.time_s, 3),
                distance=round(m.distance, 4),
                score=round(m.confidence, 4),
                box=m.box,
                thumbnail_key=alert_key(sha, m.person),
                deliver=self.webhook is not None,
            )
            for m in hits
        ]
        summary = f"{len(found)} face(s) in {len(found.frames)} frame(s)"
        video = dict(**base, sha256=sha, status="done", attempts=attempts + 1, message=summary, nearest=nearest)
        new = self.db.monitor_finish_video(item.shown, video, alerts)
        self.totals.checked += 1
        self.totals.outcomes.append((item.name, "done", summary))
        near = ", ".join(f"{p} {d:.3f}" for p, d in sorted(nearest.items(), key=lambda kv: kv[1])[:3])
        self.log(f"video  {item.name}: {summary}; nearest: {near or 'nobody'}")
        for alert in new:
            self.totals.alerts += 1
            self.log(
                f"alert  {alert['person']} in {item.name} at {alert['time_s']:.2f}s (distance {alert['distance']:.3f}, "
                f"confidence {alert['score']:.2f})"
            )
            self.emit(alert_payload(alert))
        self._deliver(new)
        return "done"

    def _failed(self, item: SourceItem, base: dict[str, Any], sha: str | None, attempts: int, reason: str) -> str:
        attempts += 1
        reason = redact_text(reason)  # an exception's text may quote the URL it was fetching
        final = attempts >= self.max_attempts
        status = "failed" if final else "retry"
        self.db.monitor_save_video(item.shown, **base, sha256=sha, status=status, attempts=attempts, message=reason)
        self.totals.failed += 1
        self.totals.outcomes.append((item.name, status, reason))
        then = "given up" if final else "tried again at the next poll"
        self.log(f"error  {item.name}: {reason} (attempt {attempts} of {self.max_attempts}; {then})")
        return status

    # --- delivery -----------------------------------------------------------------------------------------------
    def _deliver(self, alerts: list[dict[str, Any]]) -> None:
        """POST alerts to the webhook; after one alert could not be delivered the others wait for the next poll
        (a receiver that is down would otherwise cost the full back-off once per alert)."""
        if not self.webhook:
            return
        for alert in alerts:
            if self._webhook_down or self.stop.is_set():
                return
            result = post_json(
                self.webhook,
                alert_payload(alert),
                attempts=self.webhook_attempts,
                base_delay_s=self.webhook_base_delay_s,
                sleep=self.stop.wait,
            )
            self.db.monitor_mark_delivery(alert["id"], result.ok, result.attempts, result.error)
            if result.ok:
                self.totals.delivered += 1
            else:
                self._webhook_down = True
                self.log(
                    f"error  webhook: alert {alert['person']} in {alert['video_name']} not delivered after "
                    f"{result.attempts} attempt(s): {result.error}; kept for the next poll"
                )


def _reason(exc: BaseException) -> str:
    """One line saying why a video failed (an ``OSError`` names the path, the others already do)."""
    if isinstance(exc, OSError):
        return f"cannot read {exc.filename or 'the file'}: {exc.strerror or exc}"
    return str(exc)
