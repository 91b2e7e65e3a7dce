"""The end-to-end figures of ``cli.py bench --end-to-end``: what a user waits for is the whole ``run``, not the models.

Every figure comes from the same process and run as the rest of the benchmark (``engine.tools.bench``): the real
``run_challenge`` on a challenge with its logo and prompts (every stage: fetch, hash, probe, decode, detect, embed,
crops, logo, audio, tracks, store, SQL, individuals), its own stage timer, the decode-only pass over the same
corpus (the bound no pipeline beats without decoding fewer frames) and the peers on the same sampled frames.

The stages of the streaming run overlap in three threads, so their shares of the wall time add up to more than 1;
a share near 1 is a stage on the critical path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config import Challenge, ConfigError, load_challenge, parse_challenge

#: The end-to-end run without ``--challenge``: the bench's embedder, no prompts (they need a baseline sound), and
#: the logo found by itself, so the logo stage (find, and cover where one is found) is timed too.
E2E_CHALLENGE = 'name = "bench"\nbaseline = "none"\n[faces]\nembedder = "dlib"\n[logo]\nauto = true\n'


def e2e_challenge(path: str | Path | None) -> Challenge:
    """The challenge the end-to-end run uses: the TOML at ``path``, or :data:`E2E_CHALLENGE`."""
    if path is None:
        return parse_challenge(E2E_CHALLENGE)
    if not Path(path).is_file():
        raise ConfigError(f"challenge file not found: {path}")
    return load_challenge(path)


def end_to_end_figures(
    result: dict[str, Any], pipe: dict[str, Any], dec: dict[str, Any], videos: int
) -> dict[str, Any]:
    """The ``end_to_end`` entry of the bench's result, from the pipeline run ``pipe`` and decode-only ``dec``."""
    n = result["frames"]
    wall = pipe["seconds_call"]
    stages = pipe["stage_seconds"]
    per_frame_ms = 1000.0 * wall / n
    peers = {name: peer["ms_per_sampled_frame"] for name, peer in result["peers"].items()}
    figures: dict[str, Any] = {
        "challenge": pipe["challenge"],
        "videos": videos,
        "frames": n,
        "faces": pipe["faces"],
        "prompts": pipe["prompts"],
        "wall_s": round(wall, 3),
        "wall_from_first_video_s": round(pipe["seconds"], 3),
        "videos_per_minute": round(60.0 * videos / wall, 2),
        "sampled_frames_per_s": round(n / wall, 2),
        "ms_per_sampled_frame": round(per_frame_ms, 3),
        "stage_share_of_wall": {k: round(v / wall, 4) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
        "decode_only": {
            "seconds": round(dec["seconds"], 3),
            "sampled_frames_per_s": round(n / dec["seconds"], 2),
            "videos_per_minute": round(60.0 * videos / dec["seconds"], 2),
        },
        "fraction_of_decode_only": round(dec["seconds"] / wall, 4),
        "peers_ms_per_sampled_frame": peers,
        "speedup_vs": {name: round(ms / per_frame_ms, 3) for name, ms in peers.items()},
        "detector_passes_per_frame": result["engine"]["stages"]["detector_passes_per_frame"],
        "detector_passes_per_frame_retry_all": result["engine"]["stages"]["detector_passes_per_frame_retry_all"],
    }
    figures["lines"] = summary_lines(figures)
    return figures


def summary_lines(e2e: dict[str, Any]) -> list[str]:
    """The end-to-end figures as the lines ``cli.py bench --end-to-end`` prints."""
    shares = ", ".join(f"{k} {v:.0%}" for k, v in e2e["stage_share_of_wall"].items() if v >= 0.005)
    dec = e2e["decode_only"]
    speedup = e2e["speedup_vs"]
    peers = ", ".join(
        f"{name} {ms:.1f} ms/frame ({speedup[name]:.2f}x)" for name, ms in e2e["peers_ms_per_sampled_frame"].items()
    )
    return [
        f"end to end (challenge {e2e['challenge']}): {e2e['videos']} videos, {e2e['frames']} sampled frames, "
        f"{e2e['faces']} faces, {e2e['prompts']} prompts in {e2e['wall_s']:.2f}s (models loaded inside)",
        f"  {e2e['videos_per_minute']:.1f} videos/min · {e2e['sampled_frames_per_s']:.1f} sampled frames/s · "
        f"{e2e['ms_per_sampled_frame']:.1f} ms/sampled frame",
        f"  decode-only bound: {dec['sampled_frames_per_s']:.1f} sampled frames/s, {dec['videos_per_minute']:.1f} "
        f"videos/min; the run reaches {e2e['fraction_of_decode_only']:.2f} of it",
        f"  stage share of wall (threads overlap, so shares add up to more than 100%): {shares}",
        f"  peers on the same frames (speedup = peer ms / end-to-end ms): {peers}",
        f"  detector passes per sampled frame: {e2e['detector_passes_per_frame']:.2f} "
        f"(retrying every frame with no face both ways: {e2e['detector_passes_per_frame_retry_all']:.2f})",
    ]
