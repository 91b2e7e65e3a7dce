"""`cli.py doctor` and `cli.py weights` tell a new user what is there and what is missing, in plain words."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli


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
    (empty / "manifest.toml").write_text((Path(__file__).parent.parent / "weights/manifest.toml").read_text())
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
    (d / "manifest.toml").write_text((Path(__file__).parent.parent / "weights/manifest.toml").read_text())
    env = {"ENGINE_WEIGHTS_DIR": str(d), "ENGINE_WEIGHTS_MIRROR": str(shared_data.parent / "weights"), "COLUMNS": "250"}
    res = run_cli("weights", "list", env=env)
    assert res.returncode == 0 and "mirror" in res.stdout and "MIT" in res.stdout
    res = run_cli("weights", "pull", env=env)
    assert res.returncode == 0 and "ok" in res.stdout
    assert (d / "mobilenet0.25_Final.pth").exists() is False  # pull verified the mirror copy in place
