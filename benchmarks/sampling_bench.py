"""Exact against fast sampling (``--sampling fast``) on real clips: decode time, frames decoded, timing error.

    .venv/bin/python benchmarks/sampling_bench.py [--shared ../shared] [--videos runs/bench-corpus/videos]
                                                  [--platform-copies] [--interval 0.5]

For each clip, both modes sample every ``interval`` seconds (``engine.media.sample_frames``, the pipeline's call),
in the same process, each timed on its second pass (the first warms the page cache and the libraries). Printed:
the stream's B-frame share (ffprobe), frames FFmpeg decodes in each mode, decode seconds and the ratio, and the
timing error of the fast mode's frames (|pts - target|, mean and max, in ms and in frames) next to exact's.

``--platform-copies`` adds each bench-corpus clip re-encoded the way platforms deliver H.264 (x264 ``medium``:
B-frames, b-pyramid): the corpus builder writes its clips without B-frames, where the fast mode has nothing to
skip. Timings are printed, never asserted; they depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from engine import media

REAL = ("videos/short_hamilton_clip.mp4", "multi_person/friends_poker.mp4", "multi_person/talk_show_guests.mp4")


def frame_types(path: Path) -> dict[str, int]:
    """Picture types of every frame (one ffprobe pass)."""
    cmd = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pict_type", "-of", "json"]
    frames = json.loads(subprocess.run([*cmd, str(path)], capture_output=True, text=True, check=True).stdout)
    out: dict[str, int] = {}
    for f in frames.get("frames", []):
        out[f.get("pict_type", "?")] = out.get(f.get("pict_type", "?"), 0) + 1
    return out


def decoded_count(path: Path, skip: str) -> int:
    """How many frames FFmpeg outputs with ``skip_frame`` (DEFAULT: every frame; NONREF: reference frames)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.skip_frame = skip
        return sum(1 for _ in container.decode(stream))


def timed(path: Path, mode: str, interval: float) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Second-pass decode seconds, the targets and the pts of the frames taken."""
    for _ in media.sample_frames(path, interval, mode=mode):
        pass
    t0 = time.perf_counter()
    batches = list(media.sample_frames(path, interval, mode=mode))
    seconds = time.perf_counter() - t0
    return seconds, torch.cat([b.target_s for b in batches]), torch.cat([b.pts_s for b in batches])


def platform_copy(src: Path, out_dir: Path) -> Path:
    """``src`` re-encoded as a platform would deliver it: x264 medium (B-frames, b-pyramid), audio copied."""
    dst = out_dir / f"platform-{src.name}"
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c:v", "libx264", "-preset", "medium", "-crf", "23"]
    subprocess.run([*cmd, "-pix_fmt", "yuv420p", "-c:a", "copy", str(dst)], check=True)
    return dst


def row(path: Path, interval: float) -> dict[str, object]:
    types = frame_types(path)
    total = sum(types.values())
    fps = total / max(1e-9, float(media.probe(path).video.duration_s))
    ex_s, targets, ex_pts = timed(path, "exact", interval)
    fa_s, fa_targets, fa_pts = timed(path, "fast", interval)
    assert torch.equal(targets, fa_targets), path  # same samples in both modes (no corrupt data in these clips)
    ex_err, fa_err = (ex_pts - targets).abs() * 1000, (fa_pts - targets).abs() * 1000
    return {
        "clip": path.name,
        "b_share": types.get("B", 0) / max(1, total),
        "decoded": (decoded_count(path, "DEFAULT"), decoded_count(path, "NONREF")),
        "samples": len(targets),
        "seconds": (ex_s, fa_s),
        "error_ms": (float(ex_err.mean()), float(ex_err.max()), float(fa_err.mean()), float(fa_err.max())),
        "frame_ms": 1000 / fps,
        "same_frame": float((fa_pts == ex_pts).double().mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--videos", type=Path, default=Path("runs/bench-corpus/videos"))
    ap.add_argument("--platform-copies", action="store_true")
    ap.add_argument("--interval", type=float, default=0.5)
    a = ap.parse_args()
    clips = [a.shared / "data" / rel for rel in REAL if (a.shared / "data" / rel).is_file()]
    clips += sorted(a.videos.glob("*.mp4")) if a.videos.is_dir() else []
    with tempfile.TemporaryDirectory(prefix="sampling-bench-") as tmp:
        if a.platform_copies and a.videos.is_dir():
            clips += [platform_copy(p, Path(tmp)) for p in sorted(a.videos.glob("*.mp4"))]
        rows = [row(p, a.interval) for p in clips]
    head = "| clip | B share | frames decoded exact / fast | samples | decode s exact / fast | fast / exact |"
    print(head + " error exact mean/max ms | error fast mean/max ms (frames) | same frame |")
    print("|---" * 9 + "|")
    for r in rows:
        (de, df), (se, sf), (em, ex, fm, fx) = r["decoded"], r["seconds"], r["error_ms"]
        print(
            f"| {r['clip']} | {r['b_share']:.2f} | {de} / {df} | {r['samples']} | {se:.2f} / {sf:.2f} | {sf / se:.2f} "
            f"| {em:.1f} / {ex:.1f} | {fm:.1f} / {fx:.1f} ({fx / r['frame_ms']:.1f}) | {r['same_frame']:.2f} |"
        )
    for group, chosen in (("all clips", rows), ("with B-frames", [r for r in rows if r["b_share"] > 0])):
        if chosen:
            se, sf = sum(r["seconds"][0] for r in chosen), sum(r["seconds"][1] for r in chosen)
            worst = max(r["error_ms"][3] for r in chosen)
            print(
                f"{group}: {len(chosen)} clips, decode {se:.2f}s exact / {sf:.2f}s fast = {sf / se:.2f} "
                f"(median clip ratio {statistics.median(r['seconds'][1] / r['seconds'][0] for r in chosen):.2f}); "
                f"worst fast timing error {worst:.1f} ms"
            )


if __name__ == "__main__":
    main()
