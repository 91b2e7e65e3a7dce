"""The whole identity benchmark in one run: every labelled clip and the challenge built from each, for each
embedder, the engine's individuals next to the peers on the same descriptors, then a summary against the targets.

    ENGINE_WEIGHTS_MIRROR=../shared/weights .venv/bin/python -m benchmarks.identity.bench [--shared ../shared]

For each clip of :data:`CLIPS` (labels made by eye: ``LABELS.md``):

1. ``extract.py`` runs the faces stage on the clip (``runs/identity/<clip>/``);
2. ``peers.py``'s tables: the engine's grouping as a run of that one video computes it, next to Chinese whispers
   and DBSCAN on the same descriptors, for dlib and HSE;
3. ``challenges.py`` builds a 3-participant challenge from the clip, dealt out in 2-s segments (so people recur
   across videos), runs the real pipeline (``cli.py run``) once per embedder into its own SQLite database, labels
   the stored faces through the exact frame mapping and prints the same tables;
4. the three challenges' stored faces pooled into one challenge (about 45 people from three unrelated sources):
   the engine's grouping and the peers again, where merges across sources would show.

The summary prints one line per (clip, challenge or the pool, embedder): the engine's purity, clusters per person,
B-cubed F1 and assigned share, the best peer F1 and which peer it is, and whether the targets hold (purity >= 0.95,
at most 1.2 clusters per person, F1 above every peer: the best peer row of each table, chosen with the labels, so
an optimistic peer). A second table compares the engine with each peer *at one fixed setting on every set*, as the
engine itself runs. Both are also written to ``runs/identity/summary.md``.

``--sampling fast`` runs the challenges with the fast sampler (``cli.py run --sampling fast``: the nearest
reference frame to each sample time, B-frames never decoded) into their own databases and scores only them (the
clips' faces are extracted with exact sampling, which the labels were made on); the stored faces are labelled
through the same mapping (nearest labelled sample within half the interval, then IoU), so a face a few frames off
still takes its label. Written to ``runs/identity/summary_fast.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.identity.score import HEADER, Scores, row

REPO = Path(__file__).resolve().parents[2]
#: (clip stem, path under the shared data folder).
CLIPS = (
    ("friends_poker", "multi_person/friends_poker.mp4"),
    ("talk_show_guests", "multi_person/talk_show_guests.mp4"),
    ("short_hamilton_clip", "videos/short_hamilton_clip.mp4"),
)
EMBEDDERS = ("hse", "dlib")
MAIN_VIEW = "all faces labelled with a person"
JUNK_VIEW = "persons and false detections (each no_face its own class)"
PURITY_TARGET, CLUSTERS_TARGET = 0.95, 1.2


def _python(*args: str) -> None:
    subprocess.run([sys.executable, *args], cwd=REPO, check=True)


def clip_tables(stem: str, clip: Path, fresh: bool) -> dict[str, dict[str, dict[str, Scores]]]:
    """Extract (when needed) and score one clip: per embedder, per view, per method."""
    from benchmarks.identity.peers import clip_results

    out = REPO / "runs" / "identity" / stem
    if fresh or not (out / "frames.csv").is_file():
        _python("-m", "benchmarks.identity.extract", str(clip), str(out))
    labels = REPO / "benchmarks" / "identity" / f"{stem}.labels.csv"
    return {e: clip_results(out, labels, e)[0] for e in EMBEDDERS}


def challenge_tables(
    stem: str, clip: Path, fresh: bool, sampling: str = "exact"
) -> dict[str, dict[str, dict[str, Scores]]]:
    """Build (when needed) the challenge of one clip, run the pipeline on it per embedder (with ``sampling``), and
    score it."""
    from benchmarks.identity.challenges import score_challenge

    out = REPO / "runs" / "identity" / "challenges" / f"{stem}_seg2"
    if fresh or not (out / "mapping.json").is_file():
        _python("-m", "benchmarks.identity.challenges", "build", str(clip), str(out), "--segment", "2")
    tables = {}
    for embedder in EMBEDDERS:
        name = embedder if sampling == "exact" else f"{embedder}_{sampling}"
        db = out / f"engine_{name}.db"
        for leftover in out.glob(f"engine_{name}.db*"):
            leftover.unlink()
        _python(
            "cli.py", "run", "--challenge", str(out / "challenge.toml"), "--videos", str(out / "videos"),
            "--db", f"sqlite:///{db}", "--store", str(out / f"store_{name}"), "--runtype", "prod",
            "--embedder", embedder, "--sampling", sampling, "--quiet",
        )  # fmt: skip
        print(f"\n=== challenge {stem} (3 participants, 2-s segments), {embedder}, {sampling} sampling")
        labels = REPO / "benchmarks" / "identity" / f"{stem}.labels.csv"
        faces_csv = REPO / "runs" / "identity" / stem / "faces.csv"
        tables[embedder] = score_challenge(out, f"sqlite:///{db}", labels, faces_csv)[1]
    return tables


def pooled_tables() -> dict[str, dict[str, dict[str, Scores]]]:
    """The three challenges' stored faces pooled into one challenge (about 45 people from three unrelated sources,
    as a larger challenge holds them): the engine's grouping on them (``group_individuals`` at the defaults, the
    call the pipeline makes) next to the peers on the same descriptors, per embedder and view. A method that merges
    across sources loses purity here even where each challenge alone is clean."""
    from benchmarks.identity.challenges import peer_methods
    from benchmarks.identity.peers import VIEWS
    from benchmarks.identity.score import score
    from benchmarks.identity.sweep import challenge_faces, pooled
    from engine.config import ClusterSettings
    from engine.pipeline.individuals import group_individuals

    tables: dict[str, dict[str, dict[str, Scores]]] = {}
    for embedder in EMBEDDERS:
        faces, labels, views = pooled([challenge_faces(stem, embedder) for stem, _ in CLIPS], [s for s, _ in CLIPS])
        of_face = group_individuals(faces, ClusterSettings(), embedder).of_face.tolist()
        idx = sorted(labels)
        results: dict[str, list[object]] = {
            "engine individuals": [of_face[i] if of_face[i] >= 0 else None for i in idx]
        }
        results.update(peer_methods(faces.embedding[idx].double().numpy()))
        ids = [str(i) for i in idx]
        lab, view = {str(i): labels[i] for i in idx}, {str(i): views[i] for i in idx}
        tables[embedder] = {
            title: {
                name: score(lab, dict(zip(ids, c, strict=True)), view, exclude, junk) for name, c in results.items()
            }
            for title, exclude, junk in VIEWS
        }
    return tables


def verdict(scores: dict[str, Scores]) -> tuple[str, Scores, str, float]:
    """(engine method name, its scores, best peer name, best peer F1) of one table."""
    engine = next(name for name in scores if name.startswith("engine") and "tracks" not in name and "@" not in name)
    peers = {name: s for name, s in scores.items() if not name.startswith("engine")}
    best = max(peers, key=lambda n: peers[n].f1)
    return engine, scores[engine], best, peers[best].f1


def meets_targets(s: Scores) -> bool:
    return s.purity >= PURITY_TARGET and s.clusters_per_person <= CLUSTERS_TARGET


def best_peer_meeting_targets(scores: dict[str, Scores]) -> float | None:
    """The best F1 among the peers that themselves meet both structural targets on this set (``None``: none does)."""
    f1s = [s.f1 for name, s in scores.items() if not name.startswith("engine") and meets_targets(s)]
    return max(f1s, default=None)


def summary(rows: list[tuple[str, str, dict[str, dict[str, Scores]]]]) -> str:
    """The summary table (markdown) of every (clip or challenge, embedder) in ``rows``: the main view's figures and
    targets, the best F1 of the peers that meet both structural targets themselves (a peer's best F1 often comes
    with a purity or a number of clusters per person the issue's targets rule out), then the F1s of the view that
    also scores false detections, and (challenges) the F1 over every labelled face, those the run missed as
    singletons."""
    from benchmarks.identity.challenges import EVERY_VIEW

    lines = [
        f"| set | embedder | purity | clusters/person | B³ F1 | assigned | best peer F1 | best peer | "
        f"purity ≥ {PURITY_TARGET} | ≤ {CLUSTERS_TARGET} cl/person | F1 > every peer | best F1 of peers meeting "
        "both targets | F1 > it | F1 with false detections (engine / best peer) | F1 over every labelled face, "
        "missed ones as singletons (engine / best peer) |",
        "|---|---|---:|---:|---:|---:|---:|---|:-:|:-:|:-:|---:|:-:|---:|---:|",
    ]
    for name, embedder, views in rows:
        _, s, peer, peer_f1 = verdict(views[MAIN_VIEW])
        _, sj, _, peer_fj = verdict(views[JUNK_VIEW])
        fair = best_peer_meeting_targets(views[MAIN_VIEW])
        ok = (s.purity >= PURITY_TARGET, s.clusters_per_person <= CLUSTERS_TARGET, s.f1 > peer_f1)
        marks = " | ".join("yes" if x else "**no**" for x in ok)
        fair_cells = "none | –" if fair is None else f"{fair:.3f} | {'yes' if s.f1 > fair else '**no**'}"
        every = "–"  # a clip's faces are its labelled faces: nothing to miss
        if EVERY_VIEW in views:
            _, se, _, peer_fe = verdict(views[EVERY_VIEW])
            every = f"{se.f1:.3f} / {peer_fe:.3f}"
        lines.append(
            f"| {name} | {embedder} | {s.purity:.3f} | {s.clusters_per_person:.2f} | {s.f1:.3f} | {s.assigned:.3f} "
            f"| {peer_f1:.3f} | {peer} | {marks} | {fair_cells} | {sj.f1:.3f} / {peer_fj:.3f} | {every} |"
        )
    return "\n".join(lines)


def fixed_setting_table(rows: list[tuple[str, str, dict[str, Scores]]]) -> str:
    """Per embedder and peer *at one fixed setting* (as the engine runs at one setting everywhere): on how many sets
    the engine's F1 is above the peer's, and the peer's lowest purity and worst clusters per person over the sets."""
    lines = [
        "| embedder | peer (one setting on every set) | engine F1 above on | peer min purity | peer max cl/person |",
        "|---|---|---:|---:|---:|",
    ]
    for embedder in EMBEDDERS:
        mine = [(name, scores) for name, e, scores in rows if e == embedder]
        peers = [p for p in mine[0][1] if not p.startswith("engine")] if mine else []
        for peer in peers:
            wins = sum(verdict(scores)[1].f1 > scores[peer].f1 for _, scores in mine)
            purity = min(scores[peer].purity for _, scores in mine)
            split = max(scores[peer].clusters_per_person for _, scores in mine)
            lines.append(f"| {embedder} | {peer} | {wins} of {len(mine)} | {purity:.3f} | {split:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared material folder")
    ap.add_argument("--fresh", action="store_true", help="extract and build again even when outputs exist")
    ap.add_argument("--sampling", choices=("exact", "fast"), default="exact", help="the challenge runs' sampling")
    a = ap.parse_args()
    os.environ.setdefault("ENGINE_WEIGHTS_MIRROR", str((a.shared / "weights").resolve()))
    rows: list[tuple[str, str, dict[str, dict[str, Scores]]]] = []
    for stem, rel in CLIPS:
        clip = a.shared / "data" / rel
        sets = [] if a.sampling != "exact" else [("clip", clip_tables(stem, clip, a.fresh))]
        if a.sampling != "exact" and not (REPO / "runs" / "identity" / stem / "faces.csv").is_file():
            clip_tables(stem, clip, a.fresh)  # the peers' descriptors and the matching need the exact extraction
        sets.append(("challenge", challenge_tables(stem, clip, a.fresh, a.sampling)))
        for kind, tables in sets:
            for embedder, views in tables.items():
                print(f"\n=== {kind} {stem}, {embedder}: {MAIN_VIEW}\n{HEADER}")
                for name, s in views[MAIN_VIEW].items():
                    print(row(name, s))
                rows.append((f"{kind} {stem}", embedder, views))
    if a.sampling == "exact":
        for embedder, views in pooled_tables().items():
            print(f"\n=== the three challenges pooled, {embedder}: {MAIN_VIEW}\n{HEADER}")
            for name, s in views[MAIN_VIEW].items():
                print(row(name, s))
            rows.append(("challenges pooled", embedder, views))
    main_rows = [(name, embedder, views[MAIN_VIEW]) for name, embedder, views in rows]
    text = summary(rows) + "\n\n" + fixed_setting_table(main_rows)
    print(f"\n=== identity summary ({MAIN_VIEW}; unassigned faces count as singletons)\n{text}")
    path = REPO / "runs" / "identity" / ("summary.md" if a.sampling == "exact" else f"summary_{a.sampling}.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
