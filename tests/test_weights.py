"""Weight manifest and demo media: where each resolves from, sha256 checks, refusal of corrupted files, download,
and one clear sentence offline."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from engine.config import environment
from engine.inference import weights

UNREACHABLE = "http://127.0.0.1:9/x"  # the discard port: nothing listens, the connection is refused at once

RETINA = "mobilenet0.25_Final.pth"


@pytest.fixture
def mirror(shared_data: Path) -> Path:
    return shared_data.parent / "weights"


@pytest.fixture
def empty_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "weights"
    d.mkdir()
    (d / "manifest.toml").write_text(weights.BUNDLED_MANIFEST.read_text())
    monkeypatch.setenv("ENGINE_WEIGHTS_DIR", str(d))
    monkeypatch.setenv("ENGINE_WEIGHTS_MIRROR", "")  # empty: no mirror at all, not even ../shared/weights
    return d


def test_manifest_entries_are_complete() -> None:
    specs = weights.load_manifest()
    spec = specs["retinaface_mnet025"]
    assert spec.file == RETINA and spec.license == "MIT" and spec.url.startswith("https://")
    for s in specs.values():
        assert len(s.sha256) == 64 and s.license and (s.url or s.package)


def test_mirror_copy_matches_manifest(mirror: Path, empty_weights: Path) -> None:
    path = weights.resolve("retinaface_mnet025", mirror=mirror, download=False)
    assert path == mirror / RETINA
    assert weights.sha256_file(path) == weights.load_manifest()["retinaface_mnet025"].sha256


def test_weights_folder_comes_before_mirror(mirror: Path, empty_weights: Path) -> None:
    (empty_weights / RETINA).write_bytes((mirror / RETINA).read_bytes())
    assert weights.resolve("retinaface_mnet025", mirror=mirror) == empty_weights / RETINA


def test_corrupted_file_is_refused(mirror: Path, empty_weights: Path) -> None:
    data = bytearray((mirror / RETINA).read_bytes())
    data[1000] ^= 0xFF
    (empty_weights / RETINA).write_bytes(bytes(data))
    with pytest.raises(weights.WeightError, match="sha256") as info:
        weights.resolve("retinaface_mnet025", mirror=mirror)
    assert "refusing" in str(info.value) and "weights pull" in str(info.value)
    assert weights.check(weights.load_manifest()["retinaface_mnet025"], mirror).origin == "corrupted"


def test_missing_file_says_how_to_get_it(empty_weights: Path) -> None:
    with pytest.raises(weights.WeightError, match="weights pull"):
        weights.resolve("retinaface_mnet025", download=False)
    with pytest.raises(weights.WeightError, match="no weight named"):
        weights.resolve("nope")


def _point_manifest_at(d: Path, url: str) -> None:
    text = (d / "manifest.toml").read_text()
    lines = [f'url = "{url}"' if line.startswith("url = ") else line for line in text.splitlines()]
    (d / "manifest.toml").write_text("\n".join(lines) + "\n")


def test_download_is_verified(mirror: Path, empty_weights: Path, http_server: tuple[str, Path]) -> None:
    base, root = http_server
    (root / RETINA).write_bytes((mirror / RETINA).read_bytes())
    (root / "wrong.pth").write_bytes(b"not the model")
    _point_manifest_at(empty_weights, f"{base}/wrong.pth")
    with pytest.raises(weights.WeightError, match="refused"):
        weights.resolve("retinaface_mnet025")
    assert not (empty_weights / RETINA).exists() and not list(empty_weights.glob(".*"))
    _point_manifest_at(empty_weights, f"{base}/{RETINA}")
    assert weights.resolve("retinaface_mnet025") == empty_weights / RETINA
    _point_manifest_at(empty_weights, f"{base}/missing.pth")
    (empty_weights / RETINA).unlink()
    with pytest.raises(weights.WeightError, match="ENGINE_WEIGHTS_MIRROR"):
        weights.resolve("retinaface_mnet025")


def test_embedding_model_comes_from_its_package(empty_weights: Path) -> None:
    import face_recognition_models

    path = weights.resolve("dlib_resnet_v1", download=False)
    assert path == Path(face_recognition_models.face_recognition_model_location())
    assert weights.sha256_file(path) == weights.load_manifest()["dlib_resnet_v1"].sha256


def test_manifest_is_package_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no manifest in the weights folder the one inside the package is read (an installed copy has no other)."""
    monkeypatch.setenv("ENGINE_WEIGHTS_DIR", str(tmp_path))
    assert (REPO / "engine" / "inference" / "manifest.toml").is_file()
    assert not (REPO / "weights" / "manifest.toml").exists()
    assert set(weights.load_manifest()) >= {"retinaface_mnet025", "dlib_resnet_v1", "hse_faceres_json"}


