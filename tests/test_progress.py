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
