"""The HTML report on a small database filled by hand: faces in no individual, faces that did not vote, contact
sheets in quality order, the pairs the grouping was least sure about and the TOML that fixes them."""

from __future__ import annotations

import base64
import csv
import re
from pathlib import Path

import pytest

from engine.config import ClusterSettings
from engine.faces.embedders import embedder_spec
from engine.store import Database
from engine.store.schema import Face, FaceFinalInd, FaceIntraInd, Frame, Run, Similarity, UniqueFace, Video
from engine.tools.export import export_dataset
from engine.tools.report import grouping_of, write_report
from engine.tools.report_pairs import toml_string, video_refs
from engine.tools.report_sheets import ATTACHED_LABEL, DUPLICATE_CAPTION, NON_VOTING_LABEL

A, B = "a" * 64, "b" * 64
#: (video, track, individual, voted, quality, time): one face each; face ids count from 1 in this order.
FACES = [
    (A, 0, 0, True, 0.5, 1.0),
    (A, 0, 0, True, 0.9, 2.0),
    (A, 0, 0, False, 0.2, 3.0),  # did not vote
    (A, 0, 0, True, 0.7, 4.0),
    (B, 1, 0, True, 0.8, 1.0),
    (A, 1, 1, True, 0.6, 5.0),
    (B, 2, None, False, 0.1, 2.0),  # no individual
    (B, 2, None, False, 0.05, 2.5),
    (B, 3, 2, True, None, 4.0),  # stored before quality was measured
    (B, 4, 1, False, 0.05, 3.0),  # a track with no vote, attached to person 1
]
SIMILARITIES = [(A, 0, B, 1, 0.41), (A, 1, B, 3, 0.53), (A, 0, A, 1, 0.32), (B, 1, A, 1, 0.31), (A, 1, B, 2, 0.9)]


class DictStore:
    """An object store holding each crop as its own key's bytes."""

    def get_bytes(self, key: str) -> bytes:
        if key == "missing":
            raise FileNotFoundError(key)
        return key.encode()


def _video(sha: str, name: str) -> Video:
    return Video(
        sha256=sha, challenge="c", source_uri=name, file_name=name, object_key=f"videos/{sha}.mp4", size_bytes=1,
        width=640, height=360, video_start_s=0.0, video_end_s=6.0, duration_s=6.0, has_audio=True,
        sample_interval_s=0.5,
    )  # fmt: skip


@pytest.fixture
def db() -> Database:
    database = Database("sqlite://").connect()
    with database.session() as s:
        s.add(Run(challenge="c", runtype="test", device="cpu", source="-", settings={"embedder": "hse"}, status="ok"))
        s.add_all([_video(A, "a.mp4"), _video(B, "b.mp4")])
        s.flush()
        for i, (video, track, ind, voted, quality, t) in enumerate(FACES, start=1):
            s.add(Frame(id=i, video_sha256=video, frame_index=i, target_s=t, pts_s=t, width=640, height=360))
            s.flush()
            s.add(
                Face(id=i, frame_id=i, video_sha256=video, face_index=0, pts_s=t, x1=0, y1=0, x2=10, y2=10, score=0.9,
                     landmarks=[0] * 10, crop_key=f"face-{i}", quality=quality, embedder="hse")
            )  # fmt: skip
            s.flush()
            s.add(FaceIntraInd(face_id=i, video_sha256=video, track=track))
            s.add(FaceFinalInd(face_id=i, video_sha256=video, track=track, individual=ind, voted=voted))
            if ind is not None:
                s.add(UniqueFace(face_id=i, video_sha256=video, individual=ind, phash=f"{i:016x}"))
        for va, ta, vb, tb, c in SIMILARITIES:
            s.add(Similarity(video_a=va, track_a=ta, video_b=vb, track_b=tb, cosine=c))
    return database


