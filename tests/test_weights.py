"""Weight manifest: resolution order, sha256 checks, refusal of corrupted files, download."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.inference import weights

RETINA = "mobilenet0.25_Final.pth"


@pytest.fixture
def mirror(shared_data: Path) -> Path:
    return shared_data.parent / "weights"


@pytest.fixture
def empty_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "weights"
    d.mkdir()
    (d / "manifest.toml").write_text((weights.REPO_WEIGHTS / "manifest.toml").read_text())
    monkeypatch.setenv("ENGINE_WEIGHTS_DIR", str(d))
    monkeypatch.delenv("ENGINE_WEIGHTS_MIRROR", raising=False)
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
