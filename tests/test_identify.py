"""The per-track decision shared by search, the monitor and gallery labelling (``engine.apps.identify``).

Synthetic distances, seeded: the rule's behaviour is stated on numbers a reader can check by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from engine.apps.identify import RULES, Rule, identify, rule_for, track_distances

RULE = Rule(threshold=1.0, sure=0.5, min_z=1.5, max_lead=0.4, min_spread=0.04, min_margin=0.05, background=1.2)


def _crowd(n: int, centre: float, sd: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return centre + sd * torch.randn(n, generator=g, dtype=torch.float64)


def test_look_alikes_under_the_threshold_are_rejected_the_person_accepted() -> None:
    """The father's photo against a run of his sons (many tracks at 0.85-0.9, all under the threshold) and strangers
    (1.2): the father's own tracks (0.62, 0.66) stand out of the crowd, a son's does not."""
    sons = _crowd(12, 0.88, 0.03, seed=1)
    strangers = _crowd(8, 1.2, 0.05, seed=2)
    father = torch.tensor([0.62, 0.66], dtype=torch.float64)
    d = torch.cat([father, sons, strangers])[:, None]
    out = identify(d, ["father"], RULE)
    assert [m.track for m in out.matches()] == [0, 1]
    son = out.decisions[2][0]
    assert son.distance < RULE.threshold and not son.match and son.reason == "not separated from the cohort"
    assert all(not row[0].match for row in out.decisions[2:])
    assert out.decisions[0][0].z > RULE.min_z > son.z


def test_a_track_far_behind_the_persons_nearest_track_is_rejected() -> None:
    """Separated from the crowd of strangers, but much farther than the person's own track: someone else."""
    strangers = _crowd(20, 1.2, 0.05, seed=3)
    d = torch.cat([torch.tensor([0.62, 0.95], dtype=torch.float64), strangers])[:, None]
    out = identify(d, ["p"], RULE)
    assert out.decisions[0][0].match
    lookalike = out.decisions[1][0]
    assert lookalike.z > RULE.min_z and lookalike.lead > RULE.max_lead and not lookalike.match


def test_threshold_still_applies() -> None:
    strangers = _crowd(20, 1.4, 0.05, seed=4)
    d = torch.cat([torch.tensor([1.05], dtype=torch.float64), strangers])[:, None]
    decision = identify(d, ["p"], RULE).decisions[0][0]
    assert decision.z > RULE.min_z and not decision.match and decision.reason == "over threshold"


def test_a_run_of_one_person_needs_no_crowd() -> None:
    """Sure tracks need no cohort; a track is not its own crowd, so a run of two tracks of the person (a short clip
    cut in two by the tracker) is measured against the background cohort."""
    sure = identify(torch.tensor([[0.3], [0.35], [0.4]], dtype=torch.float64), ["p"], RULE)
    assert all(row[0].match for row in sure.decisions)
    two = identify(torch.tensor([[0.8], [0.85]], dtype=torch.float64), ["p"], RULE)
    assert all(row[0].match for row in two.decisions)
    assert two.decisions[0][0].cohort_median == pytest.approx(1.2)
    no_background = Rule(**{**RULE.__dict__, "background_tracks": 0})
    alone = identify(torch.tensor([[0.8]], dtype=torch.float64), ["p"], no_background).decisions[0][0]
    assert alone.match and math.isinf(alone.z)


def test_each_track_goes_to_at_most_one_person() -> None:
    """Gallery use: a track is only its nearest person's, and only when clearly nearer than the second."""
    strangers = _crowd(20, 1.2, 0.05, seed=5)
    cols = torch.stack([strangers, strangers.flip(0)], dim=1)
    tracks = torch.tensor([[0.6, 0.95], [0.9, 0.62], [0.7, 0.72]], dtype=torch.float64)
    out = identify(torch.cat([tracks, cols]), ["a", "b"], RULE)
    assert out.of_track(0).person == "a" and out.of_track(1).person == "b"
    assert out.of_track(2) is None  # 0.70 vs 0.72: not clearly either
    assert out.decisions[2][0].reason == "another person is as near"
    for row in out.decisions:
        assert sum(m.match for m in row) <= 1


def test_confidence_orders_the_evidence() -> None:
    """Matches have a confidence of at least 0.5, rejections under it; nearer tracks are surer."""
    strangers = _crowd(30, 1.2, 0.05, seed=6)
    d = torch.cat([torch.tensor([0.55, 0.6, 0.7, 0.9, 1.1], dtype=torch.float64), strangers])[:, None]
    out = identify(d, ["p"], RULE)
    conf = [out.decisions[t][0].confidence for t in range(5)]
    assert conf == sorted(conf, reverse=True)
    for row in out.decisions:
        assert 0.0 <= row[0].confidence <= 1.0
        assert (row[0].confidence >= 0.5) == row[0].match
    numbers = out.decisions[0][0].as_dict()
    assert numbers["match"] is True and set(numbers) >= {"confidence", "distance", "cohort_median", "z", "margin"}
    assert numbers["margin"] is None  # one person: no second to compare with


def test_track_distances_are_per_track_medians() -> None:
    face = torch.tensor([[0.1, 0.9], [0.3, 0.7], [0.2, 0.8], [1.0, 0.0]])
    track = torch.tensor([0, 0, 0, 1])
    out = track_distances(face, track)
    assert out.shape == (2, 2)
    assert out[0].tolist() == pytest.approx([0.2, 0.8]) and out[1].tolist() == pytest.approx([1.0, 0.0])


def test_rule_per_embedder_and_override() -> None:
    assert rule_for("hse") == RULES["hse"] and rule_for("dlib").threshold == 0.6
    assert rule_for("hse", 0.8).threshold == 0.8 and rule_for("hse", 0.5).sure == 0.5
    with pytest.raises(ValueError, match="unknown embedder"):
        rule_for("facenet")
