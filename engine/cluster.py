"""Individuals from tracks: constrained linkage over the faces that may vote (means and face pairs), which cannot chain.

Units. A track (one person inside one video, ``engine.track``) is never split here: its faces are one person
(must-link). Manual merges join tracks the same way before anything else. Two tracks seen in one frame of one
video are two people (cannot-link), and so is every pair of groups that would contain them.

Votes. Only faces whose quality reaches their floor vote (``engine.faces.quality``; faces the embedder reads
confidently have a lower one, ``vote_floors``): a blurred, tiny or turned face
neither starts nor links an individual. Within a track, faces far from the track's own consensus (a tracker slip,
a hand) are dropped from the vote too (:func:`voting_weights`). A track with no voting face is not grouped; after the
grouping it takes the individual its readable faces clearly match, without voting (:func:`attach_tracks`), or none.

Similarity. Descriptors are L2-normalised. Two groups merge when both of these reach their thresholds:

* the cosine between their quality-weighted mean directions, ``S_a · S_b / (|S_a| |S_b|)`` with ``S = Σ w u`` over
  the group's voting faces (centroid linkage: merges are made in this order, most similar first);
* the quality-weighted mean cosine over every pair of their faces, ``S_a · S_b / (Σ w_a · Σ w_b)`` (average
  linkage at face level, the pair threshold).

Both are exact from one weighted sum per group, so a merge updates in O(D), and in both one close pair of faces
is one term of a mean, so it cannot merge two groups: what stops the chaining single linkage (and Chinese
whispers) suffer from (A-B close, B-C close, so A=C). Why two: a person seen from the front and in profile has a
low mean cosine *within* their own group, so each new face of theirs scores low against it on face pairs (average
linkage alone split them); the cosine of the means divides by the group's spread and keeps them whole. But a
large, varied group has a short mean, which lifts its cosine to everyone: on the three labelled challenges pooled
into one (about 45 people), the means alone joined Phoebe of ``friends_poker`` with a blonde talk-show guest
whose faces had a mean pairwise cosine of 0.50-0.51 with hers. The pair threshold, lower than average linkage's
own threshold was, stops that. (Average linkage alone was this module's rule until 2026-12-06;
``benchmarks/RESULTS.md`` has the measurements.)

Order. Groups merge from the highest cosine of means down while both thresholds hold, never across a
cannot-link; pairs are found among *candidate* track pairs (faces' mean pairwise cosine at least ``floor``, at
most the pair threshold, computed in blocks on the run's device, or by FAISS's exact range search on the CPU past
``engine.index.FAISS_MIN_ROWS`` tracks, so memory grows with plausible matches, not with the square of the number
of tracks). The candidates are exact for this rule: a group pair with no candidate track pair averages values
under the floor, so its faces can never reach the pair threshold.

When unsure, apart: a split person is one manual merge away from right; a merged pair poisons a dataset. The
thresholds are measured per embedder on labelled real footage (``benchmarks/identity``; ``engine.faces.embedders``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import torch

from engine.index import pairs_above
from engine.types import TrackPairs as Pairs

__all__ = ["attach_tracks", "group_tracks", "similar_pairs", "track_sums", "voting_weights"]

#: A track with no voting face takes an individual only when its faces' mean pairwise cosine with that individual is
#: at least this much above their mean pairwise cosine with the next one (``attach_tracks``). Measured on the labelled
#: sets (``benchmarks/RESULTS.md``, 2026-12-06, sixth session): every right attachment with hse cleared it by 0.117 or
#: more; with dlib the wrong ones were within 0.033 and the right ones 0.059-0.068 ahead.
ATTACH_MARGIN = 0.05
#: A face votes only when its cosine to its track's weighted mean direction is at least this much below the
#: track's median cosine at most (robust to a minority of faces of another person or of no face).
OUTLIER_MARGIN = 0.25


def voting_weights(
    track_of_face: torch.Tensor, unit: torch.Tensor, quality: torch.Tensor, floor: float | torch.Tensor
) -> torch.Tensor:
    """Each face's vote ``[F]``: its quality where it reaches ``floor`` (one for all, or each face's own ``[F]``:
    ``engine.faces.quality.vote_floors``) and the face agrees with its track, else 0.

    Agreement: the cosine between the face and its track's quality-weighted mean direction is no more than
    :data:`OUTLIER_MARGIN` under the track's median (a weighted medoid-like consensus that a minority of wrong
    faces cannot move much). Batched over every track at once.
    """
    w = torch.where(quality >= floor, quality, torch.zeros_like(quality)).to(unit.dtype)
    if len(w) == 0:
        return w
    n = int(track_of_face.max()) + 1
    mean = torch.zeros((n, unit.shape[1]), dtype=unit.dtype, device=unit.device)
    mean.index_add_(0, track_of_face, unit * w[:, None])
    cos = (unit * torch.nn.functional.normalize(mean, dim=1)[track_of_face]).sum(1)
    # Per-track median of the voters' cosines: sort by (track, cos) and pick each track's middle voter.
    voter = w > 0
    key = track_of_face[voter].to(torch.float64) * 4 + cos[voter].to(torch.float64)
    ordered = cos[voter][torch.argsort(key)]
    counts = torch.bincount(track_of_face[voter], minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    median = torch.full((n,), -2.0, dtype=unit.dtype, device=unit.device)
    has = counts > 0
    if bool(has.any()):
        median[has] = ordered[(starts + (counts - 1) // 2)[has]]
    keep = cos >= median[track_of_face] - OUTLIER_MARGIN
    return torch.where(keep, w, torch.zeros_like(w))


def track_sums(
    track_of_face: torch.Tensor, unit: torch.Tensor, weight: torch.Tensor, n_tracks: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per track, the weighted sum of its faces' unit descriptors ``[T, D]`` and the sum of weights ``[T]``."""
    sums = torch.zeros((n_tracks, unit.shape[1]), dtype=torch.float32, device=unit.device)
    sums.index_add_(0, track_of_face, unit.float() * weight.float()[:, None])
    mass = torch.zeros(n_tracks, dtype=torch.float32, device=unit.device)
    mass.index_add_(0, track_of_face, weight.float())
    return sums, mass


