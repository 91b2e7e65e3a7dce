"""The monitor's source side: whether a listed local file is complete enough to take (the settle rule), its
(size, mtime) as the listing sees it, and the check that refuses a source which cannot be right before the first poll.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.config import ConfigError
from engine.sources import SourceItem, is_url

Stat = tuple[int, int]  # (size in bytes, mtime in ns)


def is_settled(stat: Stat, previous: Stat | None, unchanged_for_s: float, now_s: float, settle_s: float) -> bool:
    """Whether a local file is complete enough to take: a writer that is still copying changes its size and mtime.

    ``stat`` is the file's (size, mtime_ns) now, ``previous`` what the previous listing saw (``None``: not listed
    before), ``unchanged_for_s`` how long this process has seen ``stat`` unchanged, ``now_s`` the wall clock. The
    file is taken when it did not change since the previous listing and it has been unchanged for ``settle_s``:
    by its mtime's age, or by our own observation when its mtime is in the future (a server whose clock runs
    ahead). A file that is already old when first listed (``cp -p``, an rsync rename, a restart) is taken at once.
    """
    if previous is not None and previous != stat:
        return False
    age_s = now_s - stat[1] / 1e9
    return age_s >= settle_s or unchanged_for_s >= settle_s


def file_stat(item: SourceItem) -> Stat | None:
    """(size, mtime_ns) of a local file; ``None`` for remote items and for paths that cannot be read."""
    if item.kind != "file":
        return None
    try:
        st = os.stat(item.uri)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def check_source(source: str, s3_endpoint_url: str | None = None) -> None:
    """Refuse, before the first poll, a source that cannot be right: a missing local folder or list file, or an
    S3 bucket that does not answer (a typo must not poll nothing forever). An empty folder or prefix is fine."""
    if source.startswith("s3://"):
        from engine.store import open_s3_bucket

        bucket = source[len("s3://") :].split("/", 1)[0]
        try:
            open_s3_bucket(bucket, s3_endpoint_url).check()
        except ValueError as exc:
            raise ConfigError(f"watched source {source}: {exc}") from exc
        return
    if is_url(source):
        return
    if not Path(source).exists():
        raise ConfigError(f"watched source not found: {source} (give a folder, a file of URLs, or s3://bucket/prefix)")
