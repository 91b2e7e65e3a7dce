"""Faces-only runs (issue 15): `faces --videos DIR` (or `run` without --challenge) on any folder, every stage but the
prompts, under a name of its own so that two sources, or a source and a challenge, never share rows."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import run_cli

from engine.config import ConfigError, faces_only, load_challenge, parse_challenge
from engine.config.challenge import FACES_ONLY_NAME


def test_a_challenge_needs_a_baseline_only_for_its_prompts() -> None:
    assert parse_challenge('name = "x"\n').baseline is None
    with pytest.raises(ConfigError, match="'baseline' is missing: the prompts are cut from its audio"):
        parse_challenge('name = "x"\n[[prompts]]\nname = "a"\nstart = 0\nend = 2\n')
    with pytest.raises(ConfigError, match="no baseline"):
        parse_challenge('name = "x"\n').baseline_uri()


def test_faces_only_names(tmp_path: Path) -> None:
    a, b = tmp_path / "my videos", tmp_path / "other"
    a.mkdir(), b.mkdir()
    first, again, other = faces_only(a), faces_only(str(a) + "/"), faces_only(b)
    assert first.name == again.name and first.name != other.name  # the same folder adds to its own run
    assert first.name.startswith("faces-my-videos-") and FACES_ONLY_NAME.fullmatch(first.name)
    assert first.prompts == () and first.baseline is None and first.videos == str(a.resolve())
    assert faces_only("s3://bucket/prefix/").name.startswith("faces-prefix-")
    found = load_challenge(first.name)  # what report/export are given
    assert found.name == first.name and found.prompts == ()


def test_faces_cli_two_folders_never_share_rows(tmp_path: Path, media_dir: Path) -> None:
    """Two folders, default databases (runs/<name>/engine.db under the working folder): one database each, each with
    its own video only; the name printed is what `report` takes."""
    names = []
    for folder in ("a", "b"):
        videos = tmp_path / folder
        videos.mkdir()
        shutil.copy(media_dir / ("plain2s.mp4" if folder == "a" else "no_audio.mp4"), videos / f"{folder}.mp4")
        res = run_cli("faces", "--videos", str(videos), "--device", "cpu", "--quiet", cwd=tmp_path)
        assert res.returncode == 0, res.stderr + res.stdout
        line = next(x for x in res.stdout.splitlines() if " · challenge " in x)
        names.append(line.split(" · challenge ")[1].split(" · ")[0])
        assert "prompts found: 0" in res.stdout
    assert names[0] != names[1] and all(n.startswith("faces-") for n in names)
    for name, folder in zip(names, ("a", "b"), strict=True):
        db = tmp_path / "runs" / name / "engine.db"
        with sqlite3.connect(db) as conn:
            files = [r[0] for r in conn.execute("SELECT file_name FROM videos")]
            faces = conn.execute("SELECT count(*) FROM faces").fetchone()[0]
        assert files == [f"{folder}.mp4"] and faces > 0
    report = run_cli("report", "--challenge", names[0], "--out", str(tmp_path / "r.html"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "r.html").stat().st_size > 1000


def test_run_without_challenge_or_videos_says_what_to_give(tmp_path: Path) -> None:
    res = run_cli("run", cwd=tmp_path)
    assert res.returncode == 2 and "--videos SOURCE for a faces-only run" in res.stderr
