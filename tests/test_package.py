"""The package away from this checkout: a wheel built offline, installed into a fresh venv, run from another folder.

What an installed copy needs at run time must be inside the wheel (the weights manifest, the bundled challenges), and
it must not fall back on this checkout: the fresh venv's ``engine`` is imported, the checkout is not recognised as
its home, and downloads go to the per-user cache. The dependencies (torch and the rest) are not downloaded: a
``.pth`` file makes this project's ``.venv`` site-packages importable from the fresh venv, after its own.

About a minute on the project's 2-core CPU: the build and the install take seconds (uv, offline, from its cache), then
each command is a fresh process that loads torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

#: What the wheel must carry for the console command to work anywhere.
REQUIRED_IN_WHEEL = ("engine/cli.py", "engine/inference/manifest.toml", "engine/challenges/demo.toml")
STEP_TIMEOUT_S = 120  # per subprocess; the whole module stays within about two minutes


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    work: Path  # an empty folder outside the checkout: every command runs there

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``faceengine ARGS`` from the fresh venv, with none of this session's ENGINE_* settings nor PYTHONPATH."""
        full = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_") and k != "PYTHONPATH"}
        full.update({"XDG_CACHE_HOME": str(self.work / "cache"), "COLUMNS": "250", **(env or {})})
        return subprocess.run(
            [str(self.venv / "bin" / "faceengine"), *args],
            capture_output=True, text=True, env=full, cwd=self.work, timeout=STEP_TIMEOUT_S,
        )  # fmt: skip


def _sh(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=STEP_TIMEOUT_S)


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the package's sources (so the build writes nothing into the checkout): with uv from its
    cache, else pip without build isolation; skips when neither can build offline."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("engine", "kernels"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    uv = Path(sys.executable).parent / "uv"
    attempts = []
    if uv.exists() or shutil.which("uv"):
        attempts.append((str(uv) if uv.exists() else "uv", "build", "--wheel", "--offline", "-o", dist, src))
    attempts.append((sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, src))
    errors = []
    for cmd in attempts:
        res = _sh(*cmd, cwd=tmp)
        wheels = sorted(dist.glob("faceengine-*.whl"))
        if res.returncode == 0 and wheels:
            return wheels[-1]
        errors.append(f"{Path(str(cmd[0])).name}: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
    pytest.skip(f"cannot build a wheel offline here (needs uv's cache or setuptools>=68 + wheel): {errors}")


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A venv without system site packages, the wheel installed with no dependencies, and this project's .venv
    site-packages on its path after its own (a plain path line: the .pth files there, the checkout's editable
    install among them, are not run)."""
    venv = tmp / "venv"
    res = _sh(sys.executable, "-m", "venv", "--without-pip", venv)
    assert res.returncode == 0, res.stderr
    python = venv / "bin" / "python"
    uv = Path(sys.executable).parent / "uv"
    if uv.exists():
        res = _sh(uv, "pip", "install", "--offline", "--no-deps", "--python", python, wheel)
    else:
        res = _sh(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel)
    assert res.returncode == 0, res.stderr
    site = _sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    (Path(site) / "zz_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("package")
    wheel = _build_wheel(tmp)
    venv = _fresh_venv(tmp, wheel)
    work = tmp / "work"
    work.mkdir()
    return Installed(wheel, venv, work)


def test_wheel_carries_what_runs_need(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    missing = [name for name in REQUIRED_IN_WHEEL if name not in names]
    assert not missing, f"not in the wheel: {missing}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "faceengine = engine.cli:main" in zipfile.ZipFile(installed.wheel).read(entry_points).decode()
    assert not [n for n in names if n.endswith((".pth", ".dat", ".bin", ".onnx"))], "weights never ship"


def test_installed_copy_is_its_own(installed: Installed) -> None:
    """The fresh venv imports its own engine, knows it is no checkout (no default mirror, downloads into the user's
    cache) and tells the user the console command, not `python cli.py`."""
    probe = (
        "import engine, json; from engine.config import environment; from engine.inference import weights; "
        "spec = weights.load_manifest()['retinaface_mnet025']; "
        "print(json.dumps({'module': engine.__file__, 'checkout': str(environment.checkout_root()), "
        "'weights_dir': str(weights.weights_dir()), 'mirror': str(environment.weights_mirror()), "
        "'n_weights': len(weights.load_manifest()), 'status': weights.check(spec).detail}))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_") and k != "PYTHONPATH"}
    env["XDG_CACHE_HOME"] = str(installed.work / "cache")
    res = subprocess.run(
        [str(installed.python), "-c", probe], capture_output=True, text=True, env=env, cwd=installed.work,
        timeout=STEP_TIMEOUT_S,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert Path(got["module"]).is_relative_to(installed.venv), got["module"]
    assert got["checkout"] == "None" and got["mirror"] == "None" and got["n_weights"] >= 3
    assert Path(got["weights_dir"]) == installed.work / "cache" / "faceengine" / "weights"
    assert "`faceengine weights pull`" in got["status"], got["status"]


def test_console_command_help_and_version(installed: Installed) -> None:
    res = installed.run("--help")
    assert res.returncode == 0, res.stderr
    for verb in ("run", "faces", "doctor", "detect", "weights"):
        assert verb in res.stdout
    res = installed.run("--version")
    assert res.returncode == 0 and "0.1.0" in res.stdout, res.stdout + res.stderr


def test_doctor_with_the_mirror(installed: Installed, shared_data: Path) -> None:
    mirror = shared_data.parent / "weights"
    res = installed.run(
        "doctor", "--db", f"sqlite:///{installed.work / 'doctor.db'}", "--store", str(installed.work / "objects"),
        env={"ENGINE_WEIGHTS_MIRROR": str(mirror)},
    )  # fmt: skip
    assert f"mirror: {mirror / 'mobilenet0.25_Final.pth'}" in res.stdout, res.stdout + res.stderr
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all required checks passed" in res.stdout


def test_detect_on_a_shared_photo(installed: Installed, shared_data: Path) -> None:
    """Models load from the mirror and run: a still photo, as JSON (the whole `faces` run is tested below)."""
    photo = shared_data / "faces" / "obama.jpg"
    mirror = {"ENGINE_WEIGHTS_MIRROR": str(shared_data.parent / "weights")}
    res = installed.run("detect", str(photo), "--json", env=mirror)
    assert res.returncode == 0, res.stderr
    faces = json.loads(res.stdout)[str(photo)]
    assert len(faces) == 1 and faces[0]["score"] > 0.9


def test_faces_on_a_shared_clip(installed: Installed, shared_data: Path, media_dir: Path) -> None:
    """`faceengine faces` on a folder holding a 2 s cut of the shared Hamilton clip: tables and objects land in the
    working folder, never in the checkout."""
    videos = installed.work / "videos"
    videos.mkdir(exist_ok=True)
    shutil.copy(media_dir / "plain2s.mp4", videos / "hamilton2s.mp4")
    env = {"ENGINE_WEIGHTS_MIRROR": str(shared_data.parent / "weights"), "ENGINE_SHARED_DATA": str(shared_data)}
    res = installed.run("faces", "--videos", str(videos), "--quiet", "--device", "cpu", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "faces" in res.stdout
    assert list((installed.work / "runs").glob("*/engine.db")), "the run's database is under the working folder"
