"""`cli.py bench` on a tiny corpus: the JSON's shape and arithmetic, and clear errors.

Speed goals are read from the benchmark's output (`make bench`, benchmarks/RESULTS.md), never asserted here: a timed
assert on a shared CI machine only measures the neighbours.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import ffmpeg, run_cli

from engine import media
from engine.tools.bench import BenchError, bench_videos, check_peers, table_rows

INTERVAL = 1.0


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory, hamilton: Path, ryan: Path) -> Path:
    """Two clips of 2.5 s cut from the shared videos (stream copy: quick, and real footage with faces)."""
    d = tmp_path_factory.mktemp("bench") / "videos"
    d.mkdir()
    ffmpeg("-i", str(hamilton), "-t", "2.5", "-c", "copy", str(d / "hamilton.mp4"))
    ffmpeg("-ss", "1", "-i", str(ryan), "-t", "2.5", "-c", "copy", str(d / "ryan.mp4"))
    return d


@pytest.fixture(scope="module")
def bench_json(tiny_corpus: Path) -> dict:
    """One ``bench --end-to-end`` run: the usual figures, plus the whole run's (the bench's challenge with
    ``[logo] auto``: the Hamilton cut carries the WH.GOV logo, so the cover runs too)."""
    done = run_cli(
        "bench", "--videos", str(tiny_corpus), "--interval", str(INTERVAL), "--end-to-end", "--json", timeout=400
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_json_has_every_key_and_consistent_numbers(bench_json: dict, tiny_corpus: Path) -> None:
    r = bench_json
    assert set(r) >= {"frames", "engine", "peers", "speedup_vs", "decode_only_fraction", "machine"}
    # frames: exactly the samples the engine takes (media.sample_times on each video's probed stream).
    expected = sum(len(media.sample_times(media.probe(v).video, INTERVAL)) for v in sorted(tiny_corpus.iterdir()))
    assert r["frames"] == expected > 0
    eng = r["engine"]
    x = eng["ms_per_sampled_frame"]
    stages = eng["stages"]
    assert set(stages) >= {"decode_ms_per_frame", "detect_ms_per_frame", "embed_ms_per_frame", "pipeline_stage_seconds"}
    assert x > 0 and all(stages[k] > 0 for k in ("decode_ms_per_frame", "detect_ms_per_frame", "embed_ms_per_frame"))
    # The pipeline's own stage timer, with the product path's stages in it.
    assert {"decode", "detect", "embed", "crops", "track", "store", "sql", "individuals"} <= set(
        stages["pipeline_stage_seconds"]
    )
    assert all(v >= 0 for v in stages["pipeline_stage_seconds"].values())
    # Default peers: face_recognition, and naive always.
    assert set(r["peers"]) == set(r["speedup_vs"]) == {"face_recognition", "naive"}
    for name, peer in r["peers"].items():
        y = peer["ms_per_sampled_frame"]
        assert y > 0
        assert r["speedup_vs"][name] == pytest.approx(y / x, rel=1e-3, abs=1e-3)
    assert 0 < r["decode_only_fraction"] == pytest.approx(stages["decode_ms_per_frame"] / x, rel=1e-3, abs=1e-4)
    # Engine-side counts agree with each other: the pipeline stored the faces the detector-only pass found.
    assert eng["pipeline_faces"] == eng["faces"]
    assert "warm" in eng["warmup"]
    m = r["machine"]
    assert m["cpu_count"] >= 1 and m["torch_threads"] >= 1 and m["device_name"] and m["torch_version"]
    # The readable table is built from the same dict.
    rows = table_rows(r)
    assert [row[0] for row in rows][-2:] == ["peer face_recognition", "peer naive"]
    # Detector passes: at least one per frame, never more than retrying every frame with no face both ways.
    assert 1.0 <= stages["detector_passes_per_frame"] <= stages["detector_passes_per_frame_retry_all"] <= 3.0


def test_end_to_end_figures_are_the_whole_runs(bench_json: dict, tiny_corpus: Path) -> None:
    r, e = bench_json, bench_json["end_to_end"]
    n, videos = r["frames"], len(list(tiny_corpus.iterdir()))
    assert (e["frames"], e["videos"], e["challenge"]) == (n, videos, "bench")
    wall = e["wall_s"]
    assert wall >= r["engine"]["pipeline_seconds"] - 1e-3  # the whole call: models loaded, stores opened
    assert e["videos_per_minute"] == pytest.approx(60 * videos / wall, rel=1e-2)
    assert e["sampled_frames_per_s"] == pytest.approx(n / wall, rel=1e-2)
    assert e["fraction_of_decode_only"] == pytest.approx(r["engine"]["decode_seconds"] / wall, rel=1e-2, abs=1e-3)
    assert e["decode_only"]["sampled_frames_per_s"] == pytest.approx(n / r["engine"]["decode_seconds"], rel=1e-2)
    # Every stage of the run is there (the logo stage too: [logo] auto), each with its share of the wall time.
    seconds = r["engine"]["stages"]["pipeline_stage_seconds"]
    assert {
        "fetch",
        "hash",
        "probe",
        "decode",
        "detect",
        "embed",
        "logo",
        "track",
        "store",
        "sql",
        "individuals",
    } <= set(e["stage_share_of_wall"])
    for stage, share in e["stage_share_of_wall"].items():
        assert share == pytest.approx(seconds[stage] / wall, rel=1e-2, abs=1e-3)
    # The peers are the same figures as the bench's, against the whole run's time per frame.
    for name, ms in e["peers_ms_per_sampled_frame"].items():
        assert ms == r["peers"][name]["ms_per_sampled_frame"]
        assert e["speedup_vs"][name] == pytest.approx(ms / e["ms_per_sampled_frame"], rel=1e-2)
    assert any("videos/min" in line for line in e["lines"]) and any("decode-only" in line for line in e["lines"])


def test_record_bench_writes_the_end_to_end_figures(bench_json: dict, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from record_bench import markdown

    text = markdown(bench_json, "2026-01-01", "test machine", "cli.py bench --end-to-end", [])
    assert "Detector passes per sampled frame" in text and "End to end" in text
    assert f"{bench_json['end_to_end']['videos_per_minute']:.1f} videos/min" in text


def test_end_to_end_with_a_missing_challenge_exits_2(tiny_corpus: Path, tmp_path: Path) -> None:
    done = run_cli("bench", "--videos", str(tiny_corpus), "--end-to-end", "--challenge", str(tmp_path / "no.toml"))
    assert done.returncode == 2 and "challenge file not found" in done.stderr


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    """``benchmarks/gpu_check.sh --dry-run``: every step of the GPU check on the CPU, small; the CUDA-only steps say
    why they did not run, and the figures land as JSON and text (nothing carried: the CI machine's own media)."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CARRY": str(tmp_path / "no-carry")}
    done = subprocess.run(
        ["bash", str(repo / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert r["dry_run"] is True and r["failures"] == {}
    assert r["facts"]["torch"] and r["cuda_tests"]["errors"] == 0 and r["cuda_tests"]["failures"] == 0
    rows = {row["what"]: row for row in r["models"]["rows"]}
    assert set(rows) == {"detector", "embedder hse", "embedder dlib"}
    assert rows["detector"]["ms_per_frame"] > 0 and rows["embedder dlib"]["ms_per_face"] > 0
    assert "no CUDA" in r["kernels"]["skipped"] and "no CUDA" in r["compile"]["skipped"]
    e2e = r["end_to_end"]["result"]["end_to_end"]
    assert e2e["videos"] == 2 and e2e["sampled_frames_per_s"] > 0
    text = (tmp_path / "out" / "gpu_check.txt").read_text()
    assert "GPU check (dry run on the CPU)" in text and "videos/min" in text and text.strip() in done.stdout


def test_gpu_check_report_names_failed_and_skipped_steps() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from gpu_check_report import report_lines

    lines = report_lines(
        {"models": {"failed": "RuntimeError: boom"}, "kernels": {"skipped": "no CUDA"}, "failures": {"models": "x"}}
    )
    assert "models: FAILED RuntimeError: boom" in lines and "kernels: skipped: no CUDA" in lines
    assert "failed steps: models" in lines


def test_missing_folder_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    done = run_cli("bench", "--videos", str(tmp_path / "nope"), "--json")
    assert done.returncode == 2
    assert "videos folder not found" in done.stderr and str(tmp_path / "nope") in done.stderr
    assert done.stdout.strip() == ""


def test_empty_folder_and_bad_peer_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no video here\n")
    with pytest.raises(BenchError, match="no video files"):
        bench_videos(tmp_path)
    with pytest.raises(BenchError, match="unknown peer"):
        check_peers(["insightface"])
    assert check_peers(["naive"]) == ["naive"]
