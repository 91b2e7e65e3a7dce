"""The challenge-wide grouping on stored faces: constraints from frames and from the TOML, votes by quality, tracks
with no vote attached, and a database made by an older version brought up to the current tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.config import ClusterSettings, ManualMerge
from engine.faces.quality import vote_floors
from engine.pipeline.individuals import frame_conflicts, group_individuals
from engine.store import Database
from engine.types import StoredFaces


def _stored(
    people: list[int], video: list[int], track: list[int], frame: list[int], quality=None, boxes=None, magnitude=None
):
    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(4, 64, generator=gen), dim=1)
    emb = F.normalize(centres[torch.tensor(people)] + 0.05 * torch.randn(len(people), 64, generator=gen), dim=1)
    n = len(people)
    default_boxes = torch.tensor([[100.0 * i, 0, 100.0 * i + 50, 50] for i in range(n)])
    return StoredFaces(
        face_id=torch.arange(n), video=torch.tensor(video), track=torch.tensor(track), frame_index=torch.tensor(frame),
        boxes=default_boxes if boxes is None else boxes, embedding=emb, phash=torch.arange(n) * 0x1111111,
        has_phash=torch.ones(n, dtype=torch.bool), quality=torch.ones(n) if quality is None else quality,
        magnitude=torch.full((n,), float("nan")) if magnitude is None else magnitude,
        videos=["a" * 64, "b" * 64], names=["a.mp4", "b.mp4"],
    )  # fmt: skip


def test_one_person_across_and_within_videos_and_keep_apart() -> None:
    # Person 0 in video a (tracks 0 and 2, at different times) and video b (track 0); person 1 in video a track 1.
    people, video = [0, 0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1]
    faces = _stored(people, video, [0, 0, 1, 1, 2, 2, 0, 0], [0, 1, 0, 1, 5, 6, 0, 1])
    ind = group_individuals(faces, ClusterSettings(), "hse")
    assert ind.count == 2
    assert ind.of_face[0] == ind.of_face[4] == ind.of_face[6] != ind.of_face[2]
    # keep_apart: track 2 of a.mp4 stays away from track 0 of a.mp4 (and from b's, grouped with it).
    apart = ClusterSettings(keep_apart=(ManualMerge("a.mp4", 0, "a.mp4", 2),))
    ind2 = group_individuals(faces, apart, "hse")
    assert ind2.of_face[0] != ind2.of_face[4]


def test_manual_merge_and_quality_votes() -> None:
    faces = _stored([0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 1], quality=torch.tensor([1.0, 1, 0.01, 0.01]))
    ind = group_individuals(faces, ClusterSettings(), "hse")
    # Video b's track has no face good enough to vote: no individual, and not a unique face.
    assert ind.of_face.tolist()[2:] == [-1, -1] and bool(ind.duplicate[2:].all())
    assert ind.voted.tolist() == [True, True, False, False]
    merged = ClusterSettings(min_quality=0.0, manual_merges=(ManualMerge("a.mp4", 0, "bbbbbbbb", 0),))
    assert group_individuals(faces, merged, "hse").count == 1


def test_faces_the_embedder_reads_confidently_vote_whatever_their_quality() -> None:
    # Video b's track (person 1) has only faces at quality 0.05, under the floor (0.10).
    q = torch.tensor([1.0, 1, 0.05, 0.05])

    def grouped(magnitude: list[float], embedder: str = "hse", **settings: float) -> list[int]:
        faces = _stored([0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 1], q, magnitude=torch.tensor(magnitude))
        return group_individuals(faces, ClusterSettings(**settings), embedder).of_face.tolist()

    read_well, unread = [12.0, 12, 10, 9], [12.0, 12, 3, 7]  # hse's confident magnitude: 8
    assert grouped(read_well)[2:] == [1, 1]  # read well: they vote and form an individual of their own
    assert grouped(unread)[2:] == [-1, -1]  # not read well: no vote, and no individual
    assert grouped([12.0, 12, float("nan"), float("nan")])[2:] == [-1, -1]  # stored before magnitudes: floor 0.10
    assert grouped(read_well, "dlib")[2:] == [-1, -1]  # dlib's magnitude says nothing
    assert grouped(read_well, confident_magnitude=11.0)[2:] == [-1, -1]  # the TOML can ask for more
    assert grouped(read_well, min_quality=0.2)[2:] == [1, 1]  # the floor is for the faces it does not read well
    assert grouped(unread, min_quality=0.05)[2:] == [1, 1]  # which a lower floor lets vote
    q[2:] = 0.0
    assert grouped(read_well)[2:] == [-1, -1]  # quality exactly 0 weighs nothing: no vote, however well read
    # Under the unreadable magnitude (hse: 5) a face never votes, whatever its quality (0 in the TOML turns it off).
    q[2:] = 0.9
    assert grouped([12.0, 12, 4, 4.5])[2:] == [-1, -1]
    assert grouped([12.0, 12, 4, 4.5], unreadable_magnitude=0.0)[2:] == [1, 1]


def test_vote_floors() -> None:
    mag = torch.tensor([9.0, 7.9, float("nan")])
    assert vote_floors(mag, 0.10, 8.0).tolist() == pytest.approx([0.0, 0.10, 0.10])
    assert vote_floors(mag, 0.10, None).tolist() == pytest.approx([0.10] * 3)
    assert vote_floors(mag, 0.10, 8.0, 8.5).tolist() == pytest.approx([0.0, float("inf"), 0.10])


def test_a_track_with_no_vote_takes_the_individual_its_faces_match_unless_kept_apart() -> None:
    # Video b's track is person 0 again, every face under the floor: it is attached to person 0 without voting.
    faces = _stored([0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 0, 0], [0, 1, 0, 1, 0, 1],
                    quality=torch.tensor([1.0, 1, 1, 1, 0.01, 0.01]))  # fmt: skip
    ind = group_individuals(faces, ClusterSettings(), "hse")
    assert ind.count == 2 and ind.of_face[4] == ind.of_face[5] == ind.of_face[0] != ind.of_face[2]
    assert ind.voted.tolist() == [True, True, True, True, False, False]
    # A keep_apart with a track of that individual leaves it alone (person 1 is far from it).
    apart = ClusterSettings(keep_apart=(ManualMerge("a.mp4", 0, "b.mp4", 0),))
    assert group_individuals(faces, apart, "hse").of_face.tolist()[4:] == [-1, -1]
    # Faces the embedder cannot read (magnitude under its unreadable one) attach nothing: their descriptor, however
    # near person 0's, says nothing of who it is. One readable face is enough, and alone decides.
    dark = torch.tensor([12.0, 12, 12, 12, 3, 3])
    faces.magnitude = dark
    assert group_individuals(faces, ClusterSettings(), "hse").of_face.tolist()[4:] == [-1, -1]
    faces.magnitude = torch.tensor([12.0, 12, 12, 12, 3, 6])
    assert group_individuals(faces, ClusterSettings(), "hse").of_face.tolist()[4:] == [int(ind.of_face[0])] * 2


def test_two_boxes_on_one_head_are_not_two_people() -> None:
    faces = _stored([0, 0, 0], [0, 0, 0], [0, 1, 2], [0, 0, 0])
    faces.boxes = torch.tensor([[0.0, 0, 100, 100], [10, 10, 60, 60], [300, 0, 400, 100]])
    # Tracks 0 and 1 overlap (one head found twice); track 2 is elsewhere in the frame: another person.
    assert frame_conflicts(faces, faces.track) == {(0, 2), (1, 2)}


def test_older_database_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = Database(f"sqlite:///{path}").connect()
    db.dispose()
    con = sqlite3.connect(path)
    # A database from before the versioned migrations (no alembic_version, nor the columns of the revisions after
    # 0001), so revision 0001 upgrades it in place as upgrade_older_schema did.
    con.execute("DROP TABLE alembic_version")
    for column in ("host", "pid", "message"):
        con.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    con.execute("ALTER TABLE faces DROP COLUMN quality")
    con.execute("ALTER TABLE faces DROP COLUMN magnitude")  # revision 0003's
    con.execute("DROP TABLE faces_with_final_ind")
    con.execute(
        "CREATE TABLE faces_with_final_ind (face_id INTEGER PRIMARY KEY, video_sha256 VARCHAR(64), "
        "track INTEGER, individual INTEGER NOT NULL)"
    )
    con.commit()
    con.close()
    Database(f"sqlite:///{path}").connect().dispose()
    con = sqlite3.connect(path)
    faces_columns = {r[1] for r in con.execute("PRAGMA table_info(faces)")}
    final = {r[1]: r[3] for r in con.execute("PRAGMA table_info(faces_with_final_ind)")}  # name: notnull
    assert "quality" in faces_columns and "magnitude" in faces_columns
    assert final["individual"] == 0 and "voted" in final
