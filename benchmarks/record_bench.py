"""Run `cli.py bench --json` (or read a JSON it printed) and append a dated table to benchmarks/RESULTS.md.

Why a script: every figure in RESULTS.md must say when, where and by which command it was measured, and copying
numbers by hand is how they stop matching the run. This writes exactly what the benchmark printed, rounded for
reading, with the date, the machine and the command beside it.

Usage: ``python benchmarks/record_bench.py [--videos runs/bench-corpus/videos] [--peer face_recognition]
[--json-in FILE] [--save-json FILE] [--date YYYY-MM-DD] [--machine TEXT] [--command TEXT] [--note TEXT]
[--end-to-end [--challenge TOML]] [--dry-run]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"


def run_bench(
    videos: str,
    peers: list[str],
    device: str | None,
    interval: float | None,
    end_to_end: str | None = None,
    sampling: str | None = None,
) -> tuple[dict, str]:
    """Run the benchmark in a subprocess, as a user would (its progress goes to our stderr); (JSON, command).
    ``end_to_end``: ``""`` for ``--end-to-end`` with the bench's challenge, a TOML path for that challenge."""
    args = ["cli.py", "bench", "--videos", videos]
    for peer in peers:
        args += ["--peer", peer]
    if device:
        args += ["--device", device]
    if interval is not None:
        args += ["--interval", f"{interval:g}"]
    if sampling:
        args += ["--sampling", sampling]
    if end_to_end is not None:
        args += ["--end-to-end"] + (["--challenge", end_to_end] if end_to_end else [])
    args.append("--json")
    done = subprocess.run([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"cli.py bench failed (exit {done.returncode}); nothing recorded")
    return json.loads(done.stdout), "python " + shlex.join(args)


#: The decode-only row's label per sampling mode (``bench --sampling``).
_DECODERS = {
    "exact": "decode only (torchcodec, exact sampling)",
    "fast": "decode only (PyAV, fast sampling: reference frames)",
}


def _row(what: str, ms: float) -> str:
    return f"| {what} | {ms:.1f} | {1000.0 / ms:.2f} |" if ms > 0 else f"| {what} | {ms:.1f} | - |"


def markdown(result: dict[str, Any], date: str, machine: str, command: str, notes: list[str]) -> str:
    """One RESULTS.md section: heading with date and machine, the command, the figures, the notes."""
    eng, st, m = result["engine"], result["engine"]["stages"], result["machine"]
    threads = m.get("torch_threads")
    lines = [
        f"## {date} · `cli.py bench`: full pipeline vs peers · {machine}",
        "",
        f"Command: `{command}`.",
        "",
        f"Machine as the run saw it: {m.get('cpu')}, {m.get('cpu_count')} cores, torch {m.get('torch_version')} "
        f"({threads} thread{'s' if threads != 1 else ''}), device {m.get('device')}"
        + (f" ({m.get('device_name')})" if str(m.get("device", "")).startswith("cuda") else "")
        + (f", 1-min load average at start {m['load_average_1m_at_start']}" if "load_average_1m_at_start" in m else "")
        + ".",
        f"{result['frames']} sampled frames (every {eng.get('interval_s', 0.5):g} s) from {eng.get('videos')} videos, "
        "one process, one run, the same frames for every row. Every measured thing ran once untimed first (model "
        "loading and first-call costs excluded). Peers are timed on frames already in memory (no decode, no storage); "
        "the engine's full pipeline includes decode, rotate-and-retry detection, embedding, crops, PHash, tracks, "
        "individuals, SQLite and the object store.",
        "",
        "| what | ms / sampled frame | sampled frames/s |",
        "|---|---|---|",
        _row(_DECODERS.get(eng.get("sampling", "exact"), "decode only"), st["decode_ms_per_frame"]),
        _row("detector only (RetinaFace, rotate-and-retry, batched)", st["detect_ms_per_frame"]),
        _row("embedder only (alignment + dlib ResNet port, batched)", st["embed_ms_per_frame"]),
        _row("**engine full pipeline**", eng["ms_per_sampled_frame"]),
    ]
    for name, peer in result["peers"].items():
        lines.append(_row(f"peer `{name}`", peer["ms_per_sampled_frame"]))
    lines += ["", "| ratio | value |", "|---|---|"]
    for name, ratio in result["speedup_vs"].items():
        lines.append(f"| speedup vs `{name}` (peer ms / engine full-pipeline ms) | {ratio:.2f}× |")
    lines.append(f"| decode-only fraction (pipeline throughput / decode-only) | {result['decode_only_fraction']:.3f} |")
    if "naive" in result["peers"] and "vs_engine_detect_embed" in result["peers"]["naive"]:
        lines.append(
            "| naive ms / engine detector + embedder ms (what batching buys) | "
            f"{result['peers']['naive']['vs_engine_detect_embed']:.2f}× |"
        )
    stages = ", ".join(f"{k} {v:.2f}" for k, v in st["pipeline_stage_seconds"].items())
    lines += ["", f"Pipeline stage seconds (its own timer): {stages}; wall {eng.get('pipeline_seconds')} s."]
    if "detector_passes_per_frame" in st:
        lines.append(
            f"Detector passes per sampled frame: {st['detector_passes_per_frame']:.2f} (rotation decided per video; "
            f"retrying every frame with no face both ways would take {st['detector_passes_per_frame_retry_all']:.2f})."
        )
    if "end_to_end" in result:
        lines += ["", "End to end (`--end-to-end`, the whole `run` with models loaded inside, same process):", ""]
        lines += [f"    {line.strip()}" for line in result["end_to_end"]["lines"]]
    faces = [f"engine {eng.get('faces')}"]
    faces += [f"`{name}` {peer['faces']}" for name, peer in result["peers"].items() if "faces" in peer]
    lines.append(
        f"Faces found: {', '.join(faces)}; the pipeline stored {eng.get('pipeline_faces')} faces in "
        f"{eng.get('pipeline_tracks')} tracks, {eng.get('pipeline_individuals')} individuals."
    )
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", default="runs/bench-corpus/videos", help="folder to benchmark on")
    parser.add_argument("--peer", action="append", default=None, help="peer (repeat) [face_recognition]")
    parser.add_argument("--device", default=None, help="auto|cpu|cuda [the CLI's default]")
    parser.add_argument("--interval", type=float, default=None, help="seconds between samples [0.5]")
    parser.add_argument("--json-in", type=Path, default=None, help="record this JSON instead of running the bench")
    parser.add_argument("--date", default=dt.date.today().isoformat(), help="date written in the heading [today]")
    parser.add_argument("--machine", default=None, help="machine described in the heading [from the JSON]")
    parser.add_argument("--command", default=None, help="command written beside the figures [the one run]")
    parser.add_argument("--note", action="append", default=[], help="paragraph added under the table (repeat)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file appended to")
    parser.add_argument("--dry-run", action="store_true", help="print the section instead of appending it")
    parser.add_argument("--save-json", type=Path, default=None, help="also write the benchmark's JSON here")
    parser.add_argument("--end-to-end", action="store_true", help="time the whole run too (bench --end-to-end)")
    parser.add_argument("--challenge", default="", help="challenge TOML for --end-to-end [the bench's]")
    parser.add_argument("--sampling", default=None, help="exact|fast: how the pipeline samples [exact]")
    args = parser.parse_args(argv)
    if args.json_in:
        result, command = json.loads(args.json_in.read_text(encoding="utf-8")), "cli.py bench --json (read from file)"
    else:
        e2e = args.challenge if args.end_to_end else None
        result, command = run_bench(
            args.videos, args.peer or ["face_recognition"], args.device, args.interval, e2e, args.sampling
        )
    if args.save_json:
        args.save_json.parent.mkdir(parents=True, exist_ok=True)
        args.save_json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    m = result["machine"]
    gpu = "no GPU" if str(m.get("device", "cpu")).startswith("cpu") else m.get("device_name")
    machine = args.machine or f"{m.get('cpu_count')}-core CPU, {gpu}"
    section = markdown(result, args.date, machine, args.command or command, args.note)
    if args.dry_run:
        print(section)
        return
    text = args.results.read_text(encoding="utf-8") if args.results.exists() else "# Benchmark results\n"
    args.results.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")
    print(f"appended to {args.results}: speedup {json.dumps(result['speedup_vs'])}", file=sys.stderr)


if __name__ == "__main__":
    main()
