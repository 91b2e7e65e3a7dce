"""Benchmark: the engine against its peers, in one process and one run, on the same sampled frames.

Why one process and one run: the machines this runs on are often shared (a CI runner, a VM beside another job), so
figures taken minutes apart under different loads cannot be divided by each other. Here every figure comes from the
same corpus, the same sampled frames (``media.sample_frames`` every ``interval`` seconds, as the pipeline samples)
and the same load, so the ratios mean something even when the absolute numbers wander.

What is measured, in this order (each warmed up once first, untimed, so model loading and first-call costs such as
allocator growth, oneDNN primitive creation or dlib's lazy set-up are excluded from every figure):

1. **decode only**: ``sample_frames`` over every video, each batch touched (one element read) and dropped;
2. **detector only**: the pipeline's call (``detect_with_rotation`` at the challenge's long side, batched as decode
   delivers them, rotated retries decided per video as the pipeline decides them), on the decoded frames; the
   frames it runs through the network, over the sampled frames, are the **detector passes per sampled frame**;
3. **embedder only**: alignment + embedding (``align_chips`` + ``embed_chips``, batched) of the faces found in 2;
4. **full pipeline**: :func:`engine.pipeline.run.run_challenge` into a throw-away SQLite database and local object store
   in a temporary folder: decode, detect with rotate-and-retry, embed, crops, PHash, tracks, individuals, SQL,
   objects. Its wall time runs from the first video's start (models already loaded) to the run's end; its stage
   times are the run's own ``RunSummary.stage_seconds``. The challenge has no prompts and no logo: audio alignment
   and logo covering are not face work and no peer does them. With ``end_to_end`` it is instead the real run of a
   challenge with its prompts and logo, and the whole run's figures come with it (``engine.tools.bench_e2e``);
5. **peers**, on the same frames: ``face_recognition`` (dlib HOG ``face_locations`` + ``face_encodings``, the seed
   projects' library, one RGB numpy frame at a time) and ``naive`` (our own detector + embedder called one frame at a
   time in a Python loop: what batching buys).

Frames for 2, 3 and 5 are re-decoded (untimed) one decode batch at a time and dropped after use, so memory stays at
one batch whatever the corpus size; decoding is deterministic, so they are the frames that 1 and 4 sample (the
counts are checked). Peers are timed on frames already in memory: they pay neither decoding nor storage, which
favours them. ``face_recognition`` gets the frames at the engine's detection size (long side 640 by default, resized
untimed, which also favours it), with its defaults (HOG with one upsampling, 5-point landmarks, one jitter).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch

from engine import media
from engine.config import Challenge, FaceSettings, Settings, parse_challenge
from engine.faces.batching import FaceModels
from engine.faces.orientation import retry_all_passes
from engine.inference.precision import cpu_has_fast_bf16
from engine.sources import VIDEO_EXTENSIONS, SourceItem
from engine.tools.bench_e2e import e2e_challenge, end_to_end_figures
from engine.tools.bench_timing import Log, decode_only, model_stages

#: Peers the benchmark knows; ``naive`` is always measured (it costs little and shows what batching buys).
PEERS = ("face_recognition", "naive")
DEFAULT_PEERS = ("face_recognition",)
WARMUP_NOTE = (
    "warm-up: every measured thing ran once untimed first, so model loading and first-call costs are excluded; "
    "peers are timed on frames in memory (no decode, no storage)"
)
#: The bench runs dlib's embedder, the network ``face_recognition`` runs, so both do the same work per face (the
#: default HSE embedder costs about 3x dlib's CPU time per face: ``benchmarks/hse_parity_speed.py``).
BENCH_CHALLENGE = 'name = "bench"\nbaseline = "none"\n[faces]\nembedder = "dlib"\n'


class BenchError(ValueError):
    """The benchmark cannot run as asked (no such folder, no video in it, unknown or missing peer)."""


def bench_videos(folder: str | Path) -> list[Path]:
    """The video files of ``folder`` (recursively, sorted), or a ``BenchError`` saying plainly what is wrong: a
    benchmark over nothing would print meaningless zeros."""
    path = Path(folder)
    if not path.exists():
        raise BenchError(f"videos folder not found: {path}")
    if not path.is_dir():
        raise BenchError(f"{path} is not a folder: give a folder of video files")
    videos = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
    if not videos:
        raise BenchError(f"no video files in {path} (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")
    return videos


def check_peers(peers: Sequence[str]) -> list[str]:
    """Known, importable peers in a stable order, ``naive`` always among them; fails before any timing starts."""
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise BenchError(f"unknown peer(s) {', '.join(unknown)}: choose from {', '.join(PEERS)}")
    chosen = [p for p in PEERS if p in set(peers) | {"naive"}]
    if "face_recognition" in chosen:
        try:
            import face_recognition  # noqa: F401
        except ImportError as exc:
            raise BenchError(
                f"peer face_recognition cannot be imported ({exc}): pip install dlib-bin and "
                "pip install --no-deps face_recognition (as `make setup` does), or leave --peer face_recognition out"
            ) from exc
    return chosen


def machine_facts(device: str) -> dict[str, Any]:
    """What the figures depend on: cores, torch threads, the device's name, library versions, the load average."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16_units": cpu_has_fast_bf16(),
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if (torchcodec_version := media.torchcodec_version()) is not None:
        facts["torchcodec_version"] = torchcodec_version
    with suppress(OSError):
        facts["load_average_1m_at_start"] = round(os.getloadavg()[0], 2)
    return facts


