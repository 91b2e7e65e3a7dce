"""Sources: a folder (recursive), a file of URLs (plain HTTP without yt-dlp), an s3:// prefix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.sources import FetchError, SourceError, fetch, list_sources


def test_folder_is_listed_recursively_by_extension(tmp_path: Path, hamilton: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(hamilton, tmp_path / "a" / "b" / "clip.MP4")
    shutil.copy(hamilton, tmp_path / "z.mov")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "z.json").write_text(
        json.dumps({"id": "42", "authorMeta": {"name": "ann"}, "musicMeta": {"musicId": "777"}, "text": "hi"})
    )
    items = list_sources(tmp_path)
    assert [i.name for i in items] == ["clip.MP4", "z.mov"]
    _, meta = fetch(items[1], tmp_path / "cache")
    assert meta == {"source_id": "42", "author": "ann", "description": "hi", "sound_id": "777"}


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        list_sources(tmp_path / "nope")


def test_url_file_with_plain_http(
    tmp_path: Path, hamilton: Path, http_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("engine.sources._yt_dlp_command", lambda: None)  # as on a machine without yt-dlp
    base, root = http_server
    shutil.copy(hamilton, root / "clip.mp4")
    urls = tmp_path / "urls.txt"
    urls.write_text(f"# a comment\n{base}/clip.mp4\n\n{base}/missing.mp4\n")
    items = list_sources(urls)
    assert [(i.kind, i.name) for i in items] == [("url", "clip.mp4"), ("url", "missing.mp4")]
    path, _ = fetch(items[0], tmp_path / "cache")
    assert path.read_bytes() == hamilton.read_bytes()
    assert fetch(items[0], tmp_path / "cache")[0] == path  # cached, not downloaded twice
    with pytest.raises(FetchError, match="404"):
        fetch(items[1], tmp_path / "cache")


def test_s3_prefix(bucket: str, hamilton: Path, tmp_path: Path) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.upload_file(str(hamilton), bucket, "in/one.mp4")
    s3.put_object(Bucket=bucket, Key="in/readme.txt", Body=b"x")
    s3.upload_file(str(hamilton), bucket, "other/two.mp4")
    items = list_sources(f"s3://{bucket}/in/")
    assert [(i.kind, i.uri) for i in items] == [("s3", f"s3://{bucket}/in/one.mp4")]
    path, _ = fetch(items[0], tmp_path / "cache")
    assert path.read_bytes() == hamilton.read_bytes()
    with pytest.raises(SourceError, match="no video objects"):
        list_sources(f"s3://{bucket}/empty/")
