"""Configuration in one place: typed run settings and the challenge TOML model.

Settings are read from explicit flags first, then ``ENGINE_*`` environment variables, then defaults, so the
CLI, tests and a Ray worker all build the same object the same way. A challenge is a TOML file (a path, or the
name of one bundled in ``engine/challenges``); later stages read their own tables from ``Challenge.raw``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from engine.pipeline.executor import KINDS as EXECUTORS

RUNTYPES = ("test", "prod")
DEVICES = ("auto", "cpu", "cuda")
#: RUNTYPE ``test`` processes only this many videos, as the seed pipeline did.
TEST_RUN_VIDEOS = 4
#: How boolean environment variables (``ENGINE_STREAM``, ``ENGINE_PACK_VIDEOS``) may be written.
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class ConfigError(ValueError):
    """A setting or a challenge file is wrong; the message says which and how to fix it."""


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
    """A parsed challenge TOML. ``raw`` keeps every table so later stages can read their own keys."""

    name: str
    baseline: str
    prompts: tuple[Prompt, ...]
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def baseline_uri(self, videos_dir: Path | None = None) -> str:
        """Where the baseline lives: a URL or ``s3://`` key as written, else a local path.

        A relative path is taken relative to the TOML file; for a bundled challenge, whose TOML sits inside the
        package, it is looked up in the videos folder instead.
        """
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
    bundled = resources.files("engine.challenges") / f"{name_or_path}.toml"
    if bundled.is_file():
        return parse_challenge(bundled.read_text(encoding="utf-8"), Path(str(bundled)), bundled=True)
    raise ConfigError(
        f"unknown challenge {str(name_or_path)!r}: give a TOML path or one of the bundled challenges "
        f"({', '.join(bundled_challenges())})"
    )


def parse_challenge(text: str, path: Path | None = None, bundled: bool = False) -> Challenge:
    """Validate a challenge TOML's text; every error names the key at fault."""
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
    if not isinstance(baseline, str) or not baseline:
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
    # A bundled challenge's baseline is resolved against the videos folder, not the package.
    return Challenge(name.strip(), baseline, tuple(prompts), None if bundled else path, raw)


def _pick(flag: Any, env: str, default: Any) -> Any:
    """Flag beats environment beats default; an empty environment variable counts as unset."""
    if flag is not None:
        return flag
    value = os.environ.get(env)
    return value if value not in (None, "") else default


def _flag(flag: bool | None, env: str, default: bool | None) -> bool | None:
    """A boolean setting: flag beats environment (1/0, true/false, yes/no, on/off) beats default."""
    value = _pick(flag, env, default)
    if isinstance(value, str):
        if value.strip().lower() not in _BOOLS:
            raise ConfigError(f"{env} must be one of {', '.join(_BOOLS)} (got {value!r})")
        return _BOOLS[value.strip().lower()]
    return value


