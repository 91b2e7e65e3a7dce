"""Individuals from tracks: votes, candidate pairs and constrained centroid linkage (must-link, cannot-link, no
chaining through one bad pair, a varied person kept whole, a pair threshold that a short mean cannot pass), and
tracks with no vote taking an individual only when they clearly match one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.cluster import attach_tracks, group_tracks, similar_pairs, track_sums, voting_weights


def _faces(n_people: int, tracks_each: int, faces_each: int, noise: float, seed: int = 0):
    """Unit descriptors of ``n_people`` people, each seen in ``tracks_each`` tracks of ``faces_each`` faces."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_people, 64, generator=gen)
    track_person = torch.arange(n_people).repeat_interleave(tracks_each)
    track = torch.arange(len(track_person)).repeat_interleave(faces_each)
    unit = F.normalize(centres[track_person[track]] + noise * torch.randn(len(track), 64, generator=gen), dim=1)
    return unit, track, track_person


def _group(unit, track, n_tracks, threshold, cannot=(), must=(), quality=None, floor=0.0, pair_threshold=-1.0):
    quality = torch.ones(len(unit)) if quality is None else quality
    votes = voting_weights(track, unit, quality, floor)
    sums, mass = track_sums(track, unit, votes, n_tracks)
    pairs = similar_pairs(sums, mass, floor=min(threshold, pair_threshold) - 0.3)
    return group_tracks(sums, mass, pairs, threshold, cannot, must, pair_threshold)


def test_track_sums_weight_faces() -> None:
    unit = torch.tensor([[1.0, 0], [0, 1], [0, 1]])
    sums, mass = track_sums(torch.tensor([0, 0, 1]), unit, torch.tensor([1.0, 0.5, 0.0]), 3)
    assert torch.equal(sums, torch.tensor([[1.0, 0.5], [0, 0], [0, 0]])) and torch.equal(
        mass, torch.tensor([1.5, 0, 0])
    )


def test_blocked_pairs_equal_full_matrix() -> None:
    unit, track, _ = _faces(5, 8, 3, 0.5)
    sums, mass = track_sums(track, unit, torch.ones(len(unit)), 40)
    small, full = similar_pairs(sums, mass, floor=0.3, block=7), similar_pairs(sums, mass, floor=0.3, block=4096)
    as_dict = lambda p: dict(zip(zip(p.a.tolist(), p.b.tolist(), strict=True), p.cosine.tolist(), strict=True))  # noqa: E731
    got, want = as_dict(small), as_dict(full)
    assert got.keys() == want.keys() and len(want) > 0
    assert max(abs(got[k] - want[k]) for k in want) < 1e-5
    assert all(a < b for a, b in want)


def test_grouping_recovers_people() -> None:
    unit, track, person = _faces(6, 5, 4, 0.6)
    ind = _group(unit, track, 30, threshold=0.5)
    # Same person ⇔ same individual.
    assert torch.equal(ind[:, None] == ind[None, :], person[:, None] == person[None, :])


def test_cannot_link_holds_for_the_whole_group() -> None:
    unit, track, person = _faces(2, 4, 4, 0.6)
    # Tracks 0 and 3 (same person) were seen in one frame: they end apart, and so does nothing else join them both.
    ind = _group(unit, track, 8, threshold=0.5, cannot=[(0, 3)])
    assert ind[0] != ind[3]
    assert len(set(ind[:4].tolist())) == 2 and set(ind[4:].tolist()).isdisjoint(ind[:4].tolist())


def test_must_link_joins_what_the_threshold_would_not() -> None:
    unit, track, person = _faces(3, 2, 4, 0.3)
    apart = _group(unit, track, 6, threshold=0.5)
    assert apart[0] != apart[2]  # two people
    joined = _group(unit, track, 6, threshold=0.5, must=[(0, 2)])
    assert joined[0] == joined[2]
    # A manual merge against a same-frame conflict does not win: they are two people.
    conflicted = _group(unit, track, 6, threshold=0.5, must=[(0, 2)], cannot=[(0, 2)])
    assert conflicted[0] != conflicted[2]


