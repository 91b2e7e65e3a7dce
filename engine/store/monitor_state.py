"""The watch-list monitor's state: which source URIs it has looked at, and the alerts it owes or delivered."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.redact import redact_text

from .database import DatabaseCore
from .schema import MonitorAlert, MonitorVideo


class MonitorStateMixin(DatabaseCore):
    """``monitor_videos``, ``monitor_video_by_sha``, ``monitor_save_video``, ``monitor_finish_video``,
    ``monitor_alerts``, ``monitor_mark_delivery``."""

    @staticmethod
    def _monitor_dict(row: Any) -> dict[str, Any]:
        return {c.key: getattr(row, c.key) for c in row.__table__.columns}

    @staticmethod
    def _monitor_upsert(s: Session, source_uri: str, values: Mapping[str, Any]) -> None:
        """Create or update a source URI's row; the URI and every text value are stored with passwords masked."""
        source_uri = redact_text(source_uri)
        row = s.scalars(select(MonitorVideo).where(MonitorVideo.source_uri == source_uri)).first()
        if row is None:
            row = MonitorVideo(source_uri=source_uri, attempts=0)
            s.add(row)
        for key, value in values.items():
            setattr(row, key, redact_text(value) if isinstance(value, str) else value)
        row.updated_at = datetime.now(UTC)

    def monitor_videos(self) -> dict[str, dict[str, Any]]:
        """Every video the monitor has looked at, by source URI: one query per poll, not one per listed file."""
        with self.session() as s:
            return {row.source_uri: self._monitor_dict(row) for row in s.scalars(select(MonitorVideo))}

    def monitor_video_by_sha(self, sha256: str) -> dict[str, Any] | None:
        """The first video with these bytes that the monitor checked (``done``) or gave up on (``failed``)."""
        stmt = (
            select(MonitorVideo)
            .where(MonitorVideo.sha256 == sha256, MonitorVideo.status.in_(("done", "failed")))
            .order_by(MonitorVideo.id)
            .limit(1)
        )
        with self.session() as s:
            row = s.scalars(stmt).first()
            return None if row is None else self._monitor_dict(row)

    def monitor_save_video(self, source_uri: str, **values: Any) -> None:
        """Create or update the monitor's row of one source URI, committed at once (it must outlive a crash)."""
        with self.session() as s:
            self._monitor_upsert(s, source_uri, values)

    def monitor_finish_video(
        self, source_uri: str, video: Mapping[str, Any], alerts: Iterable[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Mark a video checked and add its alerts in one transaction; return only the alerts that are new.

        An alert whose (video sha256, person) is already stored (the same bytes seen before, under any name or by an
        earlier monitor process) is neither added nor returned, so the caller never announces it twice.
        """
        with self.session() as s:
            self._monitor_upsert(s, source_uri, video)
            new = []
            for alert in alerts:
                known = s.scalar(
                    select(MonitorAlert.id).where(
                        MonitorAlert.video_sha256 == alert["video_sha256"], MonitorAlert.person == alert["person"]
                    )
                )
                if known is None:
                    row = MonitorAlert(**{**alert, "source_uri": redact_text(alert["source_uri"])})
                    s.add(row)
                    new.append(row)
            s.flush()
            return [self._monitor_dict(row) for row in new]

    def monitor_alerts(self, undelivered: bool = False) -> list[dict[str, Any]]:
        """Alerts in the order they were raised; ``undelivered``: only those still owed to the webhook."""
        stmt = select(MonitorAlert).order_by(MonitorAlert.id)
        if undelivered:
            stmt = stmt.where(MonitorAlert.deliver.is_(True), MonitorAlert.delivered.is_(False))
        with self.session() as s:
            return [self._monitor_dict(row) for row in s.scalars(stmt)]

    def monitor_mark_delivery(self, alert_id: int, delivered: bool, attempts: int, error: str | None = None) -> None:
        """Count ``attempts`` more webhook requests for an alert and record whether one of them got through."""
        with self.session() as s:
            row = s.get(MonitorAlert, alert_id)
            row.attempts = (row.attempts or 0) + attempts
            row.delivered = delivered
            row.last_error = None if delivered else redact_text(error or "")[:2000]
            if delivered:
                row.delivered_at = datetime.now(UTC)
