"""Individuals across videos: track descriptors, sparse cross-video similarities, grouping with manual breaks.

Each track (a person inside one video) is summarised by the mean of its faces' 128-d descriptors. Similarities are
cosines between track means of *different* videos, computed in blocks on the run's device and kept only above a
floor, so the table grows with the number of plausible matches, not with the square of the number of tracks.

Grouping is average-linkage agglomeration driven by those sparse pairs: pairs are visited from the most similar
down, and two groups merge when the mean cosine over all their cross pairs (pairs under the floor count as the
floor, an upper bound) reaches the threshold, unless the two groups hold tracks that appear in the same frame of
one video (two faces on screen at once are two people). Average linkage resists the chaining that plain connected
components suffer from on large corpora.

**Choosing the threshold.** ``DEFAULT_THRESHOLD`` is calibrated on the shared photos with this engine's own chain:
the four Obama photos have pairwise cosines of at least 0.958, every pair of different people at most 0.915, and
the default sits in the middle of that gap (``benchmarks/test_embed_agreement.py`` re-measures it in
``make bench``). Raise it (towards 0.95) when different people get merged (look-alikes, or low-quality footage whose
track means drift towards the average face); lower it (towards 0.92) when one person is split across videos (very
different lighting, ages). ``cli.py report`` shows one contact sheet per individual, the quickest way to see which
way to move it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from engine.config.sections import CLUSTER_FLOOR as DEFAULT_FLOOR
from engine.config.sections import CLUSTER_THRESHOLD as DEFAULT_THRESHOLD
from engine.types import TrackPairs as Pairs

# The ``[clustering]`` defaults (``ClusterSettings``, in ``engine.config``) imported above: DEFAULT_THRESHOLD, the
# cosine between track mean descriptors above which two tracks are one person (see the module docstring), and
# DEFAULT_FLOOR: pairs under this cosine are not stored (and count as this value in the average linkage).


def track_means(track_of_face: torch.Tensor, embeddings: torch.Tensor, n_tracks: int) -> torch.Tensor:
    """Mean descriptor ``[T, D]`` of each track from faces' ``embeddings`` ``[F, D]`` and global track ids ``[F]``."""
    sums = torch.zeros((n_tracks, embeddings.shape[1]), dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, track_of_face, embeddings)
    counts = torch.bincount(track_of_face, minlength=n_tracks).clamp(min=1).to(embeddings.dtype)
    return sums / counts[:, None]


def similar_pairs(means: torch.Tensor, video: torch.Tensor, floor: float = DEFAULT_FLOOR, block: int = 4096) -> Pairs:
    """Cosine similarities ≥ ``floor`` between tracks of different videos, computed block by block on device."""
    unit = torch.nn.functional.normalize(means.to(torch.float32), dim=1)
    a_parts, b_parts, c_parts = [], [], []
    n = len(unit)
    for i in range(0, n, block):
        for j in range(i, n, block):
            sim = unit[i : i + block] @ unit[j : j + block].T
            keep = sim >= floor
            keep &= video[i : i + block, None] != video[None, j : j + block]
            if i == j:
                keep &= torch.ones_like(keep).triu(1)
            ia, jb = keep.nonzero(as_tuple=True)
            a_parts.append(ia + i)
            b_parts.append(jb + j)
            c_parts.append(sim[ia, jb])
    if not a_parts:
        empty = torch.zeros(0, dtype=torch.long, device=means.device)
        return Pairs(empty, empty, torch.zeros(0, device=means.device))
    return Pairs(torch.cat(a_parts), torch.cat(b_parts), torch.cat(c_parts))


def group_tracks(
    n_tracks: int,
    pairs: Pairs,
    threshold: float = DEFAULT_THRESHOLD,
    floor: float = DEFAULT_FLOOR,
    cannot_link: Iterable[tuple[int, int]] = (),
) -> torch.Tensor:
    """Individual id ``[T]`` per track (0, 1, ... in track order) by constrained average linkage (see module)."""
    parent = list(range(n_tracks))
    members: dict[int, list[int]] = {t: [t] for t in range(n_tracks)}
    blocked: dict[int, set[int]] = {t: set() for t in range(n_tracks)}
    for x, y in cannot_link:
        blocked[x].add(y)
        blocked[y].add(x)
    # link[r][s] = [sum of known cosines, number of known pairs] between the groups rooted at r and s (symmetric).
    link: dict[int, dict[int, list[float]]] = {t: {} for t in range(n_tracks)}
    order = torch.argsort(pairs.cosine.cpu(), descending=True)
    a, b, cos = pairs.a.cpu()[order].tolist(), pairs.b.cpu()[order].tolist(), pairs.cosine.cpu()[order].tolist()
    for x, y, c in zip(a, b, cos, strict=True):
        for p, q in ((x, y), (y, x)):
            entry = link[p].setdefault(q, [0.0, 0])
            entry[0] += c
            entry[1] += 1

    def root(t: int) -> int:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for x, y, c in zip(a, b, cos, strict=True):
        if c < threshold:
            break
        rx, ry = root(x), root(y)
        if rx == ry or not blocked[rx].isdisjoint(members[ry]):
            continue
        total, count = link[rx].get(ry, (0.0, 0))
        size = len(members[rx]) * len(members[ry])
        if (total + floor * (size - count)) / size < threshold:
            continue
        # Merge ry into rx: members, constraints and ry's link sums move to rx.
        parent[ry] = rx
        members[rx] += members.pop(ry)
        blocked[rx] |= blocked.pop(ry)
        for other, (total, count) in link.pop(ry).items():
            del link[other][ry]
            if other == rx:
                continue
            entry = link[rx].setdefault(other, [0.0, 0])
            entry[0] += total
            entry[1] += count
            link[other][rx] = entry
    ids: dict[int, int] = {}
    return torch.tensor([ids.setdefault(root(t), len(ids)) for t in range(n_tracks)], dtype=torch.long)