def similar_pairs(sums: torch.Tensor, mass: torch.Tensor, floor: float, block: int = 4096) -> Pairs:
    """Track pairs (``a < b``) whose faces' mean pairwise cosine is at least ``floor`` (block by block on device, or
    FAISS's exact range search on the CPU for many tracks: ``engine.index``), each with the cosine of the two
    tracks' mean directions (``Pairs.cosine``). Tracks without a vote have none."""
    proto = sums / mass.clamp(min=1e-12)[:, None]
    a, b, pair_mean = pairs_above(proto, mass > 0, floor, block)
    norm = proto.norm(dim=1).clamp(min=1e-12)
    return Pairs(a, b, pair_mean / (norm[a] * norm[b]))


class _Groups:
    """Union-find over tracks with each group's weighted sum, mass, members and cannot-links."""

    def __init__(
        self, sums: torch.Tensor, mass: torch.Tensor, cannot_link: Iterable[tuple[int, int]], pair_threshold: float
    ) -> None:
        n = len(mass)
        self.pair_threshold = pair_threshold
        self.parent = list(range(n))
        self.sums = {t: sums[t].double() for t in range(n)}
        self.mass = mass.double().tolist()
        self.members: dict[int, list[int]] = {t: [t] for t in range(n)}
        self.blocked: dict[int, set[int]] = {t: set() for t in range(n)}
        self.neighbours: dict[int, set[int]] = {t: set() for t in range(n)}
        for x, y in cannot_link:
            self.blocked[x].add(y)
            self.blocked[y].add(x)

    def root(self, t: int) -> int:
        while self.parent[t] != t:
            self.parent[t] = self.parent[self.parent[t]]
            t = self.parent[t]
        return t

    def similarity(self, r: int, s: int) -> float:
        """The cosine of the groups' mean directions, or -2 when their faces' mean pairwise cosine is under the
        pair threshold (or a group has no vote): such a pair may never merge."""
        if self.mass[r] <= 0 or self.mass[s] <= 0:
            return -2.0
        a, b = self.sums[r], self.sums[s]
        dot = float(a @ b)
        if dot / (self.mass[r] * self.mass[s]) < self.pair_threshold:
            return -2.0
        return dot / max(float(a.norm() * b.norm()), 1e-24)

    def conflict(self, r: int, s: int) -> bool:
        return not self.blocked[r].isdisjoint(self.members[s])

    def merge(self, r: int, s: int) -> None:
        """Fold group ``s`` into ``r``."""
        self.parent[s] = r
        self.sums[r] = self.sums[r] + self.sums.pop(s)
        self.mass[r] += self.mass[s]
        self.members[r] += self.members.pop(s)
        self.blocked[r] |= self.blocked.pop(s)
        self.neighbours[r] = {self.root(x) for x in self.neighbours[r] | self.neighbours.pop(s)} - {r}