def _crops(fragment: str) -> list[str]:
    """The crop keys of the thumbnails in an HTML fragment, in order."""
    return [base64.b64decode(m).decode() for m in re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", fragment)]


def _between(page: str, start: str, end: str) -> str:
    at = page.index(start)
    return page[at : page.index(end, at + len(start))]


def test_report_sections_order_and_fixes(db: Database, tmp_path: Path) -> None:
    cluster = ClusterSettings(threshold=0.55)
    page = write_report(db, DictStore(), "c", tmp_path / "r.html", log=lambda _: None, cluster=cluster).read_text()
    assert "Embedder <b>hse</b>" in page and "grouping threshold <b>0.550</b>" in page
    assert "How to fix a wrong individual" in page
    # Person 0: voters best first, the face that did not vote on its own strip.
    sheet = _between(page, 'id="person-0"', "tracks:")
    main, strip = sheet.split(NON_VOTING_LABEL)
    assert _crops(main) == ["face-2", "face-5", "face-4", "face-1"]
    assert _crops(strip) == ["face-3"]
    assert ATTACHED_LABEL not in _between(page, 'id="person-0"', "</div></div>")  # its tracks all voted
    # Person 1's attached track: on its strip, and named under the sheet apart from the tracks that voted.
    sheet1 = _between(page, 'id="person-1"', "</div></div>")
    assert _crops(sheet1.split(NON_VOTING_LABEL)[1]) == ["face-10"]
    assert f"{ATTACHED_LABEL}: b.mp4 track 4" in sheet1
    # Faces in no individual: apart, never on a person's sheet, grey on the timeline.
    alone = _between(page, "<h2>Faces with no individual</h2>", "<h2")
    assert _crops(alone) == ["face-7"]  # the best face of its one track
    assert all("face-7" not in _crops(_between(page, f'id="person-{i}"', "tracks:")) for i in range(3))
    assert "no individual</text>" in page and 'stroke="#9e9e9e"' in page
    # Near misses, most similar first, each with its manual merge: one per pair of individuals (b.mp4 track 1 -
    # a.mp4 track 1 is person 0 - person 1 again, less similar), none with a track in no individual.
    near = _between(page, "Closest tracks left apart", "Least similar tracks")
    merges = re.findall(r'\{ video_a = ".*? \},', near)
    assert merges == [
        '{ video_a = "a.mp4", track_a = 1, video_b = "b.mp4", track_b = 3 },',
        '{ video_a = "a.mp4", track_a = 0, video_b = "a.mp4", track_b = 1 },',
    ]
    assert "similarity 0.530 vs threshold 0.550 (-0.020)" in near and "b.mp4 track 2" not in near
    # Weak links: the one pair inside person 0, with a break entry for each track and its time span.
    weak = _between(page, "Least similar tracks grouped together", "<h2>Prompts")
    assert "both person 0" in weak and "similarity 0.410" in weak
    assert '{ video = "a.mp4", track = 0, at_s = S },  # S: the second where the face changes, within 1.0-4.0' in weak
    assert 'b.mp4", track = 1' not in weak  # seen once: nothing to split
    assert 'keep_apart = [\n  { video_a = "a.mp4", track_a = 0, video_b = "b.mp4", track_b = 1 },' in weak


def test_sheet_heading_gives_the_best_voting_quality(db: Database, tmp_path: Path) -> None:
    """Each sheet's heading gives the quality of its best *voting* face (a better face that did not vote does not
    count); an individual whose faces have no measured quality says nothing about it."""
    with db.session() as s:
        s.get(Face, 3).quality = 0.99  # person 0's face that did not vote
    page = write_report(db, DictStore(), "c", tmp_path / "r.html", log=lambda _: None).read_text()
    head = {i: _between(page, f'id="person-{i}"', '<div class="sheet">') for i in range(3)}
    assert "best quality first (0.90)" in head[0]
    assert "best quality first (0.60)" in head[1]  # face 6 voted; face 10 (attached, 0.05) did not
    assert head[2].endswith("best quality first")  # stored before quality was measured: no number


def test_a_sheet_whose_voting_faces_are_all_duplicates_still_shows_its_best(db: Database, tmp_path: Path) -> None:
    """Person 1's only voting face (6) was removed as a near-duplicate of a face that did not vote: the sheet shows
    it anyway, captioned, instead of an empty strip over the faces that did not vote."""
    with db.session() as s:
        s.delete(s.get(UniqueFace, 6))
    page = write_report(db, DictStore(), "c", tmp_path / "r.html", log=lambda _: None).read_text()
    sheet = _between(page, 'id="person-1"', "</div>")
    assert _crops(sheet) == ["face-6"] and DUPLICATE_CAPTION in sheet
    assert DUPLICATE_CAPTION not in _between(page, 'id="person-0"', "</div>")  # its voting faces are unique


def test_thumbnail_titles_give_quality_and_magnitude(db: Database, tmp_path: Path) -> None:
    with db.session() as s:
        s.get(Face, 2).magnitude = 11.46
    page = write_report(db, DictStore(), "c", tmp_path / "r.html", log=lambda _: None).read_text()
    assert "quality 0.90 · magnitude 11.5" in page  # why a face voted: its quality, and how well it was read
    assert 'quality 0.70"' in page  # no magnitude stored (an older run): the quality alone


def test_threshold_sources(db: Database, tmp_path: Path) -> None:
    run = db.last_run("c")
    assert grouping_of(run, ClusterSettings(threshold=0.6)) == ("hse", 0.6, "the challenge's [clustering] threshold")
    hse = embedder_spec("hse").group_similarity
    assert grouping_of(run, ClusterSettings())[1:] == (hse, "the embedder's default")
    assert grouping_of(run, None)[1] == hse
    assert grouping_of({"settings": {"embedder": "hse", "grouping": {"threshold": 0.5}}}, None)[1] == 0.5
    assert grouping_of({"settings": {}}, None)[:2] == (
        "dlib",
        embedder_spec("dlib").group_similarity,
    )  # runs from before the embedder was recorded
    page = write_report(db, DictStore(), "c", tmp_path / "r.html", log=lambda _: None, cluster=ClusterSettings(0.5))
    near = _between(page.read_text(), "Closest tracks left apart", "Least similar tracks")
    assert "similarity 0.530 vs threshold 0.500 (+0.030)" in near


def test_missing_crop_and_names(db: Database, tmp_path: Path) -> None:
    with db.session() as s:
        s.get(Face, 2).crop_key = "missing"
    notes: list[str] = []
    page = write_report(db, DictStore(), "c", tmp_path / "r.html", log=notes.append).read_text()
    assert "the challenge&#x27;s [clustering] table was not read" in page
    assert _crops(_between(page, 'id="person-0"', NON_VOTING_LABEL)) == ["face-5", "face-4", "face-1"]
    assert any("missing" in n for n in notes)
    refs = video_refs([{"sha256": A, "file_name": "x.mp4"}, {"sha256": B, "file_name": "x.mp4"}])
    assert refs == {A: A[:12], B: B[:12]}
    assert toml_string('say "hi"\\\n') == '"say \\"hi\\"\\\\\\u000a"'


def test_export_keeps_faces_with_an_individual(db: Database, tmp_path: Path) -> None:
    summary = export_dataset(db, DictStore(), "c", tmp_path / "ds", log=lambda _: None)
    assert summary.faces == 8 and summary.missing_crops == 0
    with (tmp_path / "ds" / "labels.csv").open(newline="") as fh:
        individuals = [row["individual"] for row in csv.DictReader(fh)]
    assert sorted(individuals) == ["0", "0", "0", "0", "0", "1", "1", "2"]  # faces in no individual are not exported
