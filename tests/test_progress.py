"""Progress of long verbs (issue 15): the engine reports ``tick(what, step, total)``; the CLI draws bars only on a
terminal and never under --quiet."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from conftest import run_cli

from engine import api
from engine.media import probe


def _recorder() -> tuple[dict[str, int], dict[str, int | None], object]:
    done: dict[str, int] = defaultdict(int)
    totals: dict[str, int | None] = {}

    def tick(what: str, step: int, total: int | None) -> None:
        done[what] += step
        totals[what] = total

    return done, totals, tick


def test_search_and_label_tick_every_frame(tmp_path: Path, media_dir: Path, shared_data: Path) -> None:
    clip = media_dir / "plain2s.mp4"
    frames = probe(clip).video.num_frames
    done, totals, tick = _recorder()
    api.search(shared_data / "faces" / "lin-manuel-miranda.png", [clip], tmp_path / "s", clips=False, device="cpu",
               log=lambda _m: None, progress=tick)  # fmt: skip
    assert done["videos"] == 1 and totals["videos"] == 1
    assert done["frames"] == frames  # every decoded frame counted once
    done, totals, tick = _recorder()
    api.label(clip, tmp_path / "l", shards=2, interval=0.5, device="cpu", log=lambda _m: None, progress=tick)
    assert done["shards"] == 2 == totals["shards"]
    assert totals["frames"] == done["frames"] >= frames  # the shards' overlaps are decoded by both neighbours


def test_no_bars_off_a_terminal(tmp_path: Path, media_dir: Path, shared_data: Path) -> None:
    res = run_cli(
        "search", "--reference", str(shared_data / "faces" / "lin-manuel-miranda.png"), str(media_dir / "plain2s.mp4"),
        "--out", str(tmp_path), "--no-clips", "--device", "cpu",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "━" not in res.stderr and "clip(s) in 1 video(s)" in res.stdout


def test_report_and_export_tick(tmp_path: Path, media_dir: Path) -> None:
    """A faces-only run, then report (one tick per individual's sheet) and export (one per crop read)."""
    videos = tmp_path / "v"
    videos.mkdir()
    (videos / "a.mp4").write_bytes((media_dir / "plain2s.mp4").read_bytes())
    db, store = f"sqlite:///{tmp_path / 'e.db'}", str(tmp_path / "o")
    summary = api.run(None, videos, db_url=db, store_url=store, device="cpu", log=lambda _m: None)
    done, totals, tick = _recorder()
    api.report(summary.challenge, tmp_path / "r.html", db_url=db, store_url=store, log=lambda _m: None, progress=tick)
    assert done["individuals"] == totals["individuals"] == summary.individuals > 0
    done, totals, tick = _recorder()
    exported = api.export(summary.challenge, tmp_path / "x", db_url=db, store_url=store, log=lambda _m: None,
                          progress=tick)  # fmt: skip
    assert done["crops"] == totals["crops"] == exported.faces > 0
