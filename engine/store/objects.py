"""The object side of the store: a local folder or an S3 bucket (boto3), behind one small interface.

Keys are derived from content hashes (``videos/<sha256>.mp4``, ``frames/<sha256>/<k>.jpg``), never from file
names, so the same bytes always land at the same key and re-running a video overwrites instead of duplicating.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from .database import StoreUnreachable


def video_key(sha256: str, suffix: str = ".mp4") -> str:
    """Object key of a stored video."""
    return f"videos/{sha256}{suffix.lower() or '.mp4'}"


def frame_key(sha256: str, frame_index: int) -> str:
    """Object key of a sampled frame's JPEG."""
    return f"frames/{sha256}/{frame_index:06d}.jpg"


def face_key(sha256: str, frame_index: int, face_index: int) -> str:
    """Object key of a face's aligned crop (150×150 JPEG)."""
    return f"faces/{sha256}/{frame_index:06d}_{face_index:02d}.jpg"


def alert_key(sha256: str, person: str) -> str:
    """Object key of a monitor alert's thumbnail (the matched face's aligned crop): one per video and person, as
    the alert itself. A name other than ``[A-Za-z0-9._-]`` is reduced to those characters, plus a hash of the full
    name so that two people never share a key (``José`` and ``Josè``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", person).strip("._") or "person"
    if safe != person:
        safe = f"{safe}-{hashlib.sha1(person.encode()).hexdigest()[:8]}"
    return f"alerts/{sha256}/{safe}.jpg"


class ObjectStore(Protocol):
    """What the engine needs of an object store."""

    url: str

    def check(self) -> None: ...
    def exists(self, key: str) -> bool: ...
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, dest: Path) -> Path: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...


class LocalObjectStore:
    """Objects as files below a root folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"object key escapes the store: {key!r}")
        return path

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as exc:
            raise StoreUnreachable(f"object store folder {self.root} is not writable: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _write(self, key: str, writer) -> None:  # noqa: ANN001 - a callable taking an open binary file
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                writer(fh)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._write(key, lambda fh: fh.write(data))

    def put_file(self, key: str, path: Path) -> None:
        def copy(fh) -> None:  # noqa: ANN001
            with open(path, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)

        self._write(key, copy)

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def download(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), dest)
        return dest

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root.resolve()
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield key


class S3ObjectStore:
    """Objects in ``s3://bucket/prefix`` through boto3's normal credential chain.

    ``endpoint_url`` (or boto3's own ``AWS_ENDPOINT_URL``) points it at any S3-compatible store.
    """

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        if not url.startswith("s3://"):
            raise ValueError(f"not an s3:// URL: {url}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {url!r}")
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 5, "mode": "standard"})
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            hint = "it does not exist: create it first" if code in ("404", "NoSuchBucket") else code
            raise StoreUnreachable(f"S3 bucket {self.bucket!r} is not usable ({hint})") from exc
        except BotoCoreError as exc:
            raise StoreUnreachable(f"cannot reach S3 for bucket {self.bucket!r}: {exc}") from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def put_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def download(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, self._key(key), str(dest))
        return dest

    def list(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                yield item["Key"][strip:]


def open_object_store(url: str, endpoint_url: str | None = None) -> ObjectStore:
    """``s3://bucket/prefix`` → S3; anything else is a local folder."""
    if url.startswith("s3://"):
        return S3ObjectStore(url, endpoint_url)
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"unsupported object store URL {url!r}: use a folder or s3://bucket/prefix")
    return LocalObjectStore(url.removeprefix("file://"))


def open_s3_bucket(bucket: str, endpoint_url: str | None = None) -> S3ObjectStore:
    """The whole bucket ``bucket`` (no prefix) as an S3 store: for listing, downloading or checking a source."""
    return S3ObjectStore(f"s3://{bucket}", endpoint_url)
