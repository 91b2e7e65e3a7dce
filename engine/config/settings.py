"""Typed run settings: everything a run needs besides the challenge itself.

Settings are read from explicit flags first, then ``ENGINE_*`` environment variables (read through
:mod:`engine.config.environment`), then defaults, so the CLI, tests and a Ray worker all build the same object the
same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.config import environment
from engine.config.device import check_device, resolve_device
from engine.config.errors import ConfigError

RUNTYPES = ("test", "prod")
#: Where a run's videos are processed: this process, or Ray actors (``engine.pipeline.executor``).
EXECUTORS = ("local", "ray")
#: How frames are sampled: ``exact`` (the frame nearest each time; every frame decoded) or ``fast`` (the nearest
#: reference frame; B-frames never decoded: ``engine.media.fast_sample``).
SAMPLINGS = ("exact", "fast")
#: RUNTYPE ``test`` processes only this many videos, as the seed pipeline did.
TEST_RUN_VIDEOS = 4
#: How boolean environment variables (``ENGINE_STREAM``, ``ENGINE_PACK_VIDEOS``) may be written.
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _pick(flag: Any, env: str, default: Any) -> Any:
    """Flag beats environment beats default; an empty environment variable counts as unset."""
    if flag is not None:
        return flag
    value = environment.read(env)
    return value if value is not None else default


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
    weights_mirror: Path | None = None  # weight files' mirror folder: this process's models resolve with it
    sample_interval: float = 0.5
    sampling: str = "exact"  # SAMPLINGS: exact, or fast (nearest reference frame, fewer frames decoded)
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
        sampling: str | None = None,
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
        elif resolve:
            # With Ray the workers, not this driver, hold the GPUs: each one resolves auto/cuda where it runs.
            check_device(dev)
        mirror = _pick(weights_mirror, "ENGINE_WEIGHTS_MIRROR", None)
        interval = float(_pick(sample_interval, "ENGINE_SAMPLE_INTERVAL", 0.5))
        if interval <= 0:
            raise ConfigError("sample interval must be positive")
        mode = str(_pick(sampling, "ENGINE_SAMPLING", "exact")).lower()
        if mode not in SAMPLINGS:
            raise ConfigError(f"sampling must be one of {', '.join(SAMPLINGS)} (got {mode!r})")
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
            sampling=mode,
            save_frames=bool(save_frames) if save_frames is not None else False,
            force=bool(force) if force is not None else False,
            executor=ex,
            ray_address=_pick(ray_address, "ENGINE_RAY_ADDRESS", None),
            stream=bool(streaming),
            batch_frames=batch,
            pack_videos=packing,
        )