def pipeline_run(
    videos: Sequence[Path],
    interval: float,
    device: str,
    workdir: Path,
    log: Log,
    challenge: Challenge | None = None,
    sampling: str = "exact",
) -> dict[str, Any]:
    """The whole product path, twice: once on the first video (warm-up, its own database), then on every video into a
    fresh SQLite database and local object store. The measured wall time starts when the first video starts (models
    loaded, run row written) and ends when ``run_challenge`` returns (individuals and the run's last row included);
    ``seconds_call`` is the whole call (stores opened, models loaded: what a user waits for). ``challenge``: the
    bench's own (no prompts, no logo) unless given."""
    from engine.pipeline.run import run_challenge

    challenge = challenge or parse_challenge(BENCH_CHALLENGE)
    quiet: Log = lambda _line: None  # noqa: E731 - per-video notes would only interleave with the benchmark's lines

    def settings(name: str) -> Settings:
        root = workdir / name
        return Settings.load(
            "bench",
            db_url=f"sqlite:///{(root / 'engine.db').resolve()}",
            store_url=str((root / "objects").resolve()),
            runtype="prod",
            device=device,
            runs_dir=root,
            sample_interval=interval,
            sampling=sampling,
            save_frames=False,
            force=False,
            executor="local",
        )

    run_challenge(settings("warmup"), challenge, videos[0], log=quiet)
    folder = workdir / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(videos):
        # One folder holding exactly the benchmarked files (links, nothing copied), so a folder with other entries
        # (sub-folders, sidecars) gives the pipeline the same list.
        (folder / f"{i:05d}_{path.name}").symlink_to(path.resolve())
    started: list[float] = []

    def progress(items: Collection[SourceItem]) -> Iterator[SourceItem]:
        started.append(time.perf_counter())
        yield from items

    call = time.perf_counter()
    summary = run_challenge(settings("run"), challenge, folder, log=quiet, progress=progress)
    end = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        end = time.perf_counter()
    if not started:
        raise BenchError("the pipeline processed no video")
    wall = end - started[0]
    if summary.failed:
        bad = "; ".join(f"{o.name}: {o.message}" for o in summary.outcomes if o.status == "failed")
        raise BenchError(f"the pipeline failed on {summary.failed} video(s): {bad}")
    log(f"full pipeline: {summary.frames} frames, {summary.faces} faces, {summary.tracks} tracks in {wall:.2f}s")
    return {
        "frames": summary.frames,
        "faces": summary.faces,
        "tracks": summary.tracks,
        "individuals": summary.individuals,
        "seconds": wall,
        "seconds_with_setup": summary.seconds,
        "seconds_call": end - call,
        "stage_seconds": dict(summary.stage_seconds),
        "prompts": summary.prompts,
        "challenge": challenge.name,
    }