def test_no_chaining_through_one_bad_pair() -> None:
    # Two people A and B, many faces each, far apart; one A track has a single face that happens to look like B's
    # (a look-alike frame). Face-level single linkage would merge A and B through that pair; a linkage over
    # every pair of faces cannot.
    gen = torch.Generator().manual_seed(1)
    a, b = F.normalize(torch.randn(2, 32, generator=gen), dim=1)
    b = F.normalize(b - (b @ a) * a, dim=0)  # orthogonal people
    noise = lambda n: 0.08 * torch.randn(n, 32, generator=gen)  # noqa: E731
    unit = F.normalize(torch.cat([a + noise(6), a + noise(6), b + noise(6)]), dim=1)
    unit[6] = F.normalize(b + 0.01 * torch.randn(32, generator=gen), dim=0)  # one face of track 1 looks like B
    track = torch.arange(3).repeat_interleave(6)
    ind = _group(unit, track, 3, threshold=0.6)
    assert ind[0] == ind[1] and ind[1] != ind[2]


def test_linkage_does_not_chain() -> None:
    # A chain a - b - c where a and c are far apart: single linkage would merge all three.
    a, c = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    b = F.normalize(a + c, dim=0)
    unit = torch.stack([a, b, c])
    ind = _group(unit, torch.arange(3), 3, threshold=0.7)
    assert len(set(ind.tolist())) == 2


def test_low_quality_faces_do_not_vote_and_outliers_are_dropped() -> None:
    unit, track, _ = _faces(2, 2, 5, 0.3)
    quality = torch.ones(len(unit))
    quality[5:10] = 0.1  # every face of track 1 is below the floor
    ind = _group(unit, track, 4, threshold=0.5, quality=quality, floor=0.3)
    assert ind[1] == -1 and ind[0] >= 0
    # One face of another person inside a track of five does not vote.
    unit2 = unit.clone()
    unit2[2] = unit[15]
    votes = voting_weights(track, unit2, torch.ones(len(unit)), 0.0)
    assert votes[2] == 0 and bool((votes[[0, 1, 3, 4]] > 0).all())


def test_a_varied_person_is_kept_whole_and_consistent_people_apart() -> None:
    # Person P seen from two sides (faces 90 degrees apart, mean direction e0) and once more from a third angle, 40
    # degrees off e0: every face pair is only 0.54 apart in cosine, under the threshold, yet the new face points
    # where P's mean points (0.77). Two other people, each seen consistently, are 0.6 apart face to face and mean
    # to mean: they stay apart. (Average linkage over face pairs scores P's new face 0.54 and splits P.)
    e = torch.eye(6)
    c45, s45 = 2**-0.5, 2**-0.5
    c40, s40 = torch.cos(torch.tensor(0.6981)), torch.sin(torch.tensor(0.6981))
    unit = torch.stack([
        c45 * e[0] + s45 * e[1], c45 * e[0] - s45 * e[1],  # track 0: P, front-left and front-right
        c40 * e[0] + s40 * e[2],  # track 1: P again
        e[3], e[3],  # track 2: Q
        0.6 * e[3] + 0.8 * e[4], 0.6 * e[3] + 0.8 * e[4],  # track 3: R
    ])  # fmt: skip
    track = torch.tensor([0, 0, 1, 2, 2, 3, 3])
    ind = _group(unit, track, 4, threshold=0.65)
    assert ind[0] == ind[1] and ind[2] != ind[3] and len(set(ind.tolist())) == 3


def test_the_pair_threshold_stops_a_short_mean_from_joining_what_its_faces_do_not() -> None:
    # Group A: faces spread 90 degrees apart (mean direction e0, mean length 0.71). Track 1: one face 40 degrees off
    # e0 (0.77 to A's mean, 0.54 to each of A's faces on average). With a pair threshold under 0.54 they join, as
    # above; with one over it they stay apart, whatever the means say.
    e = torch.eye(3)
    c45 = 2**-0.5
    c40, s40 = torch.cos(torch.tensor(0.6981)), torch.sin(torch.tensor(0.6981))
    unit = torch.stack([c45 * e[0] + c45 * e[1], c45 * e[0] - c45 * e[1], c40 * e[0] + s40 * e[2]])
    track = torch.tensor([0, 0, 1])
    joined = _group(unit, track, 2, threshold=0.65, pair_threshold=0.5)
    apart = _group(unit, track, 2, threshold=0.65, pair_threshold=0.6)
    assert joined[0] == joined[1] and apart[0] != apart[1]


