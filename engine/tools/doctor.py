"""Environment checks for ``cli.py doctor``: each says what was found and, in plain words, what to do."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

from engine.redact import redact_text


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""
    optional: bool = False


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _guard(name: str, fix: str, fn: Callable[[], Check], optional: bool = False) -> Check:
    """Run one check; an unexpected exception becomes a failed check, never a crash of ``doctor``."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - doctor reports every failure as text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check(name, False, redact_text(first), fix, optional)  # whole (issue 15); an error may quote a password


def check_python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check("python", ok, sys.version.split()[0], "use Python 3.11 or newer")


def check_ffmpeg() -> Check:
    exe = shutil.which("ffmpeg")
    fix = "install FFmpeg: `sudo apt-get install ffmpeg` (Debian/Ubuntu) or `brew install ffmpeg` (macOS)"
    if not exe:
        return Check("ffmpeg", False, "not on PATH", fix)
    try:  # engine.media loads FFmpeg's libraries on import: when they cannot load, the path is the detail
        from engine import media

        version = media.ffmpeg_version(exe)
    except Exception:  # noqa: BLE001 - the libraries' own check (check_torchcodec_loads) reports why
        version = None
    return Check("ffmpeg", True, version or exe, fix)


def check_packages() -> list[Check]:
    out = []
    for dist, want in (("torch", "2.11"), ("torchvision", "0.26"), ("torchaudio", "2.11"), ("torchcodec", "0.11")):
        got = _version(dist)
        ok = got is not None and got.startswith(want)
        found = got or "not installed"
        out.append(Check(dist, ok, found, f"`pip install -e .` installs {dist}=={want}.* (run `make setup`)"))
    return out


def check_torchcodec_loads() -> Check:
    name = "torchcodec + FFmpeg libraries"
    fix = "torchcodec could not load FFmpeg's libraries: install FFmpeg 4-7 (`apt-get install ffmpeg`)"

    def run() -> Check:
        from engine import media  # importing it loads torchcodec's decoders, and so FFmpeg's shared libraries

        error = media.codecs_load()
        if error is not None:
            return Check(name, False, error, fix)
        return Check(name, True, "decoders load")

    return _guard(name, fix, run)


def check_cuda() -> Check:
    def run() -> Check:
        import torch

        if torch.cuda.is_available():
            return Check(
                "cuda", True, f"{torch.cuda.get_device_name(0)} (torch CUDA {torch.version.cuda})", optional=True
            )
        return Check(
            "cuda",
            False,
            "no CUDA GPU visible: the engine runs on the CPU",
            "optional: a CUDA GPU with a driver for CUDA 13 makes runs much faster",
            optional=True,
        )

    return _guard("cuda", "optional", run, optional=True)


def check_weights() -> list[Check]:
    from engine.inference import weights

    out = []
    pull = f"{weights.cli_command()} weights pull"  # `python cli.py` in a checkout, `faceengine` once installed
    for spec in weights.load_manifest().values():
        st = weights.check(spec)
        if st.origin in ("missing", "corrupted"):
            fix = (
                f"delete {st.path} and run `{pull}`"
                if st.origin == "corrupted"
                else f"run `{pull}` (or set ENGINE_WEIGHTS_MIRROR to a folder that has it)"
            )
            out.append(Check(f"weights: {spec.file}", False, f"{st.origin}: {st.detail}", fix, spec.optional))
        else:
            out.append(Check(f"weights: {spec.file}", True, f"{st.origin}: {st.path}"))
    return out


def check_stores(challenge: str, db_url: str | None, store_url: str | None, s3_endpoint_url: str | None) -> list[Check]:
    from engine.config import Settings
    from engine.store import check_database, check_object_store, redact

    settings = Settings.load(
        challenge, db_url=db_url, store_url=store_url, s3_endpoint_url=s3_endpoint_url, resolve=False
    )

    def db() -> Check:
        check_database(settings.db_url)
        return Check("database", True, redact(settings.db_url))

    def store() -> Check:
        check_object_store(settings.store_url, settings.s3_endpoint_url)
        return Check("object store", True, redact_text(settings.store_url))

    return [
        _guard(
            "database",
            f"check the URL {redact(settings.db_url)} (--db / ENGINE_DB_URL) and that the server "
            "is running and accepts you",
            db,
        ),
        _guard(
            "object store",
            f"check {redact_text(settings.store_url)} (--store / ENGINE_STORE_URL): a writable folder, or "
            "an existing S3 bucket with credentials in boto3's chain (AWS_ACCESS_KEY_ID, ~/.aws, ...)",
            store,
        ),
    ]


def check_optional() -> list[Check]:
    out = []
    ytdlp = shutil.which("yt-dlp") or importlib.util.find_spec("yt_dlp")
    out.append(
        Check(
            "yt-dlp",
            bool(ytdlp),
            "installed" if ytdlp else "not installed",
            "optional: `pip install yt-dlp` to read platform pages (TikTok, YouTube) from URL lists; "
            "plain http(s) file URLs work without it",
            optional=True,
        )
    )
    pg = _version("psycopg") or _version("psycopg2") or _version("psycopg2-binary")
    out.append(
        Check(
            "PostgreSQL driver",
            bool(pg),
            pg or "not installed",
            "optional: `pip install 'psycopg[binary]'` to use postgresql:// URLs",
            optional=True,
        )
    )
    ray = _version("ray")
    out.append(
        Check(
            "ray",
            bool(ray),
            ray or "not installed",
            "optional: `pip install -e '.[distributed]'` for --executor ray",
            optional=True,
        )
    )
    return out


def run_checks(
    challenge: str = "demo", db_url: str | None = None, store_url: str | None = None, s3_endpoint_url: str | None = None
) -> list[Check]:
    """Every check, in the order a new user should fix them."""
    checks = [check_python(), check_ffmpeg(), *check_packages(), check_torchcodec_loads(), check_cuda()]
    checks += _guard_list(check_weights, "weights")
    checks += _guard_list(lambda: check_stores(challenge, db_url, store_url, s3_endpoint_url), "stores")
    checks += check_optional()
    return checks


def _guard_list(fn: Callable[[], list[Check]], name: str) -> list[Check]:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return [
            Check(
                name,
                False,
                redact_text(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__,
                "see the message",
            )
        ]