def test_weights_folder_in_a_checkout_and_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINE_WEIGHTS_DIR", raising=False)
    assert environment.checkout_root() == REPO
    assert weights.weights_dir() == REPO / "weights" and weights.cli_command() == "python cli.py"
    monkeypatch.setattr(environment, "checkout_root", lambda: None)  # as an installed copy sees itself
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.weights_dir() == tmp_path / "xdg" / "faceengine" / "weights"
    assert weights.cli_command() == "faceengine"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.weights_dir() == tmp_path / "home" / ".cache" / "faceengine" / "weights"
    monkeypatch.setenv("ENGINE_WEIGHTS_DIR", str(tmp_path / "mine"))
    assert weights.weights_dir() == tmp_path / "mine"


def test_checkout_is_recognised_by_its_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the package whose parent holds no faceengine pyproject (site-packages, a vendored copy) is not a
    checkout."""
    source = (REPO / "engine" / "config" / "environment.py").read_text()
    for i, pyproject in enumerate((None, '[project]\nname = "someone-else"\n', "not toml [")):
        root = tmp_path / f"site{i}"
        (root / "engine" / "config").mkdir(parents=True)
        (root / "engine" / "config" / "environment.py").write_text(source)
        if pyproject is not None:
            (root / "pyproject.toml").write_text(pyproject)
        copy = importlib.util.spec_from_file_location("env_copy", root / "engine" / "config" / "environment.py")
        module = importlib.util.module_from_spec(copy)
        copy.loader.exec_module(module)
        assert module.checkout_root() is None, pyproject


def test_default_mirror_and_shared_data_beside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clone = tmp_path / "clone"
    monkeypatch.setattr(environment, "checkout_root", lambda: clone)
    monkeypatch.delenv("ENGINE_WEIGHTS_MIRROR", raising=False)
    monkeypatch.delenv("ENGINE_SHARED_DATA", raising=False)
    assert environment.weights_mirror() is None and environment.shared_data() is None  # no ../shared: none
    (tmp_path / "shared" / "weights").mkdir(parents=True)
    (tmp_path / "shared" / "data").mkdir()
    assert environment.weights_mirror() == tmp_path / "shared" / "weights"
    assert environment.shared_data() == tmp_path / "shared" / "data"
    monkeypatch.setenv("ENGINE_WEIGHTS_MIRROR", "")  # set but empty: no mirror
    monkeypatch.setenv("ENGINE_SHARED_DATA", str(tmp_path / "elsewhere"))
    assert environment.weights_mirror() is None and environment.shared_data() == tmp_path / "elsewhere"
    monkeypatch.delenv("ENGINE_WEIGHTS_MIRROR")
    monkeypatch.setattr(environment, "checkout_root", lambda: None)  # installed: no default mirror
    assert environment.weights_mirror() is None


def test_offline_download_is_one_sentence(empty_weights: Path) -> None:
    """No copy anywhere and the upstream unreachable: one line naming the URL and the folder to put the file in."""
    _point_manifest_at(empty_weights, UNREACHABLE)
    with pytest.raises(weights.WeightError) as info:
        weights.resolve("retinaface_mnet025")
    message = str(info.value)
    assert UNREACHABLE in message and str(empty_weights) in message and RETINA in message
    assert "ENGINE_WEIGHTS_MIRROR" in message and "\n" not in message
    assert not list(empty_weights.glob(f".{RETINA}*"))  # no half-written file left behind


def test_offline_cli_says_what_to_download(empty_weights: Path, shared_data: Path) -> None:
    """As a user sees it: `detect` on a photo with no weights and no network prints the sentence, no traceback."""
    _point_manifest_at(empty_weights, UNREACHABLE)
    env = {"ENGINE_WEIGHTS_DIR": str(empty_weights), "ENGINE_WEIGHTS_MIRROR": ""}
    res = run_cli("detect", str(shared_data / "faces" / "obama.jpg"), "--json", env=env, timeout=300)
    assert res.returncode != 0
    assert UNREACHABLE in res.stderr + res.stdout and str(empty_weights) in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


# ------------------------------------------------------------------------------------- demo media (make_corpus)

MEDIA_MANIFEST = REPO / "benchmarks" / "demo_media.toml"


def _media_entries() -> list[dict]:
    return tomllib.loads(MEDIA_MANIFEST.read_text())["media"]


def _make_corpus():  # noqa: ANN202 - the benchmarks folder is no package: load the builder by path
    if "make_corpus" not in sys.modules:
        spec = importlib.util.spec_from_file_location("make_corpus", REPO / "benchmarks" / "make_corpus.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_corpus"] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules["make_corpus"]


def test_demo_media_manifest_pins_the_shared_files(shared_data: Path) -> None:
    entries = _media_entries()
    assert len(entries) == 4
    for entry in entries:
        path = shared_data / entry["file"]
        assert path.stat().st_size == entry["size_bytes"], entry["file"]
        assert weights.sha256_file(path) == entry["sha256"], entry["file"]
        assert entry["url"].startswith("https://raw.githubusercontent.com/") and entry["license"]


def test_demo_media_download_is_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path, http_server: tuple[str, Path]
) -> None:
    """No shared folder: every file is downloaded into the cache, verified; a wrong file is refused; then cached."""
    base, root = http_server
    lines = []
    for entry in _media_entries():
        served = root / Path(entry["file"]).name
        served.write_bytes((shared_data / entry["file"]).read_bytes())
        lines += [f'[[media]]\nfile = "{entry["file"]}"\nsha256 = "{entry["sha256"]}"\nurl = "{base}/{served.name}"\n']
    manifest = tmp_path / "media.toml"
    manifest.write_text("\n".join(lines))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    mc = _make_corpus()
    got = mc.resolve_media(empty, manifest)
    cache = tmp_path / "cache" / "faceengine" / "media"
    assert got == {e["file"]: cache / e["file"] for e in _media_entries()}
    for served in root.iterdir():
        served.write_bytes(b"changed upstream")  # the cached copies are used, not downloaded again
    assert mc.resolve_media(empty, manifest) == got
    (cache / "audio" / "hotwords.mp3").unlink()
    with pytest.raises(mc.MediaMissing, match="refused"):
        mc.resolve_media(empty, manifest)
    assert not (cache / "audio" / "hotwords.mp3").exists()


def test_make_corpus_offline_stops_with_one_sentence(tmp_path: Path) -> None:
    """`make run` on a fresh clone with no ../shared and no network: exit code 2, the URL and the folders, no
    traceback."""
    manifest = tmp_path / "media.toml"
    manifest.write_text(
        "\n".join(f'url = "{UNREACHABLE}"' if line.startswith("url = ") else line
                  for line in MEDIA_MANIFEST.read_text().splitlines())
    )  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env = {**clean, "ENGINE_SHARED_DATA": str(empty), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "make_corpus.py"), str(tmp_path / "out"), "--media-manifest",
         str(manifest)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert UNREACHABLE in res.stderr and str(tmp_path / "cache" / "faceengine" / "media") in res.stderr
    assert "ENGINE_SHARED_DATA" in res.stderr and not (tmp_path / "out").exists()
