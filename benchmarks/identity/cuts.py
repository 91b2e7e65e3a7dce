"""Shot cuts between sampled frames, as the challenge tracker finds them, against the true cuts of the labelled sets.

    .venv/bin/python -m benchmarks.identity.cuts [--shared ../shared]

The tracker (``engine.track.sampled_shots``) closes every track at a cut between two sampled frames (0.5 s apart),
found from the picture change the faces stage measures (``engine.shots.SAMPLED_SHOTS``). A missed cut can put two
people in one track; a false one only splits a track, which the grouping joins again.

Truth, per pair of successive samples:

- the labelled clips (``bench.CLIPS``): a cut lies between them when the frame-level detector (``engine.shots``
  with PySceneDetect's defaults, equal to its cuts on the shared clips: ``tests/test_shots.py``) cuts a frame in
  between;
- the challenges ``bench.py`` built from them (``runs/identity/challenges/*/``; run it first): each participant
  frame is a known source frame (``mapping.json``), so a cut lies between two samples when a frame in between is
  not the source frame after its predecessor (a join of two dealt segments) or a source cut lies between them.
  These participants are letterboxed into 720x1280 (the picture is a third of the frame), as ``make_corpus.py``
  fits its pictures and as films reposted on phones are.

Printed per set: true cuts found, missed and false cuts, for the engine's rule and for the rule it replaced (the
whole frame scored, at least 27 and twice the mean of two neighbours each side), and the score of every true cut
and the highest scores of sample pairs with no cut under the engine's rule.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.identity.bench import CLIPS, REPO
from engine.media.decode import sample_frames
from engine.shots import SAMPLED_SHOTS, ShotScorer, ShotSettings, find_cuts, scene_changes

#: The rule before 2026-12-07: whole-frame scores, PySceneDetect's threshold and a neighbour ratio.
BEFORE = ShotSettings(min_score=27.0, min_ratio=2.0, window=2, min_len=1)
CHALLENGES = REPO / "runs" / "identity" / "challenges"
#: One video of a set: per sample, a true cut before it, the engine's score and the whole frame's.
Part = tuple[list[bool], torch.Tensor, torch.Tensor]


def frame_cuts(path: Path) -> list[float]:
    """The pts of the first frame of every shot but the first (every frame scored, PySceneDetect's defaults)."""
    return scene_changes(path).times_s.tolist()


def sampled(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample pts ``[N]`` and the change scores of each sample against the one before: the engine's rule
    (picture only) and the whole frame."""
    ours, whole = ShotScorer(SAMPLED_SHOTS), ShotScorer()
    pts, a, b = [], [], []
    for batch in sample_frames(path, 0.5, "cpu"):
        pts.append(batch.pts_s)
        a.append(ours.update(batch.frames))
        b.append(whole.update(batch.frames))
    return torch.cat(pts), torch.cat(a), torch.cat(b)


def clip_truth(pts: torch.Tensor, cuts: list[float]) -> list[bool]:
    """Per sample (the first is never a cut): a cut lies after the previous sample, up to this one."""
    return [False] + [any(pts[k - 1] < c <= pts[k] + 1e-6 for c in cuts) for k in range(1, len(pts))]


def participant_truth(pts: torch.Tensor, source_pts: list[float], fps: float, cuts: list[float]) -> list[bool]:
    """Per sample of a participant video: a dealt-segment join or a source cut between it and the one before."""
    step = 1.5 / fps
    jump = [False] + [
        b - a > step or any(a < c <= b + 1e-6 for c in cuts) for a, b in zip(source_pts, source_pts[1:], strict=False)
    ]
    frame = (pts * fps).round().long().tolist()
    return [False] + [any(jump[frame[k - 1] + 1 : frame[k] + 1]) for k in range(1, len(frame))]


def tally(parts: list[Part], rule: ShotSettings, engine: bool) -> tuple[int, int, int]:
    """(true cuts found, missed, false cuts) over the parts (videos) of a set, each decided on its own."""
    hit = missed = false = 0
    for truth, ours, whole in parts:
        found = set(find_cuts(ours if engine else whole, rule).tolist())
        hit += sum(t and k in found for k, t in enumerate(truth))
        missed += sum(t and k not in found for k, t in enumerate(truth))
        false += sum(not t and k in found for k, t in enumerate(truth))
    return hit, missed, false


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    a = ap.parse_args()
    sets: list[tuple[str, list[Part]]] = []
    for stem, rel in CLIPS:
        clip = a.shared / "data" / rel
        source_cuts = frame_cuts(clip)
        pts, ours, whole = sampled(clip)
        sets.append((f"clip {stem}", [(clip_truth(pts, source_cuts), ours, whole)]))
        folder = CHALLENGES / f"{stem}_seg2"
        if not (folder / "mapping.json").is_file():
            print(f"{folder}: no challenge (run benchmarks.identity.bench first)")
            continue
        parts = []
        for name, part in sorted(json.loads((folder / "mapping.json").read_text())["participants"].items()):
            pts, ours, whole = sampled(folder / "videos" / name)
            fps = part["fps_num"] / part["fps_den"]
            parts.append((participant_truth(pts, part["source_pts"], fps, source_cuts), ours, whole))
        sets.append((f"challenge {stem}", parts))
    print("| set | true cuts | engine: found / missed / false | before: found / missed / false |")
    print("|---|---:|---|---|")
    cut_scores, calm = [], []
    for name, parts in sets:
        now, then = tally(parts, SAMPLED_SHOTS, True), tally(parts, BEFORE, False)
        total = sum(sum(truth) for truth, _, _ in parts)
        print(f"| {name} | {total} | {' / '.join(map(str, now))} | {' / '.join(map(str, then))} |")
        for truth, ours, _ in parts:
            cut_scores += [round(float(s), 1) for s, t in zip(ours, truth, strict=True) if t]
            calm += [round(float(s), 1) for k, (s, t) in enumerate(zip(ours, truth, strict=True)) if k and not t]
    print(f"\nengine scores of the true cuts: {sorted(cut_scores)}")
    print(f"highest engine scores with no cut: {sorted(calm)[-10:]} (a cut from {SAMPLED_SHOTS.min_score})")


if __name__ == "__main__":
    main()
