"""Tracks inside a video: the seed's one-face rule, Hungarian association with a gate, manual breaks."""

from __future__ import annotations

import torch

from engine.track import split_track, track_faces


def _box(x: float, y: float, s: float = 50) -> list[float]:
    return [x, y, x + s, y + s]


def test_one_face_per_frame_is_one_track_even_if_it_jumps() -> None:
    idx = torch.tensor([0, 1, 2, 5])
    boxes = torch.tensor([_box(0, 0), _box(500, 400), _box(10, 10), _box(300, 0)])
    assert track_faces(idx, boxes).tolist() == [0, 0, 0, 0]


def test_two_people_crossing_slowly_keep_their_tracks() -> None:
    idx, boxes = [], []
    for k in range(8):  # A moves right 20 px per frame, B stays; B listed first in some frames
        pair = [_box(100 + 20 * k, 100), _box(400, 120)]
        if k % 2:
            pair.reverse()
        idx += [k, k]
        boxes += pair
    tracks = track_faces(torch.tensor(idx), torch.tensor(boxes))
    a = [tracks[2 * k + (k % 2)].item() for k in range(8)]
    b = [tracks[2 * k + 1 - (k % 2)].item() for k in range(8)]
    assert len(set(a)) == 1 and len(set(b)) == 1 and a[0] != b[0]


def test_far_face_starts_a_new_track_and_gaps_are_bridged() -> None:
    idx = torch.tensor([0, 0, 1, 3, 3, 10])
    boxes = torch.tensor([_box(0, 0), _box(600, 0), _box(5, 0), _box(8, 0), _box(300, 300), _box(10, 0)])
    tracks = track_faces(idx, boxes).tolist()
    assert tracks[0] == tracks[2] == tracks[3]  # gap of 2 sampled frames bridged
    assert tracks[1] != tracks[0] and tracks[4] not in (tracks[0], tracks[1])  # gate: far face → new track
    assert tracks[5] not in tracks[:5]  # after a long gap a new track starts


def test_manual_break_splits_at_time() -> None:
    tracks = torch.tensor([0, 0, 1, 0, 1])
    times = torch.tensor([0.0, 0.5, 0.5, 1.0, 1.0])
    assert split_track(tracks, times, 0, 0.75).tolist() == [0, 0, 1, 2, 1]
    assert split_track(tracks, times, 7, 0.0).tolist() == tracks.tolist()
