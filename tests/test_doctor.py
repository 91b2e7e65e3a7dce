"""`cli.py doctor` and `cli.py weights` tell a new user what is there and what is missing, in plain words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli

MANIFEST = REPO / "engine" / "inference" / "manifest.toml"


def test_doctor_all_good(tmp_path: Path) -> None:
    res = run_cli("doctor", "--db", f"sqlite:///{tmp_path}/d.db", "--store", str(tmp_path / "o"))
    assert res.returncode == 0, res.stdout + res.stderr
    for word in (
        "ffmpeg",
        "torchcodec",
        "mobilenet0.25_Final.pth",
        "database",
        "object store",
        "all required checks passed",
    ):
        assert word in res.stdout


def test_doctor_says_what_is_missing(tmp_path: Path) -> None:
    empty = tmp_path / "w"
    empty.mkdir()
    (empty / "manifest.toml").write_text(MANIFEST.read_text())
    res = run_cli(
        "doctor",
        "--db",
        "postgresql://x@127.0.0.1:1/none",
        "--store",
        str(tmp_path / "o"),
        env={"ENGINE_WEIGHTS_DIR": str(empty), "ENGINE_WEIGHTS_MIRROR": "", "COLUMNS": "250"},
    )
    assert res.returncode == 1
    assert "MISSING" in res.stdout and "weights pull" in res.stdout
    assert "cannot reach database" in res.stdout
    assert "required check(s) failed" in res.stdout


def test_weights_list_and_pull_from_mirror(tmp_path: Path, shared_data: Path) -> None:
    d = tmp_path / "w"
    d.mkdir()
    (d / "manifest.toml").write_text(MANIFEST.read_text())
    env = {"ENGINE_WEIGHTS_DIR": str(d), "ENGINE_WEIGHTS_MIRROR": str(shared_data.parent / "weights"), "COLUMNS": "250"}
    res = run_cli("weights", "list", env=env)
    assert res.returncode == 0 and "mirror" in res.stdout and "MIT" in res.stdout
    res = run_cli("weights", "pull", env=env)
    assert res.returncode == 0 and "ok" in res.stdout
    assert (d / "mobilenet0.25_Final.pth").exists() is False  # pull verified the mirror copy in place


@pytest.mark.skipif(not (REPO.parent / "shared" / "weights").is_dir(), reason="needs ../shared beside the checkout")
def test_doctor_finds_the_mirror_beside_the_checkout(tmp_path: Path) -> None:
    """Outside the Makefile (no ENGINE_WEIGHTS_MIRROR), a checkout beside ../shared still takes weights from it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env.update({"ENGINE_WEIGHTS_DIR": str(tmp_path / "w"), "COLUMNS": "250"})
    res = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "doctor", "--db", f"sqlite:///{tmp_path}/d.db", "--store",
         str(tmp_path / "o")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert "weights:" in res.stdout and not [line for line in res.stdout.splitlines() if "MISSING  weights" in line]
    assert f"mirror: {(REPO.parent / 'shared' / 'weights').resolve() / 'mobilenet0.25_Final.pth'}" in res.stdout


def test_doctor_shows_the_whole_database_error(pg_url: str) -> None:
    """The server's own reason, whole (it was cut at 160 characters, in the middle of `FATAL:  database "x" ...`)."""
    from conftest import PG_BASE

    missing = PG_BASE.rsplit("/", 1)[0] + "/no_such_database_for_doctor"
    res = run_cli("doctor", "--db", missing)
    assert res.returncode == 1
    assert 'database "no_such_database_for_doctor" does not exist' in res.stdout
