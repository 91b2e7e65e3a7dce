"""Build a synthetic prompt-alignment corpus from the shared real clips, with exact ground truth.

A challenge's participants reuse its baseline's sound: they cut off its beginning (so early prompts are missing),
sometimes its end, start it anywhere in their own vertical video, talk over it and upload AAC at 44.1 or 48 kHz.
This builds that situation from real footage and real speech, with the FFmpeg CLI, deterministically from a seed:

    OUT/challenge.toml        name, baseline = "baseline.mp4", videos = "videos", three [[prompts]]
    OUT/baseline.mp4          the shared Hamilton clip re-encoded (its sound carries the prompts)
    OUT/videos/participant_NN.mp4   720x1280 H.264 yuv420p + AAC stereo, at most ~15 s each
    OUT/ground_truth.json     where every prompt truly plays in every video, and every random choice made

The sound is mixed in memory (torch) and piped to FFmpeg, so the ground truth is exact: sample ``k`` of the piped
audio plays at ``k / rate`` s of the participant video (FFmpeg starts both streams at 0 and compensates the AAC
encoder delay with an edit list), and baseline sample ``i`` plays at ``baseline_audio_start_s + i / rate``.

The four real media files are pinned in ``benchmarks/demo_media.toml`` (sha256, size, public URL) and resolved like
the model weights: the shared data folder (``ENGINE_SHARED_DATA``, else ``../shared/data`` beside the checkout) → the
download folder (``~/.cache/faceengine/media``) → downloaded from the URL there. Where none works, the script stops
with one sentence saying what to download where, and exit code 2.

Usage: ``python benchmarks/make_corpus.py OUT_DIR [--n-videos 6] [--seed 0] [--decoys 1]``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.config import environment
from engine.hashing import sha256_file
from engine.inference.weights import DownloadError, download_verified

REPO = Path(__file__).resolve().parent.parent
#: The real media the corpus is made of, each pinned by sha256 with its public URL.
MEDIA_MANIFEST = Path(__file__).resolve().parent / "demo_media.toml"
#: The prompts of the synthetic challenge, in seconds of the baseline (its sound is 10 s long).
PROMPTS: tuple[tuple[str, float, float], ...] = (("opening", 0.5, 3.0), ("middle", 3.5, 6.0), ("closing", 6.5, 9.5))
SNRS_DB = (10.0, 5.0, 0.0)
RATES = (44_100, 48_000)
WIDTH, HEIGHT = 720, 1280
#: Peak level the mix is scaled down to when voice + sound would clip (scaling both keeps the SNR).
PEAK = 0.95


class MediaMissing(RuntimeError):
    """A pinned media file is in no folder and could not be downloaded; the message says what to put where."""


def shared_data_dir() -> Path | None:
    """The read-only shared media: ``ENGINE_SHARED_DATA``, else ``../shared/data`` beside the checkout, if any."""
    return environment.shared_data()


def media_download_dir() -> Path:
    """Where downloaded media go: the per-user cache, so ``make clean`` (which empties ``runs/``) and a second clone
    do not download them again."""
    return environment.user_cache_dir() / "media"


def resolve_media(shared: Path | None = None, manifest: Path = MEDIA_MANIFEST) -> dict[str, Path]:
    """A verified local copy of every file of ``manifest``, by its ``file`` key: from ``shared`` (else
    :func:`shared_data_dir`), else the download folder, else downloaded into it. A copy whose sha256 differs is
    refused (the corpus and its ground truth depend on the exact bytes); raises :class:`MediaMissing`."""
    mirror = shared if shared is not None else shared_data_dir()
    full = Path(manifest).resolve()
    shown = full.relative_to(REPO) if full.is_relative_to(REPO) else full
    out = {}
    for entry in tomllib.loads(full.read_text(encoding="utf-8"))["media"]:
        out[entry["file"]] = _media_file(entry, mirror, media_download_dir(), shown)
    return out


def _media_file(entry: dict, mirror: Path | None, cache: Path, manifest: Path) -> Path:
    name, sha256, url = entry["file"], entry["sha256"], entry.get("url")
    for folder in (mirror, cache):
        path = folder / name if folder is not None else None
        if path is not None and path.is_file():
            if sha256_file(path) != sha256:
                raise MediaMissing(f"{path} is not the pinned {name} (sha256 {sha256}): replace it with {url or name}")
            return path
    where = f"neither in the shared data folder {mirror} nor in {cache}" if mirror else f"not in {cache}"
    fix = (
        f"{cache / name} (likewise every other file of {manifest}), or set ENGINE_SHARED_DATA to a "
        "folder that holds them"
    )
    if not url:
        raise MediaMissing(f"the demo corpus needs {name}, which has no public URL and is {where}: put it at {fix}")
    try:
        return download_verified(url, sha256, cache / name, timeout=60)
    except DownloadError as exc:
        raise MediaMissing(
            f"the demo corpus needs {name}, which is {where}, and {exc}: download {url} by hand into {fix}"
        ) from exc


#: FFmpeg's scaler flags for every picture the corpus builders write. ``bitexact`` + ``accurate_rnd`` make swscale
#: take its C path: its SIMD paths round differently per CPU (the same scale gave other pixels on an AVX2 machine
#: than without AVX2), so corpora built on two machines differed, and so did every result measured on them.
SWS_FLAGS = "bicubic+accurate_rnd+bitexact"


def _ffmpeg(*args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], input=stdin, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _audio_start(path: Path) -> float:
    """The first audio stream's start time on the file's clock (ffprobe), the origin of baseline seconds."""
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=start_time", "-of", "csv=p=0",
         str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    value = proc.stdout.strip()
    return float(value) if value not in ("", "N/A") else 0.0


def _decode_stereo(path: Path, rate: int) -> torch.Tensor:
    """Every audio sample of ``path`` as float32 ``[n, 2]`` at ``rate`` (FFmpeg resamples, as an uploader's would)."""
    raw = _ffmpeg("-i", str(path), "-vn", "-f", "f32le", "-ac", "2", "-ar", str(rate), "pipe:1")
    return torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(-1, 2).clone()


def _rms(x: torch.Tensor) -> float:
    return float(x.to(torch.float64).pow(2).mean().sqrt()) if x.numel() else 0.0


@dataclass
class _Plan:
    """Every random choice for one video, drawn up front so the corpus depends on the seed alone."""

    name: str
    picture: Path
    rate: int
    decoy: bool
    snr_db: float | None
    trim_s: float  # seconds cut off the sound's beginning
    end_cut_s: float  # seconds cut off its end
    offset_s: float  # where the kept sound starts in the video (before rounding to the sample grid)
    tail_s: float  # video after the sound
    bed_start: float  # fraction of the voice loop to start from
    volume: float


def _plans(seed: int, n_videos: int, n_decoys: int, pictures: list[Path], max_trim_s: float) -> list[_Plan]:
    """Video ``i`` draws from its own generator seeded by ``(seed, i)``: a corpus of more videos keeps the first ones
    as they were. SNRs go round 10, 5, 0 dB from a seeded start, so every three participants hold each of them."""
    first_snr = random.Random(f"{seed}:snr").randrange(len(SNRS_DB))
    plans = []
    for i in range(n_videos + n_decoys):
        rng = random.Random(f"{seed}:{i}")
        decoy = i >= n_videos
        rate = rng.choice(RATES)
        # Video 0 keeps the whole sound, so every prompt is present at least once; the others are trimmed.
        trim = 0.0 if i == 0 else rng.uniform(0.0, max_trim_s)
        end_cut = rng.uniform(0.3, 2.5) if i > 0 and rng.random() < 0.35 else 0.0
        plans.append(
            _Plan(
                name=f"participant_{i:02d}.mp4",
                picture=pictures[i % len(pictures)],
                rate=rate,
                decoy=decoy,
                snr_db=None if decoy else SNRS_DB[(first_snr + i) % len(SNRS_DB)],
                trim_s=trim,
                end_cut_s=end_cut,
                offset_s=rng.uniform(0.2, 3.0),
                tail_s=rng.uniform(0.3, 1.5) if not decoy else rng.uniform(6.0, 11.0),
                bed_start=rng.random(),
                volume=rng.uniform(0.4, 1.0),
            )
        )
    return plans


def _picture_filter(picture: Path, fps: int) -> str:
    """Fit the clip's picture into a 720x1280 frame (full width, centred), so its faces stay large enough."""
    return (
        f"setpts=PTS-STARTPTS,fps={fps},scale={WIDTH}:-2:flags={SWS_FLAGS},"
        f"pad={WIDTH}:{HEIGHT}:(ow-iw)/2:(oh-ih)/2,setsar=1"
    )


def _status(p_start: float, p_end: float, kept_from: float, kept_to: float) -> str:
    if kept_from <= p_start and p_end <= kept_to:
        return "present"
    if p_end > kept_from and p_start < kept_to:
        return "partial"
    return "absent"


def build_corpus(
    out_dir: Path | str,
    n_videos: int = 6,
    seed: int = 0,
    n_decoys: int = 1,
    shared: Path | None = None,
    fps: int = 24,
    max_trim_s: float = 4.5,
    workers: int = 2,
    name: str | None = None,
    logo_auto: bool = False,
    media_manifest: Path = MEDIA_MANIFEST,
) -> Path:
    """Write the corpus into ``out_dir`` (created) and return the path of its ``challenge.toml``.

    ``n_videos`` participants reuse the baseline's sound; ``n_decoys`` more (numbered after them) carry voice-over
    only, so a detector that reports prompts everywhere fails. Participants cycle through 10, 5 and 0 dB SNR.
    ``name`` is the challenge's name (default ``synthetic-<seed>``); ``logo_auto`` adds ``[logo] auto = true`` (the
    Hamilton footage carries a static "WH.GOV" logo). The media come from ``shared`` or as :func:`resolve_media`
    finds them in ``media_manifest``.
    """
    challenge_name = name or f"synthetic-{seed}"
    sound_src, pictures, voices = _shared_media(Path(shared) if shared else None, media_manifest)
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)

    baseline = _write_baseline(sound_src, out)
    b0 = _audio_start(baseline)
    sounds = {r: _decode_stereo(baseline, r) for r in RATES}
    beds = {r: torch.cat([_decode_stereo(v, r) for v in voices]) for r in RATES}

    plans = _plans(seed, n_videos, n_decoys, pictures, max_trim_s)
    truth: dict[str, dict] = {}
    jobs: list[tuple[_Plan, _Mix]] = []
    for plan in plans:
        mixed = _mix(plan, sounds[plan.rate], beds[plan.rate])
        jobs.append((plan, mixed))
        truth[f"videos/{plan.name}"] = _truth(plan, mixed, len(sounds[plan.rate]), b0)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(lambda job: _encode(job[0], job[1], out, fps), jobs))

    challenge = _write_challenge(out, seed, challenge_name, logo_auto)
    (out / "ground_truth.json").write_text(
        json.dumps(
            {
                "seed": seed,
                "challenge": challenge.name,
                "baseline": baseline.name,
                "baseline_audio_start_s": b0,
                "prompts": [{"name": n, "start": s, "end": e} for n, s, e in PROMPTS],
                "videos": truth,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return challenge


def _shared_media(shared: Path | None, manifest: Path) -> tuple[Path, list[Path], list[Path]]:
    """The clip whose sound carries the prompts, the pictures participants film, the voices they talk over."""
    media = resolve_media(shared, manifest)
    sound_src = media["videos/short_hamilton_clip.mp4"]
    pictures = [sound_src, media["videos/ryan-reynolds.mp4"]]
    voices = [media["audio/stereo_diarization.wav"], media["audio/hotwords.mp3"]]
    return sound_src, pictures, voices


def _write_baseline(sound_src: Path, out: Path) -> Path:
    """The baseline: the sound's clip re-encoded (H.264 + AAC at 44.1 kHz)."""
    baseline = out / "baseline.mp4"
    _ffmpeg("-i", str(sound_src), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p",
            "-sws_flags", SWS_FLAGS,
            "-c:a", "aac", "-b:a", "192k", "-ar", "44100", "-movflags", "+faststart", str(baseline))  # fmt: skip
    return baseline


@dataclass
class _Mix:
    """One video's sound track, and where the kept part of the baseline's sound landed in it (in samples)."""

    samples: torch.Tensor  # float32 [n, 2] at the plan's rate
    duration: float  # seconds
    kept_from: int  # first baseline sample kept
    kept_to: int  # baseline sample after the last one kept
    offset: int  # video sample where the kept sound starts
    voice_gain: float


def _mix(plan: _Plan, sound: torch.Tensor, bed: torch.Tensor) -> _Mix:
    """The kept stretch of the sound over a stretch of the looped voices at the plan's SNR, scaled to its volume."""
    r = plan.rate
    i_a = round(plan.trim_s * r)
    i_b = len(sound) - round(plan.end_cut_s * r)
    kept = sound[i_a:i_b] if not plan.decoy else sound[:0]
    o = round(plan.offset_s * r) if not plan.decoy else 0
    total = o + len(kept) + round(plan.tail_s * r)
    start = round(plan.bed_start * len(bed))
    reps = math.ceil((start + total) / len(bed))
    voice = bed.repeat(reps, 1)[start : start + total]
    voice_gain = 1.0
    if len(kept):
        # SNR over the overlap: sound RMS against the voice's RMS on the same samples.
        voice_gain = _rms(kept) / max(_rms(voice[o : o + len(kept)]), 1e-9) / 10 ** (plan.snr_db / 20)
    mix = voice * voice_gain
    mix[o : o + len(kept)] += kept
    mix *= plan.volume
    peak = float(mix.abs().max())
    if peak > PEAK:
        mix *= PEAK / peak
    return _Mix(mix, total / r, i_a, i_b, o, voice_gain)


def _truth(plan: _Plan, mixed: _Mix, sound_samples: int, b0: float) -> dict:
    """The ground truth of one video: every random choice, and where each prompt truly plays in it."""
    r = plan.rate
    kept_from, kept_to = b0 + mixed.kept_from / r, b0 + mixed.kept_to / r  # baseline seconds of the kept sound
    prompts = {}
    for prompt, p_start, p_end in PROMPTS:
        status = "absent" if plan.decoy else _status(p_start, p_end, kept_from, kept_to)
        where = mixed.offset / r + (p_start - kept_from)
        prompts[prompt] = {
            "status": status,
            "start_s": None if status == "absent" else where,
            "end_s": None if status == "absent" else where + (p_end - p_start),
        }
    return {
        "picture": plan.picture.name,
        "decoy": plan.decoy,
        "duration_s": mixed.duration,
        "sample_rate": r,
        "snr_db": plan.snr_db,
        "voice_gain": mixed.voice_gain,
        "volume": plan.volume,
        "sound_from_s": None if plan.decoy else kept_from,
        "sound_to_s": None if plan.decoy else kept_to,
        "trim_start_s": None if plan.decoy else kept_from - b0,
        "trim_end_s": None if plan.decoy else (sound_samples - mixed.kept_to) / r,
        "offset_s": None if plan.decoy else mixed.offset / r,
        "prompts": prompts,
    }


def _encode(plan: _Plan, mixed: _Mix, out: Path, fps: int) -> None:
    """The participant video: its picture looped and fitted to 720x1280, with the mixed sound piped in."""
    _ffmpeg(
        "-stream_loop", "-1", "-i", str(plan.picture),
        "-f", "f32le", "-ar", str(plan.rate), "-ac", "2", "-i", "pipe:0",
        "-map", "0:v:0", "-map", "1:a:0", "-t", f"{mixed.duration:.6f}",
        "-vf", _picture_filter(plan.picture, fps),
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "28", "-pix_fmt", "yuv420p", "-sws_flags", SWS_FLAGS,
        "-c:a", "aac", "-b:a", "128k", "-ar", str(plan.rate), "-movflags", "+faststart",
        str(out / "videos" / plan.name),
        stdin=mixed.samples.contiguous().numpy().tobytes(),
    )  # fmt: skip


def _write_challenge(out: Path, seed: int, challenge_name: str, logo_auto: bool) -> Path:
    """``challenge.toml``: the name, the baseline, the videos folder and the prompts (and ``[logo]`` when asked)."""
    prompt_tables = "".join(
        f'\n[[prompts]]\nname = "{name}"\nstart = {start}\nend = {end}\n' for name, start, end in PROMPTS
    )
    challenge = out / "challenge.toml"
    challenge.write_text(
        f"# Synthetic prompt-alignment challenge written by benchmarks/make_corpus.py (seed {seed}).\n"
        f'name = "{challenge_name}"\nbaseline = "baseline.mp4"\nvideos = "videos"\n{prompt_tables}'
        + ("\n[logo]\nauto = true\n" if logo_auto else ""),
        encoding="utf-8",
    )
    return challenge


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write into (created; never inside the shared data)")
    parser.add_argument("--n-videos", type=int, default=6, help="participant videos that reuse the sound")
    parser.add_argument("--decoys", type=int, default=1, help="extra videos with voice-over only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=None, help="shared data folder [ENGINE_SHARED_DATA]")
    parser.add_argument("--name", default=None, help="challenge name [synthetic-<seed>]")
    parser.add_argument("--logo-auto", action="store_true", help="add [logo] auto = true to the challenge")
    parser.add_argument(
        "--media-manifest", type=Path, default=MEDIA_MANIFEST, help="the pinned media (file, sha256, url) [%(default)s]"
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        path = build_corpus(
            args.out_dir, args.n_videos, args.seed, args.decoys, args.shared, name=args.name,
            logo_auto=args.logo_auto, media_manifest=args.media_manifest,
        )  # fmt: skip
    except MediaMissing as exc:  # one sentence and exit code 2, as for a usage error: no traceback to read
        print(f"make_corpus: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {path} and {args.n_videos + args.decoys} videos in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
