"""Individuals across videos: sparse similarities and constrained average-linkage grouping."""

from __future__ import annotations

import torch

from engine.cluster import group_tracks, similar_pairs, track_means


def _people(n_people: int, tracks_each: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_people, 128, generator=gen)
    person = torch.arange(n_people).repeat_interleave(tracks_each)
    means = centres[person] + noise * torch.randn(len(person), 128, generator=gen)
    return means, person


def test_track_means() -> None:
    emb = torch.tensor([[1.0, 0], [3, 0], [0, 2]])
    assert torch.equal(track_means(torch.tensor([0, 0, 1]), emb, 3), torch.tensor([[2.0, 0], [0, 2], [0, 0]]))


def test_blocked_pairs_equal_full_matrix() -> None:
    means, _ = _people(5, 8, 0.5)
    video = torch.arange(len(means)) % 7
    small = similar_pairs(means, video, floor=0.5, block=7)
    full = similar_pairs(means, video, floor=0.5, block=4096)
    as_dict = lambda p: dict(zip(zip(p.a.tolist(), p.b.tolist(), strict=True), p.cosine.tolist(), strict=True))  # noqa: E731
    got, want = as_dict(small), as_dict(full)
    assert got.keys() == want.keys() and len(want) > 0
    assert max(abs(got[k] - want[k]) for k in want) < 1e-5
    assert all(video[a] != video[b] and a < b for a, b in want)


def test_grouping_recovers_people_and_respects_cannot_link() -> None:
    means, person = _people(6, 5, 0.3)
    video = torch.arange(len(means))  # every track in its own video
    pairs = similar_pairs(means, video, floor=0.5)
    ind = group_tracks(len(means), pairs, threshold=0.8, floor=0.5)
    # Same person ⇔ same individual.
    assert torch.equal(ind[:, None] == ind[None, :], person[:, None] == person[None, :])
    # Tracks 0 and 1 (same person) seen together in one frame must stay apart.
    ind2 = group_tracks(len(means), pairs, threshold=0.8, floor=0.5, cannot_link=[(0, 1)])
    assert ind2[0] != ind2[1]


def test_average_linkage_does_not_chain() -> None:
    # A chain a - b - c where a and c are far apart: single linkage would merge all three.
    a = torch.tensor([1.0, 0.0])
    c = torch.tensor([0.0, 1.0])
    b = torch.nn.functional.normalize(a + c, dim=0)
    means = torch.stack([a, b, c])
    pairs = similar_pairs(means, torch.arange(3), floor=0.0)
    ind = group_tracks(3, pairs, threshold=0.7, floor=0.0)
    assert len(set(ind.tolist())) == 2
