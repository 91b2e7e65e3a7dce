"""The identity benchmark's scorer on a hand-made example whose figures were worked out by hand."""

import pytest

from benchmarks.identity.score import clusters_per_person, score, scored_pairs

# Persons A (faces 1-3), B (4, 5), C (8, 9); face 6 is unknown, 7 a false detection.
LABELS = {"1": "A", "2": "A", "3": "A", "4": "B", "5": "B", "6": "unknown", "7": "no_face", "8": "C", "9": "C"}
# Clusters: x = {1, 2, 4}, y = {3}, z = {5, 6, 7}, w = {8, 9}.
CLUSTERING = {"1": "x", "2": "x", "4": "x", "3": "y", "5": "z", "6": "z", "7": "z", "8": "w", "9": "w"}


def test_hand_computed_example() -> None:
    s = score(LABELS, CLUSTERING)
    assert (s.faces, s.persons, s.clusters) == (7, 3, 4)  # faces 6 and 7 are not scored
    # purity: x counts A (2), y A (1), z B (1), w C (2) -> 6 / 7
    assert s.purity == pytest.approx(6 / 7)
    # A in {x, y}, B in {x, z}, C in {w} -> (2 + 2 + 1) / 3
    assert s.clusters_per_person == pytest.approx(5 / 3)
    # precision per face: 1, 2: 2/3; 4: 1/3; 3, 5, 8, 9: 1 -> (17/3) / 7
    assert s.precision == pytest.approx(17 / 21)
    # recall per face: 1, 2: 2/3; 3: 1/3; 4, 5: 1/2; 8, 9: 1 -> (14/3) / 7
    assert s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(68 / 93)  # 2PR / (P + R)


def test_perfect_and_all_in_one() -> None:
    truth = {k: v for k, v in LABELS.items()}
    perfect = score(LABELS, truth)
    assert (perfect.purity, perfect.precision, perfect.recall, perfect.f1, perfect.clusters_per_person) == (
        1.0, 1.0, 1.0, 1.0, 1.0,
    )  # fmt: skip
    one = score(LABELS, dict.fromkeys(LABELS, 0))
    assert one.recall == 1.0
    assert one.purity == pytest.approx(3 / 7)
    assert one.precision == pytest.approx((3 * 3 / 7 + 2 * 2 / 7 + 2 * 2 / 7) / 7)  # 17/49


def test_clusters_90_ignores_one_stray_face() -> None:
    pairs = [("A", "x")] * 9 + [("A", "y")]
    assert clusters_per_person(pairs) == 2
    assert clusters_per_person(pairs, 0.9) == 1
    assert clusters_per_person([("A", "x")] * 8 + [("A", "y")] * 2, 0.9) == 2


def test_noise_is_singletons_and_views_can_be_dropped() -> None:
    pairs = scored_pairs({"1": "A", "2": "A", "3": "A"}, {"1": -1, "2": -1, "3": None})
    assert len({c for _, c in pairs}) == 3  # three noise faces are three clusters, not one
    # ... but they do not split their person: clusters per person counts the clusters faces are assigned to.
    s = score({"1": "A", "2": "A", "3": "A"}, {"1": 0, "2": ("none", 2), "3": -1})
    assert (s.clusters_per_person, s.assigned, s.clusters) == (1.0, pytest.approx(1 / 3), 1)
    s = score({"1": "A", "2": "A", "3": "B"}, {"1": 0, "2": 0, "3": 0}, {"3": "partial"}, ["partial"])
    assert (s.faces, s.purity) == (2, 1.0)


def test_false_detections_cost_only_the_group_they_join() -> None:
    labels = {"1": "A", "2": "A", "3": "no_face", "4": "no_face"}
    alone = score(labels, {"1": 0, "2": 0, "3": None, "4": -1}, false_detections=True)
    joined = score(labels, {"1": 0, "2": 0, "3": 0, "4": None}, false_detections=True)
    assert (alone.purity, alone.f1) == (1.0, 1.0)
    assert joined.purity == 0.75 and joined.precision < 1.0
    assert score(labels, {"1": 0, "2": 0, "3": 0, "4": None}).purity == 1.0  # not scored by default


def test_best_peer_meeting_the_targets_leaves_out_peers_that_miss_them() -> None:
    from benchmarks.identity.bench import best_peer_meeting_targets
    from benchmarks.identity.score import Scores

    def s(purity: float, per_person: float, f1: float) -> Scores:
        return Scores(10, 3, 3, purity, per_person, per_person, f1, f1, f1)

    scores = {"engine individuals": s(1.0, 1.0, 0.90), "cw 0.4": s(0.93, 1.0, 0.97), "cw 0.35": s(1.0, 1.5, 0.95),
              "dbscan": s(0.96, 1.2, 0.88)}  # fmt: skip
    assert best_peer_meeting_targets(scores) == pytest.approx(0.88)  # the other two miss purity or splits
    assert best_peer_meeting_targets({"engine individuals": s(1.0, 1.0, 0.9), "cw": s(0.5, 3.0, 0.99)}) is None
