"""List and fetch input videos: a local folder, a text file of URLs, or an ``s3://`` prefix.

Listing is cheap and never fails on one bad entry; fetching turns an item into a local file (downloads are cached
under the run's work folder by a hash of their URL), and reading any sidecar metadata the source gives.

A URL may carry credentials (``http://user:password@host/x.mp4``): they are used to fetch, never shown: every message
here names an item by :func:`engine.redact.redact_text` of its URL. Downloads follow redirects to http(s) only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.redact import redact_text

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg", ".ts", ".3gp", ".wmv", ".ogv"}
)
URL_LIST_EXTENSIONS = frozenset({".txt", ".urls", ".list", ".csv"})
#: Sound files a folder may hold beside its videos: listed too, so each gets its error row ("no video stream (audio
#: only)") instead of being left out without a word.
AUDIO_EXTENSIONS = frozenset({".m4a", ".mp3", ".wav", ".aac", ".flac", ".ogg", ".opus", ".wma"})
#: The only schemes a download may be redirected to (urllib's default also follows ftp://).
REDIRECT_SCHEMES = frozenset({"http", "https"})


class SourceError(ValueError):
    """The source as a whole cannot be listed (missing folder, empty bucket prefix, bad spec)."""


class FetchError(RuntimeError):
    """One item could not be fetched; the run records it and goes on."""


@dataclass(frozen=True)
class SourceItem:
    """One input video as the user named it, before it is fetched."""

    uri: str
    name: str
    kind: str  # "file" | "url" | "s3"
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def shown(self) -> str:
        """The URI as it may be printed or stored: a URL's password masked."""
        return redact_text(self.uri)


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _is_video_name(name: str) -> bool:
    return Path(name.split("?", 1)[0]).suffix.lower() in VIDEO_EXTENSIONS


def list_sources(spec: str | Path, s3_endpoint_url: str | None = None) -> list[SourceItem]:
    """Expand a source spec into items, in a stable order (sorted paths, URL-file order, sorted keys)."""
    text = str(spec)
    if text.startswith("s3://"):
        return _list_s3(text, s3_endpoint_url)
    if is_url(text):
        return [SourceItem(text, _url_name(text), "url")]
    path = Path(text)
    if path.is_dir():
        # Include dangling links, unreadable entries, a folder named like a video and sound files: each becomes an
        # error row, not a silent omission. A folder named like a video is not descended into as a video.
        files = [p for p in sorted(path.rglob("*")) if _is_listed(p)]
        return [SourceItem(str(p), p.name, "file") for p in files]
    if path.is_file() and path.suffix.lower() in URL_LIST_EXTENSIONS:
        return _list_url_file(path)
    if path.is_file() or path.is_symlink():
        return [SourceItem(str(path), path.name, "file")]
    raise SourceError(f"videos source not found: {text} (give a folder, a file of URLs, or s3://bucket/prefix)")


def _is_listed(path: Path) -> bool:
    """Whether a folder entry is an input: named like a video or a sound file, whatever it is (a file, a link, or a
    folder named ``x.mp4``, which fails later with its own row)."""
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        return path.is_file() or path.is_symlink()
    return _is_video_name(path.name)


def _url_name(url: str) -> str:
    tail = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return redact_text(tail or url)


def _list_url_file(path: Path) -> list[SourceItem]:
    items = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split(",", 1)[0].strip() if path.suffix.lower() == ".csv" else raw.strip()
        if not line or line.startswith("#"):
            continue
        if is_url(line):
            items.append(SourceItem(line, _url_name(line), "url"))
        elif line.startswith("s3://"):
            items.append(SourceItem(line, _url_name(line), "s3"))
        else:  # a local path, relative to the list file
            local = Path(line) if Path(line).is_absolute() else path.parent / line
            items.append(SourceItem(str(local), local.name, "file"))
    return items


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def _list_s3(uri: str, endpoint_url: str | None) -> list[SourceItem]:
    from engine.store import open_s3_bucket

    bucket, prefix = _split_s3(uri)
    store = open_s3_bucket(bucket, endpoint_url)
    keys = sorted(k for k in store.list(prefix) if _is_video_name(k))
    if not keys:
        raise SourceError(f"no video objects under {uri}")
    return [SourceItem(f"s3://{bucket}/{k}", k.rsplit("/", 1)[-1], "s3") for k in keys]