def _ms(seconds: float, frames: int) -> float:
    return 1000.0 * seconds / frames


def run_bench(
    videos_dir: str | Path,
    peers: Sequence[str] = DEFAULT_PEERS,
    device: str = "cpu",
    interval: float = 0.5,
    log: Log | None = None,
    end_to_end: bool = False,
    challenge: str | Path | None = None,
    sampling: str = "exact",
) -> dict[str, Any]:
    """The whole benchmark; returns the plain dict ``cli.py bench --json`` prints.

    ``engine.ms_per_sampled_frame`` is the full pipeline's wall time per sampled frame; ``speedup_vs[peer]`` is the
    peer's ms per frame over it; ``decode_only_fraction`` is pipeline throughput over decode-only throughput (how
    close the whole product path comes to the decoder alone). Raises ``BenchError`` for a bad folder or peer.

    ``end_to_end``: the pipeline runs a real challenge (``challenge``, a TOML path; by default the bench's own with
    ``[logo] auto``, so the logo stage runs too) and the result gains ``end_to_end`` (``engine.tools.bench_e2e``):
    videos per minute, sampled frames per second, each stage's share of the wall time, the decode-only bound and
    the peers, all from this one run. ``sampling``: how decode-only and the pipeline sample (``exact``, or ``fast``:
    fewer frames decoded, ``engine.media.fast_sample``); the models and peers are timed on exactly sampled frames.
    """
    log = log or (lambda _line: None)
    if interval <= 0:
        raise BenchError("--interval must be positive")
    videos = bench_videos(videos_dir)
    chosen = check_peers(peers)
    real = e2e_challenge(challenge) if end_to_end else None
    machine = machine_facts(device)
    # The models timed alone (and the naive peer) run the pipeline's embedder: the bench's, or the challenge's.
    faces = real.faces if real is not None else parse_challenge(BENCH_CHALLENGE).faces
    models = _load_models(device, machine, len(videos), log, faces)
    dec = decode_only(videos, interval, device, log, sampling)
    n = dec["frames"]
    if n == 0:
        raise BenchError(f"no frame could be sampled from the videos in {videos_dir}")
    stages = model_stages(videos, models, interval, chosen, log)
    del models
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        pipe = pipeline_run(videos, interval, device, Path(tmp), log, real, sampling)
    if stages["frames"] != n or pipe["frames"] != n:
        raise BenchError(
            f"frame counts disagree: decode {n}, model stages {stages['frames']}, pipeline {pipe['frames']}"
        )
    result = _result(videos, interval, device, chosen, dec, stages, pipe, machine)
    result["engine"]["sampling"] = sampling
    if end_to_end:
        result["end_to_end"] = end_to_end_figures(result, pipe, dec, len(videos))
    return result


def _load_models(device: str, machine: dict[str, Any], n_videos: int, log: Log, faces: FaceSettings) -> FaceModels:
    """Both networks loaded (not timed); their backend and dtype noted in ``machine``."""
    t0 = time.perf_counter()
    models = FaceModels.load(device, faces)
    for name, net in (("detector", models.detector), ("embedder", models.embedder)):
        machine[name] = f"{net.backend}, {str(net.dtype).removeprefix('torch.')}"
    machine["embedder_name"] = faces.embedder
    log(
        f"models loaded on {device} in {time.perf_counter() - t0:.2f}s (not timed): detector {machine['detector']}, "
        f"embedder {machine['embedder']}; {n_videos} videos"
    )
    return models


