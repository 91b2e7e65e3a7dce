"""The identity challenges' mapping math, without any video: participant box and time to the source and back, the
cut into parts on the engine's sample grid, and one-to-one IoU matching."""

import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from benchmarks.identity.challenges import (
    Participant,
    assign_parts,
    cross_video_pairs,
    fit,
    iou,
    match_boxes,
    nearest_time,
    part_starts,
)
from benchmarks.make_corpus import SWS_FLAGS, _picture_filter


def test_fit_landscape_is_full_width_and_centred() -> None:
    p = fit(1280, 720)  # friends_poker
    assert (p.width, p.height, p.ox, p.oy) == (720, 405, 0, 437)
    assert p.sx == p.sy == pytest.approx(0.5625)
    q = fit(708, 532)  # talk_show_guests: the rounded height gives a slightly different sy, recorded exactly
    assert (q.width, q.height, q.ox, q.oy) == (720, 541, 0, 369)
    assert q.sy == 541 / 532
    r = fit(360, 1600)  # a picture narrower than 9:16: full height instead, centred across
    assert (r.width, r.height, r.ox, r.oy) == (288, 1280, 216, 0)


def test_box_round_trip() -> None:
    p = fit(1280, 720)
    box = (380.0, 147.9, 484.7, 286.5)
    there = p.to_participant(box)
    assert there == pytest.approx((213.75, 437 + 147.9 * 0.5625, 272.64375, 437 + 286.5 * 0.5625))
    assert p.to_source(there) == pytest.approx(box)
    assert p.to_source((0, 437, 720, 437 + 405)) == pytest.approx((0, 0, 1280, 720))  # the picture's edges


def test_participant_time_round_trip() -> None:
    fps = Fraction(24000, 1001)
    src = [1.704 + (217 + i) * 1001 / 24000 for i in range(204)]
    part = Participant("clip_p02.mp4", 217, src, fps.numerator, fps.denominator, fit(1280, 720), 18)
    assert part.first_pts == src[0]
    assert part.source_time(0.0) == src[0]
    for i in (1, 12, 203):
        t = i * 1001 / 24000
        assert part.frame_at(t) == i
        assert part.frame_at(t + 0.4 / 24) == i  # a stored pts off by less than half a frame still finds it
        assert part.source_time(t) == src[i]
        assert part.time_of_source(src[i]) == pytest.approx(t)
    assert part.source_time(204 * 1001 / 24000) is None  # past its last frame
    assert part.time_of_source(1.0) is None
    assert Participant.from_json(part.to_json()) == part


def test_parts_start_on_the_sample_grid() -> None:
    starts = part_starts(1.704, 28.064, 3)  # 53 samples -> 18, 17, 18
    assert starts == pytest.approx([1.704 + 9.0, 1.704 + 17.5])
    with pytest.raises(ValueError):
        part_starts(0.0, 0.9, 3)  # two samples cannot make three parts
    pts = [1.704 + i * 1001 / 24000 for i in range(632)]
    first = [pts[216], pts[420]]  # the frames the engine samples at those targets
    parts = assign_parts(pts, first)
    assert parts.count(0) == 216 and parts.count(1) == 204 and parts.count(2) == 212
    assert parts.index(1) == 216 and parts.index(2) == 420
    # chunked, carrying the last frame's part, gives the same answer
    chunked: list[int] = []
    for lo in range(0, len(pts), 16):
        chunked += assign_parts(pts[lo : lo + 16], first, chunked[-1] if chunked else 0)
    assert chunked == parts


def test_iou_and_one_to_one_matching() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    labelled = [("a", (0, 0, 10, 10)), ("b", (1, 0, 11, 10)), ("c", (100, 100, 110, 110))]
    stored = [(1, (0.5, 0, 10.5, 10)), (2, (1, 0, 11, 10)), (3, (50, 50, 60, 60))]
    got = match_boxes(stored, labelled)
    # stored 2 is exactly b (IoU 1), so stored 1 gets a although it overlaps b as much; stored 3 matches nothing
    assert {k: v[0] for k, v in got.items()} == {2: "b", 1: "a"}
    assert got[2][1] == 1.0
    # two stored boxes on one labelled face: only the better one takes it
    got = match_boxes([(1, (0, 0, 10, 10)), (2, (0, 0, 10, 12))], [("a", (0, 0, 10, 10))])
    assert got == {1: ("a", 1.0)}
    assert match_boxes([(1, (0, 0, 10, 10))], [("a", (4, 0, 14, 10))]) == {}  # IoU 0.43 < 0.5


def test_nearest_sample_time() -> None:
    times = [1.704, 2.204, 2.704]
    assert nearest_time(times, 2.21, 0.25) == 2.204
    assert nearest_time(times, 1.5, 0.25) == 1.704
    assert nearest_time(times, 3.0, 0.25) is None
    assert nearest_time([], 1.0, 0.25) is None


def test_cross_video_pairs() -> None:
    from benchmarks.identity.challenges import StoredFace

    def face(i: int, video: str, label: str) -> StoredFace:
        return StoredFace(i, video, 0.0, (0, 0, 1, 1), label=label)

    faces = [face(1, "v1", "A"), face(2, "v2", "A"), face(3, "v2", "A"), face(4, "v1", "B"), face(5, "v2", "B")]
    # cross-video same-person pairs: A (1,2), (1,3); B (4,5) -> 3. Clusters: {1,2,4}, {3}, {5}
    p, r, n, predicted = cross_video_pairs(faces, ["x", "x", "y", "x", "z"])
    assert (n, predicted) == (3, 2)
    # predicted cross-video pairs in x: (1,2), (2,4) -> 2, of which (1,2) is one person
    assert (p, r) == (pytest.approx(1 / 2), pytest.approx(1 / 3))
    assert cross_video_pairs(faces, [None, -1, None, None, None])[:2] == (pytest.approx(float("nan"), nan_ok=True), 0)


def test_corpus_pictures_do_not_depend_on_the_cpu(hamilton: Path) -> None:
    """The corpus builders' scaling (``SWS_FLAGS``, in ``make_corpus._picture_filter``) gives the same pixels with
    FFmpeg's SIMD paths on or off (without the bit-exact flags it does not: corpora, and every result measured on
    them, differed between machines)."""

    def frames(*cpu: str) -> str:
        out = subprocess.run(
            ["ffmpeg", "-v", "error", *cpu, "-i", str(hamilton), "-t", "1", "-vf", _picture_filter(hamilton, 30),
             "-pix_fmt", "yuv420p", "-sws_flags", SWS_FLAGS, "-f", "framemd5", "-"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return "\n".join(line for line in out.splitlines() if not line.startswith("#"))

    assert frames() == frames("-cpuflags", "0")