def fetch(item: SourceItem, cache_dir: Path, s3_endpoint_url: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Return a local file for ``item`` and the source metadata found beside it (possibly empty)."""
    if item.kind == "file":
        path = Path(item.uri)
        return path, read_sidecar_metadata(path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = hashlib.sha1(item.uri.encode()).hexdigest()[:20]
    suffix = Path(item.name).suffix.lower() if _is_video_name(item.name) else ".mp4"
    dest = cache_dir / f"{stem}{suffix}"
    if item.kind == "s3":
        from engine.store import open_s3_bucket

        bucket, key = _split_s3(item.uri)
        if not dest.exists():
            try:
                open_s3_bucket(bucket, s3_endpoint_url).download(key, dest)
            except Exception as exc:  # noqa: BLE001 - any failure of one object is reported for that object
                raise FetchError(redact_text(f"cannot download {item.uri}: {exc}")) from exc
        return dest, {}
    return _fetch_url(item.uri, cache_dir, stem, dest)


class RedirectRefused(urllib.error.URLError):
    """A download was redirected to a scheme other than http(s) (``ftp://``, ``file://``, ...): not followed."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http and https only: urllib's own handler also follows ``ftp://``, which would let a
    server we were pointed at make us fetch from elsewhere (an internal FTP host), unencrypted."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl)).scheme.lower()
        if scheme not in REDIRECT_SCHEMES:
            raise RedirectRefused(
                f"HTTP {code} redirects to {redact_text(newurl)}: only http:// and https:// redirects are followed"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def open_url(url: str, timeout_s: float = 60.0) -> Any:
    """``urlopen`` for downloads (``run`` and the monitor): redirects followed to http(s) only
    (:class:`RedirectRefused` otherwise)."""
    request = urllib.request.Request(url, headers={"User-Agent": "faceengine/0.1"})
    return urllib.request.build_opener(_HttpOnlyRedirects).open(request, timeout=timeout_s)


def _yt_dlp_command() -> list[str] | None:
    exe = shutil.which("yt-dlp")
    if exe:
        return [exe]
    if importlib.util.find_spec("yt_dlp") is not None:
        return [sys.executable, "-m", "yt_dlp"]
    return None


def _fetch_url(url: str, cache_dir: Path, stem: str, dest: Path) -> tuple[Path, dict[str, Any]]:
    cached = sorted(cache_dir.glob(f"{stem}.*"))
    cached = [p for p in cached if _is_video_name(p.name)]
    if cached:
        return cached[0], read_sidecar_metadata(cached[0])
    ytdlp = _yt_dlp_command()
    if ytdlp and not _is_video_name(url):
        # Platform pages (TikTok, YouTube...) need yt-dlp; direct file URLs are fetched plainly below.
        proc = subprocess.run(
            [*ytdlp, "--no-playlist", "--write-info-json", "-q", "-o", str(cache_dir / f"{stem}.%(ext)s"), url],
            capture_output=True,
            text=True,
        )
        got = [p for p in sorted(cache_dir.glob(f"{stem}.*")) if _is_video_name(p.name)]
        if proc.returncode == 0 and got:
            return got[0], read_sidecar_metadata(got[0])
    tmp_name: str | None = None
    try:
        with (
            open_url(url) as resp,
            tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".dl-", delete=False) as tmp,
        ):
            tmp_name = tmp.name
            shutil.copyfileobj(resp, tmp, 1 << 20)
        Path(tmp.name).replace(dest)
    except Exception as exc:  # noqa: BLE001 - network errors of every kind become one error row
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        reason = exc.reason if isinstance(exc, RedirectRefused) else exc
        hint = "" if ytdlp or isinstance(exc, RedirectRefused) else " (install yt-dlp for platform pages)"
        raise FetchError(redact_text(f"cannot download {url}: {reason}{hint}")) from exc
    return dest, {}


#: Source-metadata keys we keep, and the names scrapers and yt-dlp use for them.
_META_KEYS = {
    "source_id": ("id", "video_id", "source_id"),
    "author": ("author", "uploader", "uploader_id", "authorMeta.name", "creator"),
    "description": ("description", "text", "title"),
    "sound_id": ("sound_id", "musicMeta.musicId", "track_id", "music_id"),
}


def read_sidecar_metadata(video: Path) -> dict[str, Any]:
    """Metadata from ``<video>.info.json`` (yt-dlp) or ``<video>.json`` (scrapers), when present."""
    for candidate in (video.with_suffix(".info.json"), video.with_suffix(".json")):
        if not candidate.is_file():
            continue
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        out: dict[str, Any] = {}
        for column, names in _META_KEYS.items():
            for name in names:
                value: Any = data
                for part in name.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if value not in (None, ""):
                    out[column] = str(value)
                    break
        return out
    return {}