def test_pairs_carry_the_cosine_of_the_means() -> None:
    unit = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    sums, mass = track_sums(torch.tensor([0, 0, 1]), unit, torch.ones(3), 2)
    pairs = similar_pairs(sums, mass, floor=0.0)
    # Faces' mean pairwise cosine (0.6 + 0.8) / 2 = 0.7 reaches the floor; the means' cosine is 1.4 / sqrt(2).
    assert pairs.a.tolist() == [0] and pairs.b.tolist() == [1]
    assert abs(float(pairs.cosine[0]) - 1.4 / 2**0.5) < 1e-6


def _attach(unit, track, n_tracks, quality, cannot=(), threshold=0.5, pair_threshold=0.3, margin=0.05, block=2**24):
    """Group on the faces over the floor (0.5), then attach the tracks with no vote; (before, after)."""
    votes = voting_weights(track, unit, quality, 0.5)
    sums, mass = track_sums(track, unit, votes, n_tracks)
    pairs = similar_pairs(sums, mass, floor=0.0)
    before = group_tracks(sums, mass, pairs, threshold, cannot, (), pair_threshold)
    face_sums, count = track_sums(track, unit, torch.ones(len(unit)), n_tracks)
    after = attach_tracks(before, sums, mass, face_sums, count, threshold, pair_threshold, cannot, margin, block)
    return before, after


def test_tracks_with_no_vote_take_the_individual_they_clearly_match() -> None:
    unit, track, person = _faces(3, 3, 4, 0.6, seed=3)
    quality = torch.ones(len(unit))
    quality[track % 3 == 2] = 0.1  # the third track of each person has no face over the floor
    before, after = _attach(unit, track, 9, quality)
    assert bool((before[2::3] == -1).all()) and bool((before[::3] >= 0).all())
    # Each takes its person's individual; the individuals themselves are those the good faces made.
    assert torch.equal(after[:, None] == after[None, :], person[:, None] == person[None, :])
    assert torch.equal(after[before >= 0], before[before >= 0])
    # Row blocks of one track at a time (3 individuals, 3 similarities per block) give the same answer.
    assert torch.equal(_attach(unit, track, 9, quality, block=3)[1], after)


def test_a_track_between_two_individuals_or_far_from_all_stays_without_one() -> None:
    e = torch.eye(4)
    c45 = 2**-0.5
    unit = torch.stack([
        e[0], e[0],  # track 0: P (votes)
        e[1], e[1],  # track 1: Q (votes)
        c45 * e[0] + c45 * e[1],  # track 2, no vote: as close to P as to Q
        e[2],  # track 3, no vote: nobody
        0.95 * e[0] + 0.31 * e[2],  # track 4, no vote: clearly P
    ])  # fmt: skip
    track = torch.tensor([0, 0, 1, 1, 2, 3, 4])
    quality = torch.tensor([1.0, 1, 1, 1, 0, 0, 0])
    before, after = _attach(unit, track, 5, quality, threshold=0.6, pair_threshold=0.6)
    assert before.tolist() == [0, 1, -1, -1, -1]
    assert after.tolist() == [0, 1, -1, -1, 0]
    # With no margin asked, the tie still does not link P and Q: a track with no vote joins one individual at most.
    _, tie = _attach(unit, track, 5, quality, threshold=0.6, pair_threshold=0.6, margin=0.0)
    assert tie[0] != tie[1]


def test_attaching_respects_cannot_links_with_members_and_with_tracks_attached_before() -> None:
    e = torch.eye(3)
    unit = torch.stack([e[0], e[0], 0.99 * e[0] + 0.14 * e[1], 0.97 * e[0] + 0.24 * e[1], e[2]])
    track = torch.tensor([0, 0, 1, 2, 3])
    quality = torch.tensor([1.0, 1, 0, 0, 1])
    # Tracks 1 and 2 (no vote) both look like track 0's person, but were seen in one frame.
    _, after = _attach(unit, track, 4, quality, cannot=[(1, 2)])
    assert after[:3].tolist() == [0, 0, -1]  # the closer one takes the individual, the other stays apart
    _, member = _attach(unit, track, 4, quality, cannot=[(0, 1)])
    assert member[1] == -1 and member[2] == 0  # track 1 was seen beside a member of that individual
