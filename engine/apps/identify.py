"""Who a track is: one decision rule for reference search, the watch-list monitor and gallery labelling.

A single face is weak evidence (a turned head, a blur, a look-alike), so the rule decides per *track* (or per
cluster of tracks) from its *robust distance* to each known person: the median of its faces' distances
(:func:`track_distances`). A track is person ``p`` when

1. its distance is at most the rule's ``threshold`` (:data:`RULES`: hse 1.05, dlib 0.60; a photo is farther from
   every track of its person than two frames of one track are from each other, so this is looser than the
   embedder's face-to-face ``same_person``), **and**
2. it stands out of its *cohort*: the distances from ``p``'s reference to all other tracks of the same run (plus
   a few virtual tracks at the embedder's typical distance to other people, ``Rule.background``). The cohort's
   centre is their median and its spread ``1.4826 × MAD`` (at least ``min_spread``); the track must lie at least
   ``min_z`` spreads under the centre. A look-alike (the father's photo against his sons) is under the threshold
   too, but among many tracks at the same distance, not below them. The track must also lie no more than
   ``max_lead`` of the way from the person's nearest track of the run to the cohort's centre (the person's own
   tracks cluster near the nearest one; a look-alike sits half-way). Tracks already under ``sure`` are not part of
   the cohort and need no separation (no impostor track of the measurements came that close): a run that shows the
   person only (a vlog, a selfie clip) has no cohort of other people to stand out of, and would otherwise lose every
   track of the person to its own median;
3. with several people (a watch list, a gallery), ``p`` is the track's nearest person, at least ``min_margin``
   nearer than the second: each track is given to at most one person.

How sure (``confidence`` in [0, 1]): the weakest of the three pieces of evidence, in cohort spreads,
``e = min((threshold - d) / s, max(z - min_z, (sure - d) / s), (margin - min_margin) / s)``, through a logistic:
``confidence = 1 / (1 + exp(-e))``. A match has ``e >= 0``, so a confidence of at least 0.5; a decision that clears
every test by one spread has 0.73, by three spreads 0.95.

Constants per embedder (:data:`RULES`) come from ``benchmarks/identity/search_bench.py`` on the labelled Friends and
Hamilton clips (``docs/search.md``, "How the decision was measured", gives the numbers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

#: 1.4826 × MAD estimates a normal distribution's standard deviation.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Rule:
    """The constants of the decision (see the module's docstring). ``threshold``: largest robust track distance that
    may match; ``sure``: under it a track needs no separation from its cohort; ``min_z``: cohort spreads a track must
    lie under the cohort's median; ``max_lead``: how far a track may lie from the person's nearest track of the run
    towards the cohort's median (0: at the nearest track, 1: at the median); ``min_spread``: floor of the cohort's
    spread (a cohort of two tracks has no MAD); ``min_margin``: how much nearer than the second-nearest person the
    chosen one must be; ``background``: the embedder's typical distance from a photo to another person's track, which
    ``background_tracks`` virtual tracks add to every cohort (a run of two or three tracks has no crowd of its own);
    ``quantile``: which quantile of a track's face distances is its robust distance (0.5: the
    median)."""

    threshold: float
    sure: float
    min_z: float
    max_lead: float
    min_spread: float
    min_margin: float
    background: float
    background_tracks: int = 3
    quantile: float = 0.5

    def with_threshold(self, threshold: float | None) -> Rule:
        """The rule with another ``threshold`` (``None``: unchanged); ``sure`` never exceeds it."""
        if threshold is None:
            return self
        return replace(self, threshold=threshold, sure=min(self.sure, threshold))


#: Per embedder, measured on the labelled Friends and Hamilton clips (``docs/search.md``).
RULES: dict[str, Rule] = {
    "hse": Rule(threshold=1.05, sure=0.75, min_z=1.5, max_lead=0.45, min_spread=0.04, min_margin=0.05, background=1.2),
    "dlib": Rule(threshold=0.60, sure=0.42, min_z=1.5, max_lead=0.4, min_spread=0.03, min_margin=0.03, background=0.76),
}


def rule_for(embedder: str, threshold: float | None = None) -> Rule:
    """The decision rule of ``embedder`` (``ValueError`` when unknown), its threshold replaced when given."""
    from engine.faces.embedders import embedder_spec

    return RULES[embedder_spec(embedder).name].with_threshold(threshold)


@dataclass(frozen=True)
class TrackMatch:
    """The decision for one (track, person). ``distance``: the track's robust distance to the person;
    ``cohort_median`` / ``cohort_spread``: the person's cohort; ``z``: cohort spreads under its median (``inf``
    with no cohort); ``lead``: where the track lies from the person's nearest track of the run (0) to the cohort's
    median (1); ``margin``: how much farther the second-nearest person is (``inf`` with one person, negative when
    another is nearer); ``reason``: ``"match"`` or the first test failed."""

    track: int
    person: str
    match: bool
    confidence: float
    distance: float
    cohort_median: float
    cohort_spread: float
    z: float
    lead: float
    margin: float
    reason: str

    def as_dict(self, digits: int = 4) -> dict[str, float | str | bool]:
        """The numbers for a metadata file or an alert (``inf`` written as ``None``)."""
        r = lambda v: None if not math.isfinite(v) else round(v, digits)  # noqa: E731
        return dict(
            match=self.match, confidence=r(self.confidence), distance=r(self.distance),
            cohort_median=r(self.cohort_median), cohort_spread=r(self.cohort_spread), z=r(self.z), lead=r(self.lead),
            margin=r(self.margin), reason=self.reason,
        )  # fmt: skip


@dataclass(frozen=True)
class Identification:
    """Decisions for every (track, person) of a run: ``decisions[t][p]`` follows ``names``."""

    names: list[str]
    decisions: list[list[TrackMatch]]

    def matches(self, person: str | None = None) -> list[TrackMatch]:
        """The matching decisions (of ``person`` only, when given), by track."""
        return [m for row in self.decisions for m in row if m.match and (person is None or m.person == person)]

    def of_track(self, track: int) -> TrackMatch | None:
        """The person a track is given to (at most one), or ``None``."""
        return next((m for m in self.decisions[track] if m.match), None)


def track_distances(face_distance: torch.Tensor, track: torch.Tensor, quantile: float = 0.5) -> torch.Tensor:
    """``[T, P]`` robust distances: per track and person, the ``quantile`` of its faces' distances ``[F, P]``."""
    face_distance = face_distance.detach().cpu().double()
    track = track.cpu()
    n = int(track.max()) + 1 if track.numel() else 0
    out = torch.empty((n, face_distance.shape[1]), dtype=torch.float64)
    for t in range(n):
        out[t] = face_distance[track == t].quantile(quantile, dim=0)
    return out


