"""The challenge: a TOML file (a path, or the name of one bundled in ``engine/challenges``), parsed once into a
typed :class:`Challenge`, its optional tables (``[faces]``, ``[align]``, ``[logo]``, ``[clustering]``) validated
into the section types of :mod:`engine.config.sections` at the same time, so a wrong key stops the command before
any work starts and no stage reads the TOML again.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from engine.config.errors import ConfigError
from engine.config.sections import (
    AlignSettings,
    ClusterSettings,
    FaceSettings,
    LogoSettings,
    parse_align,
    parse_cluster,
    parse_faces,
    parse_logo,
)


@dataclass(frozen=True)
class Prompt:
    """One audio prompt of the challenge's baseline, in seconds of the baseline."""

    name: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Challenge:
    """A parsed, validated challenge TOML: its prompts, the videos it names (``videos``, optional), and one typed
    settings object per optional table (their defaults when the table is absent; ``logo`` is ``None`` without one)."""

    name: str
    baseline: str | None  # None: no prompts to align (a faces-only run, see :func:`faces_only`)
    prompts: tuple[Prompt, ...]
    path: Path | None = None
    videos: str | None = None
    faces: FaceSettings = field(default_factory=FaceSettings)
    align: AlignSettings = field(default_factory=AlignSettings)
    logo: LogoSettings | None = None
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    def baseline_uri(self, videos_dir: Path | None = None) -> str:
        """Where the baseline lives: a URL or ``s3://`` key as written, else a local path.

        A relative path is taken relative to the TOML file; for a bundled challenge, whose TOML sits inside the
        package, it is looked up in the videos folder instead.
        """
        if self.baseline is None:
            raise ConfigError(f"challenge {self.name!r} has no baseline: there are no prompts to align")
        if "://" in self.baseline:
            return self.baseline
        candidates = []
        if self.path is not None:
            candidates.append(self.path.parent / self.baseline)
        if videos_dir is not None:
            candidates.append(Path(videos_dir) / self.baseline)
        for candidate in candidates:
            if candidate.exists():
                return str(candidate.resolve())
        return str(candidates[0]) if candidates else self.baseline


def bundled_challenges() -> list[str]:
    """Names of the challenge TOMLs shipped inside the package."""
    root = resources.files("engine.challenges")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_challenge(name_or_path: str | Path) -> Challenge:
    """Load a challenge from a TOML path, or by the name of a bundled one (``demo``)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"challenge file not found: {path}")
        return parse_challenge(path.read_text(encoding="utf-8"), path.resolve())
    if FACES_ONLY_NAME.fullmatch(str(name_or_path)):  # a faces-only run, named by `run` without a challenge
        return Challenge(str(name_or_path), None, ())
    bundled = resources.files("engine.challenges") / f"{name_or_path}.toml"
    if bundled.is_file():
        return parse_challenge(bundled.read_text(encoding="utf-8"), Path(str(bundled)), bundled=True)
    raise ConfigError(
        f"unknown challenge {str(name_or_path)!r}: give a TOML path or one of the bundled challenges "
        f"({', '.join(bundled_challenges())})"
    )


def parse_challenge(text: str, path: Path | None = None, bundled: bool = False) -> Challenge:
    """Validate a challenge TOML's text, its optional tables included; every error names the key at fault."""
    where = str(path) if path else "<challenge>"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'name' must be a non-empty string")
    if any(c in name for c in "/\\") or name.startswith("."):
        raise ConfigError(f"{where}: 'name' {name!r} must not contain path separators")
    baseline = raw.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or not baseline):
        raise ConfigError(f"{where}: 'baseline' must be a path, URL or s3:// key")
    prompts = []
    for i, entry in enumerate(raw.get("prompts", [])):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: prompts[{i}] must be a table with name, start, end")
        try:
            prompt = Prompt(str(entry["name"]), float(entry["start"]), float(entry["end"]))
        except KeyError as exc:
            raise ConfigError(f"{where}: prompts[{i}] lacks {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: prompts[{i}]: start and end must be numbers") from exc
        if not 0 <= prompt.start < prompt.end:
            raise ConfigError(f"{where}: prompt {prompt.name!r}: need 0 <= start < end")
        prompts.append(prompt)
    names = [p.name for p in prompts]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: prompt names must be unique")
    if prompts and baseline is None:
        raise ConfigError(
            f"{where}: 'baseline' is missing: the prompts are cut from its audio (a path, URL or s3:// key)"
        )
    videos = raw.get("videos")
    if videos is not None and not isinstance(videos, str):
        raise ConfigError(f"{where}: 'videos' must be a folder, a file of URLs or an s3:// prefix (got {videos!r})")
    name = name.strip()
    # A bundled challenge's baseline is resolved against the videos folder, not the package.
    own_path = None if bundled else path
    return Challenge(
        name,
        baseline,
        tuple(prompts),
        own_path,
        videos or None,
        # In the order the run has always read them, so the first error reported stays the same.
        logo=parse_logo(raw.get("logo")),
        cluster=parse_cluster(raw.get("clustering", {})),
        faces=parse_faces(raw.get("faces", {}), name),
        align=parse_align(raw.get("align", {}), str(own_path) if own_path else f"challenge {name!r}"),
    )


#: The names :func:`faces_only` gives (``report``/``export`` find such a run by its name alone).
FACES_ONLY_NAME = re.compile(r"faces-[A-Za-z0-9_-]{1,40}-[0-9a-f]{8}")


def faces_only(source: str | Path) -> Challenge:
    """The challenge of a faces-only run on ``source`` (a folder, a file of URLs or an ``s3://`` prefix): no
    baseline, no prompts, every other stage. Its name is the source's own plus a hash of where it is
    (``faces-<name>-<8 hex>``), so two folders never share rows, and the same folder run again adds to its own."""
    text = str(source)
    where = text if "://" in text else str(Path(text).expanduser().resolve())
    stem = Path(where.rstrip("/")).name or "videos"
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(stem).stem)[:40] or "videos"
    digest = hashlib.sha256(where.encode()).hexdigest()[:8]
    return Challenge(f"faces-{stem}-{digest}", None, (), videos=where)