def _peer_results(
    chosen: Sequence[str], stages: dict[str, Any], n: int, decode_ms: float, engine_models_ms: float
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Each peer's ms per sampled frame, and its entry of the result's ``peers``."""
    peer_ms: dict[str, float] = {}
    peer_out: dict[str, dict[str, Any]] = {}
    if "face_recognition" in chosen:
        peer_ms["face_recognition"] = _ms(stages["face_recognition"], n)
        peer_out["face_recognition"] = {
            "ms_per_sampled_frame": round(peer_ms["face_recognition"], 3),
            "faces": stages["face_recognition_faces"],
            "ms_per_sampled_frame_with_decode": round(peer_ms["face_recognition"] + decode_ms, 3),
            "input": f"RGB uint8 numpy frames at the engine's detection size (long side {FaceSettings().long_side})",
            "calls": "face_locations(model='hog', upsample 1) + face_encodings(model='small', 1 jitter), per frame",
        }
    peer_ms["naive"] = _ms(stages["naive"], n)
    peer_out["naive"] = {
        "ms_per_sampled_frame": round(peer_ms["naive"], 3),
        "faces": stages["naive_faces"],
        "vs_engine_detect_embed": round(peer_ms["naive"] / engine_models_ms, 3),
        "calls": "our detect_with_rotation + align_chips + embed_chips on one frame at a time",
    }
    return peer_ms, peer_out


def _result(
    videos: Sequence[Path],
    interval: float,
    device: str,
    chosen: Sequence[str],
    dec: dict[str, Any],
    stages: dict[str, Any],
    pipe: dict[str, Any],
    machine: dict[str, Any],
) -> dict[str, Any]:
    """The measurements as the plain dict ``run_bench`` returns."""
    n = dec["frames"]
    x = _ms(pipe["seconds"], n)
    decode_ms = _ms(dec["seconds"], n)
    detect_ms, embed_ms = _ms(stages["detect"], n), _ms(stages["embed"], n)
    peer_ms, peer_out = _peer_results(chosen, stages, n, decode_ms, detect_ms + embed_ms)
    return {
        "frames": n,
        "engine": {
            "ms_per_sampled_frame": round(x, 3),
            "stages": {
                "decode_ms_per_frame": round(decode_ms, 3),
                "detect_ms_per_frame": round(detect_ms, 3),
                "embed_ms_per_frame": round(embed_ms, 3),
                "pipeline_stage_seconds": pipe["stage_seconds"],
                "detector_passes_per_frame": round(stages["detector_frames"] / n, 3),
                "detector_passes_per_frame_retry_all": round(retry_all_passes(stages["no_upright_face"], n), 3),
            },
            "videos": len(videos),
            "interval_s": interval,
            "device": device,
            "faces": stages["faces"],
            "pipeline_faces": pipe["faces"],
            "pipeline_tracks": pipe["tracks"],
            "pipeline_individuals": pipe["individuals"],
            # Seconds to the microsecond: decoding a tiny corpus takes a few hundredths of a second, where rounding
            # to the millisecond moves the rates derived from them by over 1 %.
            "pipeline_seconds": round(pipe["seconds"], 6),
            "pipeline_seconds_with_setup": round(pipe["seconds_with_setup"], 6),
            "decode_seconds": round(dec["seconds"], 6),
            "embed_ms_per_face": round(1000.0 * stages["embed"] / stages["faces"], 3) if stages["faces"] else None,
            "warmup": WARMUP_NOTE,
            "frames_for_models_and_peers": "re-decoded per decode batch, untimed; the same samples as decode-only",
        },
        "peers": peer_out,
        "speedup_vs": {name: round(ms / x, 3) for name, ms in peer_ms.items()},
        "decode_only_fraction": round(decode_ms / x, 4),
        "machine": machine,
    }


def table_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The result as (what, ms per sampled frame, sampled frames/s) rows for a readable table."""

    def row(what: str, ms: float) -> tuple[str, str, str]:
        return what, f"{ms:.2f}", f"{1000.0 / ms:.1f}" if ms > 0 else "-"

    eng, st = result["engine"], result["engine"]["stages"]
    rows = [
        row("decode only", st["decode_ms_per_frame"]),
        row("detector only (batched)", st["detect_ms_per_frame"]),
        row("embedder only (batched)", st["embed_ms_per_frame"]),
        row("engine full pipeline", eng["ms_per_sampled_frame"]),
    ]
    rows += [row(f"peer {name}", peer["ms_per_sampled_frame"]) for name, peer in result["peers"].items()]
    return rows