def group_tracks(
    sums: torch.Tensor,
    mass: torch.Tensor,
    pairs: Pairs,
    threshold: float,
    cannot_link: Iterable[tuple[int, int]] = (),
    must_link: Iterable[tuple[int, int]] = (),
    pair_threshold: float = -1.0,
) -> torch.Tensor:
    """Individual id ``[T]`` per track (0, 1, ... in track order; -1 for a track with no voting face) by
    constrained centroid linkage (see the module): two groups merge when the cosine of their mean directions
    reaches ``threshold`` and their faces' mean pairwise cosine reaches ``pair_threshold``. ``must_link`` pairs
    are joined first (unless they also cannot-link: then they stay apart); ``cannot_link`` pairs never share an
    individual."""
    groups = _Groups(sums.cpu(), mass.cpu(), cannot_link, pair_threshold)
    for x, y in must_link:
        rx, ry = groups.root(x), groups.root(y)
        if rx != ry and not groups.conflict(rx, ry):
            groups.merge(min(rx, ry), max(rx, ry))
    for x, y in zip(pairs.a.cpu().tolist(), pairs.b.cpu().tolist(), strict=True):
        rx, ry = groups.root(x), groups.root(y)
        if rx != ry:
            groups.neighbours[rx].add(ry)
            groups.neighbours[ry].add(rx)
    heap: list[tuple[float, int, int]] = []
    for r in list(groups.neighbours):
        for s in groups.neighbours[r]:
            if r < s and (sim := groups.similarity(r, s)) >= threshold:
                heap.append((-sim, r, s))
    heapq.heapify(heap)
    while heap:
        neg, r, s = heapq.heappop(heap)
        if r not in groups.members or s not in groups.members or groups.conflict(r, s):
            continue  # stale (one side was merged since) or forbidden
        if abs(-neg - groups.similarity(r, s)) > 1e-9:
            continue  # stale
        groups.merge(r, s)
        for other in groups.neighbours[r]:
            sim = groups.similarity(r, other)
            if sim >= threshold and not groups.conflict(r, other):
                heapq.heappush(heap, (-sim, min(r, other), max(r, other)))
    ids: dict[int, int] = {}
    mass_list = groups.mass
    out = []
    for t in range(len(mass_list)):
        r = groups.root(t)
        out.append(ids.setdefault(r, len(ids)) if mass_list[r] > 0 else -1)
    return torch.tensor(out, dtype=torch.long)


def attach_tracks(
    individual: torch.Tensor,
    vote_sums: torch.Tensor,
    vote_mass: torch.Tensor,
    face_sums: torch.Tensor,
    face_count: torch.Tensor,
    threshold: float,
    pair_threshold: float,
    cannot_link: Iterable[tuple[int, int]] = (),
    margin: float = ATTACH_MARGIN,
    block_elements: int = 2**24,
) -> torch.Tensor:
    """``individual`` ``[T]`` with tracks that had no voting face (-1) given the individual their faces clearly match.

    Such a track (only tiny, blurred or turned faces) neither starts, links nor votes: the individuals stay those
    the good faces made, and their sums do not change. It *takes* an individual when, against that individual's
    voting faces (``vote_sums``/``vote_mass`` per track, summed per individual), its faces (``face_sums``: the sum
    of its unit descriptors, ``face_count`` faces) reach the grouping's own two thresholds (cosine of the mean
    directions, mean pairwise cosine) and their mean pairwise cosine beats the next individual's by ``margin``;
    never an individual holding a track it cannot-links with (nor one a track attached before it cannot-links
    with). When two individuals are about as close, the track stays without one: apart when unsure. Computed on
    the tensors' device in row blocks of at most ``block_elements`` similarities (memory bounded whatever the
    numbers of tracks and individuals).
    """
    out = individual.clone().cpu()
    n = int(out.max()) + 1 if out.numel() else 0
    loose = ((out < 0) & (face_count.cpu() > 0)).nonzero().flatten()
    if n == 0 or len(loose) == 0:
        return out
    device = face_sums.device
    owner = out.to(device)
    owned = owner >= 0
    sums = torch.zeros((n, face_sums.shape[1]), device=device).index_add_(0, owner[owned], vote_sums[owned].float())
    mass = torch.zeros(n, device=device).index_add_(0, owner[owned], vote_mass[owned].float())
    proto, direction = sums / mass.clamp(min=1e-12)[:, None], torch.nn.functional.normalize(sums, dim=1)
    partners: dict[int, set[int]] = {}
    for x, y in cannot_link:
        partners.setdefault(x, set()).add(y)
        partners.setdefault(y, set()).add(x)
    found: list[tuple[float, int, int]] = []  # (mean pairwise cosine, track, individual) of each fitting track
    step = max(1, block_elements // n)
    of = out.tolist()
    for i in range(0, len(loose), step):
        rows = loose[i : i + step]
        at = rows.to(device)
        mine = face_sums[at].float()
        pair = (mine / face_count[at].float()[:, None]) @ proto.T
        for r, t in enumerate(rows.tolist()):  # individuals the track already cannot-links with
            if t in partners:
                pair[r, [of[u] for u in partners[t] if of[u] >= 0]] = -2.0
        top = pair.topk(min(2, n), dim=1)
        best, first = top.indices[:, 0], top.values[:, 0]
        second = top.values[:, 1] if n > 1 else torch.full_like(first, -2.0)
        means = (torch.nn.functional.normalize(mine, dim=1) * direction[best]).sum(1)
        fit = ((first >= pair_threshold) & (means >= threshold) & (first - second >= margin)).cpu()
        found += zip(first.cpu()[fit].tolist(), rows[fit].tolist(), best.cpu()[fit].tolist(), strict=True)
    for _, t, k in sorted(found, key=lambda f: (-f[0], f[1])):  # closest first; one attached before may cannot-link
        if all(of[u] != k for u in partners.get(t, ())):
            of[t] = k
    return torch.tensor(of, dtype=torch.long)
