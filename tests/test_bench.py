"""`cli.py bench` on a tiny corpus: the JSON's shape and arithmetic, and clear errors.

Speed goals are read from the benchmark's output (`make bench`, benchmarks/RESULTS.md), never asserted here: a timed
assert on a shared CI machine only measures the neighbours.
"""

from __future__ import annotations

import json
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
    done = run_cli("bench", "--videos", str(tiny_corpus), "--interval", str(INTERVAL), "--json", timeout=300)
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