def normalize_db_url(url: str) -> str:
    """Let users write ``postgresql://``: use the psycopg 3 driver we ship unless psycopg2 is installed."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            try:
                import psycopg2  # noqa: F401
            except ImportError:
                return "postgresql+psycopg://" + url[len(prefix) :]
            return "postgresql://" + url[len(prefix) :]
    return url


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if device not in DEVICES and not device.startswith("cuda:"):
        raise ConfigError(f"device must be one of {', '.join(DEVICES)} (got {device!r})")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but torch sees no CUDA GPU: use --device cpu or auto")
    return device


@dataclass(frozen=True)
class Settings:
    """Everything a run needs besides the challenge itself."""

    challenge: str
    db_url: str
    store_url: str
    runtype: str = "test"
    device: str = "cpu"
    runs_dir: Path = Path("runs")
    s3_endpoint_url: str | None = None
    weights_mirror: Path | None = None
    sample_interval: float = 0.5
    audio_rate: int = 16_000
    save_frames: bool = False
    force: bool = False
    executor: str = "local"  # where videos are processed: this process, or Ray actors (engine.pipeline.executor)
    ray_address: str | None = None  # a running Ray cluster; None starts a private local instance
    stream: bool = True  # local executor: decoding, models and storage overlapped (pipeline.stream_videos)
    batch_frames: int = 0  # frames per model batch and decode chunk; 0: automatic (pipeline.batch_frames)
    pack_videos: bool | None = None  # streaming: frames of several videos in one batch; None: on a GPU only

    @property
    def max_videos(self) -> int | None:
        """How many videos this run type processes (``None``: all)."""
        return TEST_RUN_VIDEOS if self.runtype == "test" else None

    @property
    def work_dir(self) -> Path:
        """Per-challenge folder for downloads and the default SQLite/objects."""
        return self.runs_dir / self.challenge

    def public_dict(self) -> dict[str, Any]:
        """Settings as plain values for the ``runs`` table (no secrets live here: S3 keys stay in boto3)."""
        out = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}

    @classmethod
    def load(
        cls,
        challenge: str,
        *,
        db_url: str | None = None,
        store_url: str | None = None,
        runtype: str | None = None,
        device: str | None = None,
        runs_dir: str | Path | None = None,
        s3_endpoint_url: str | None = None,
        weights_mirror: str | Path | None = None,
        sample_interval: float | None = None,
        save_frames: bool | None = None,
        force: bool | None = None,
        executor: str | None = None,
        ray_address: str | None = None,
        stream: bool | None = None,
        batch_frames: int | None = None,
        pack_videos: bool | None = None,
        resolve: bool = True,
    ) -> Settings:
        """Build settings for ``challenge`` from flags (non-None arguments), then environment, then defaults."""
        runs = Path(_pick(runs_dir, "ENGINE_RUNS_DIR", "runs"))
        work = runs / challenge
        rt = str(_pick(runtype, "ENGINE_RUNTYPE", "test")).lower()
        if rt not in RUNTYPES:
            raise ConfigError(f"runtype must be one of {', '.join(RUNTYPES)} (got {rt!r})")
        ex = str(_pick(executor, "ENGINE_EXECUTOR", "local")).lower()
        if ex not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)} (got {ex!r})")
        dev = str(_pick(device, "ENGINE_DEVICE", "auto")).lower()
        if resolve and ex == "local":
            dev = resolve_device(dev)
        elif resolve and dev not in DEVICES and not dev.startswith("cuda:"):
            # With Ray the workers, not this driver, hold the GPUs: each one resolves auto/cuda where it runs.
            raise ConfigError(f"device must be one of {', '.join(DEVICES)} (got {dev!r})")
        mirror = _pick(weights_mirror, "ENGINE_WEIGHTS_MIRROR", None)
        interval = float(_pick(sample_interval, "ENGINE_SAMPLE_INTERVAL", 0.5))
        if interval <= 0:
            raise ConfigError("sample interval must be positive")
        streaming = _flag(stream, "ENGINE_STREAM", True)
        packing = _flag(pack_videos, "ENGINE_PACK_VIDEOS", None)
        try:
            batch = int(_pick(batch_frames, "ENGINE_BATCH_FRAMES", 0))
        except ValueError as exc:
            raise ConfigError(f"ENGINE_BATCH_FRAMES must be a whole number: {exc}") from exc
        if batch < 0:
            raise ConfigError(f"batch frames must be 0 (automatic) or more (got {batch})")
        return cls(
            challenge=challenge,
            db_url=normalize_db_url(_pick(db_url, "ENGINE_DB_URL", f"sqlite:///{work / 'engine.db'}")),
            store_url=str(_pick(store_url, "ENGINE_STORE_URL", str(work / "objects"))),
            runtype=rt,
            device=dev,
            runs_dir=runs,
            s3_endpoint_url=_pick(s3_endpoint_url, "ENGINE_S3_ENDPOINT_URL", None),
            weights_mirror=Path(mirror) if mirror else None,
            sample_interval=interval,
            save_frames=bool(save_frames) if save_frames is not None else False,
            force=bool(force) if force is not None else False,
            executor=ex,
            ray_address=_pick(ray_address, "ENGINE_RAY_ADDRESS", None),
            stream=bool(streaming),
            batch_frames=batch,
            pack_videos=packing,
        )