@dataclass(frozen=True)
class Cohort:
    """One person's distances to the run's tracks: ``median`` and ``spread`` (``1.4826 × MAD``, at least the rule's
    ``min_spread``) of those over ``rule.sure`` (``median`` is ``inf`` when none is), and ``nearest``, the smallest."""

    median: float
    spread: float
    nearest: float


def cohort(column: torch.Tensor, rule: Rule, leave_out: int | None = None) -> Cohort:
    """The cohort of one person from its distances ``[T]`` to the run's tracks, without track ``leave_out`` (a
    track is not its own crowd), plus the rule's background tracks."""
    if leave_out is not None:
        column = torch.cat([column[:leave_out], column[leave_out + 1 :]])
    nearest = float(column.min()) if column.numel() else math.inf
    rest = column[column > rule.sure]
    rest = torch.cat([rest, torch.full((rule.background_tracks,), rule.background, dtype=rest.dtype)])
    if rest.numel() == 0:
        return Cohort(math.inf, rule.min_spread, nearest)
    median = float(rest.median())
    mad = float((rest - median).abs().median()) * MAD_TO_SIGMA
    return Cohort(median, max(mad, rule.min_spread), nearest)


def _logistic(e: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, e))))


def identify(distance: torch.Tensor, names: Sequence[str], rule: Rule) -> Identification:
    """Decide every (track, person) from the robust distances ``distance`` ``[T, P]`` (columns follow ``names``,
    one column per person; see :func:`track_distances`). The module's docstring states the rule."""
    d = distance.detach().cpu().double().reshape(-1, len(names))
    decisions: list[list[TrackMatch]] = []
    for t in range(len(d)):
        row = d[t].tolist()
        decisions.append([_decide(t, p, row, names[p], cohort(d[:, p], rule, t), rule) for p in range(len(names))])
    return Identification(list(names), decisions)


def _decide(t: int, p: int, row: list[float], name: str, c: Cohort, rule: Rule) -> TrackMatch:
    """One (track, person): each test's evidence in cohort spreads, the weakest decides."""
    dist, s = row[p], c.spread
    nearest_track = min(c.nearest, dist)
    gap, best_gap = c.median - dist, c.median - nearest_track  # how far under the crowd: this track, the nearest
    z = gap / s
    margin = min((row[q] for q in range(len(row)) if q != p), default=math.inf) - dist
    absolute = (rule.threshold - dist) / s
    needed = max(rule.min_z * s, (1 - rule.max_lead) * best_gap)
    separated = math.inf if math.isinf(c.median) else (gap - needed) / s
    separated = max(separated, (rule.sure - dist) / s)
    nearest = (margin - rule.min_margin) / s
    evidence = min(absolute, separated, nearest)
    if absolute < 0:
        reason = "over threshold"
    elif separated < 0:
        reason = "not separated from the cohort" if z < rule.min_z else "far behind the person's nearest track"
    elif nearest < 0:
        reason = "another person is as near"
    else:
        reason = "match"
    lead = (dist - nearest_track) / best_gap if best_gap > 0 and not math.isinf(best_gap) else 0.0
    return TrackMatch(t, name, evidence >= 0, _logistic(evidence), dist, c.median, s, z, lead, margin, reason)
