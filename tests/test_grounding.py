"""Tests for molmo_nb_utils.grounding: parsing Molmo2 <points>/<tracks> answers and writing them back."""

from __future__ import annotations

import csv
import json
import random
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from molmo_nb_utils.grounding import (
    Point,
    count_points,
    format_points,
    group_by_id,
    group_by_image,
    group_by_time,
    load_points,
    nearest_index,
    parse_points,
    parse_tracks,
    points_from_records,
    points_to_records,
    save_points,
    time_to_frame,
)

CURB = '<points coords="1 1 308 305 2 752 377">curb ramp</points>'
MULTI = '<points coords="1 1 555 169;2 3 649 154 4 709 162;5 5 758 175 6 808 183 7 852 187">'
PENGUINS = 'Counting the <points coords="0.1 1 911 800\t0.2 2 900 400">penguins</points> shows a total of 2.'
TRACKS = '<tracks coords="0.0 1 635 522;0.5 1 606 490 2 511 124;1.0 2 515 164;1.5 2 520 168">player</tracks>'
FIVE_SIZES = [(100, 200), (300, 400), (500, 600), (700, 800), (900, 1000)]


def same(actual: list[Point], expected: list[Point]) -> None:
    """Equal ids, images and times in the same order; pixels equal up to float rounding."""
    assert [(p.id, p.image, p.time) for p in actual] == [(p.id, p.image, p.time) for p in expected]
    assert [(p.x, p.y) for p in actual] == [pytest.approx((p.x, p.y)) for p in expected]


# --- the verbatim examples ---------------------------------------------------------------------------


def test_single_image_example():
    points = parse_points(CURB, (640, 480))
    same(
        points,
        [Point(1, 308 / 1000 * 640, 305 / 1000 * 480, 1), Point(2, 752 / 1000 * 640, 377 / 1000 * 480, 1)],
    )
    assert points[0].x == pytest.approx(197.12) and points[0].y == pytest.approx(146.4)


def test_multi_image_example_with_five_sizes():
    skipped: list[str] = []
    points = parse_points(MULTI, FIVE_SIZES, skipped=skipped)
    assert skipped == []
    same(
        points,
        [
            Point(1, 555 / 1000 * 100, 169 / 1000 * 200, image=1),
            Point(3, 649 / 1000 * 300, 154 / 1000 * 400, image=2),
            Point(4, 709 / 1000 * 300, 162 / 1000 * 400, image=2),
            Point(5, 758 / 1000 * 900, 175 / 1000 * 1000, image=5),
            Point(6, 808 / 1000 * 900, 183 / 1000 * 1000, image=5),
            Point(7, 852 / 1000 * 900, 187 / 1000 * 1000, image=5),
        ],
    )
    assert count_points(points) == 6  # ids 1, 3, 4, 5, 6, 7: id 2 is missing from the answer
    assert {k: [p.id for p in v] for k, v in group_by_image(points).items()} == {
        1: [1],
        2: [3, 4],
        5: [5, 6, 7],
    }


def test_multi_image_example_with_only_two_sizes_reports_three_skipped_points():
    skipped: list[str] = []
    points = parse_points(MULTI, FIVE_SIZES[:2], skipped=skipped)
    assert [(p.id, p.image) for p in points] == [(1, 1), (3, 2), (4, 2)]
    assert len(skipped) == 3
    assert all("image 5: only 2 images were given" in reason for reason in skipped)


def test_penguins_tab_separated_video_points_with_text_around():
    points = parse_points(PENGUINS, (1280, 720))
    same(
        points,
        [
            Point(1, 911 / 1000 * 1280, 800 / 1000 * 720, time=0.1),
            Point(2, 900 / 1000 * 1280, 400 / 1000 * 720, time=0.2),
        ],
    )
    assert count_points(points) == 2


def test_tracks_example_and_groupings():
    points = parse_tracks(TRACKS, (1000, 500))
    same(
        points,
        [
            Point(1, 635.0, 261.0, time=0.0),
            Point(1, 606.0, 245.0, time=0.5),
            Point(2, 511.0, 62.0, time=0.5),
            Point(2, 515.0, 82.0, time=1.0),
            Point(2, 520.0, 84.0, time=1.5),
        ],
    )
    assert count_points(points) == 2
    assert {k: [p.time for p in v] for k, v in group_by_id(points).items()} == {
        1: [0.0, 0.5],
        2: [0.5, 1.0, 1.5],
    }
    assert {k: [p.id for p in v] for k, v in group_by_time(points).items()} == {
        0.0: [1],
        0.5: [1, 2],
        1.0: [2],
        1.5: [2],
    }


def test_there_are_none():
    skipped: list[str] = []
    assert parse_points("There are none.", (640, 480), skipped=skipped) == []
    assert parse_tracks("There are none.", (640, 480), skipped=skipped) == []
    assert skipped == []


# --- separators, attributes, several tags ---------------------------------------------------------------


@pytest.mark.parametrize("separator", [";", "\t", ",", ":", " ; ", "\n"])
def test_group_separators(separator):
    text = f'<points coords="1 1 100 200{separator}2 2 300 400">x</points>'
    same(parse_points(text, [(10, 10), (20, 20)]), [Point(1, 1.0, 2.0, 1), Point(2, 6.0, 8.0, 2)])


def test_alt_attribute_single_quotes_and_point_tag():
    assert parse_points('<points alt="curb ramp" coords="1 1 500 250">curb ramp</points>', (200, 100)) == [
        Point(1, 100.0, 25.0, 1)
    ]
    assert parse_points("<points coords='1 1 500 250'>x</points>", (200, 100)) == [Point(1, 100.0, 25.0, 1)]
    assert parse_points('<point coords="1 1 500 250">x</point>', (200, 100)) == [Point(1, 100.0, 25.0, 1)]


def test_several_tags_in_order_written_and_each_parser_reads_only_its_tag():
    text = (
        'First <points coords="2 1 500 500">a</points>, then <tracks coords="0.5 7 100 100">t</tracks> '
        "and <points coords='1 2 100 100;2 3 0 1000'>b</points>."
    )
    same(
        parse_points(text, [(10, 20), (100, 200)]),
        [Point(1, 50.0, 100.0, 2), Point(2, 1.0, 2.0, 1), Point(3, 0.0, 200.0, 2)],
    )
    assert parse_tracks(text, (100, 200)) == [Point(7, 10.0, 20.0, time=0.5)]


def test_video_flag_forces_the_reading_of_prefixes():
    assert parse_points('<points coords="2 1 500 500">x</points>', (100, 100), video=True) == [
        Point(1, 50.0, 50.0, time=2.0)
    ]
    skipped: list[str] = []
    assert (
        parse_points('<points coords="0.5 1 500 500">x</points>', (100, 100), video=False, skipped=skipped)
        == []
    )
    assert len(skipped) == 1 and "video=True" in skipped[0]


def test_pil_images_as_sizes():
    image = Image.new("RGB", (64, 48))
    assert parse_points('<points coords="1 1 500 500">x</points>', image) == [Point(1, 32.0, 24.0, 1)]
    text = '<points coords="2 1 500 500">x</points>'
    assert parse_points(text, [image, Image.new("RGB", (20, 10))]) == [Point(1, 10.0, 5.0, 2)]


# --- bad model text is skipped, never raised -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kept", "reason"),
    [
        ('<points coords="1 1 308 305 2 752 37', [1], "last number '37'"),  # 37 may be the start of 377
        ('<points coords="1 1 308 305 2 752 377 ', [1, 2], None),  # a number followed by a space is whole
        ('<points coords="1 1 308 305;1 2 75', [1], "may be incomplete"),
        ('<points coords="1 1 308 305>curb ramp</points>', [1], None),  # missing closing quote only
        ('<points coords="1 1 308 305 2 752 377">', [1, 2], None),  # missing </points>
        ('<points coords="', [], None),
        ("<points alt='ramp", [], "without coords"),
        ('<points x="10.5" y="20">old Molmo</points>', [], "without coords"),
        ('<points coords="abc 1 308 305">x</points>', [], "neither an image index nor a time"),
        ('<points coords="1 1 308 305 0 752 377">x</points>', [1], "id '0'"),
        ('<points coords="1 x 308 305 2 752 377">x</points>', [2], "id 'x'"),
        ('<points coords="1 1 1001 305 2 752 377">x</points>', [2], "beyond the 0..1000 scale"),
        ('<points coords="1 1 308 -305 2 752 377">x</points>', [2], "not numbers"),
        ('<points coords="1 1 nan 305 2 752 377">x</points>', [2], "not numbers"),
        ('<points coords="1 1 308 305 2 752">x</points>', [1], "left over"),
        ('<points coords="2 1 308 305;1 2 752 377">x</points>', [2], "only 1 image was given"),
        ('<points coords="0 1 308 305">x</points>', [], "start at 1"),
        ('<points coords="1 1 308 305">x</points> junk <points coords=\'1 9', [1], "may be incomplete"),
    ],
)
def test_bad_pieces_are_skipped_and_reported(text, kept, reason):
    skipped: list[str] = []
    points = parse_points(text, (1000, 1000), skipped=skipped)
    assert [p.id for p in points] == kept
    if reason is None:
        assert skipped == []
    else:
        assert any(reason in r for r in skipped), skipped


def test_timestamps_with_several_image_sizes_are_skipped():
    skipped: list[str] = []
    assert parse_points(PENGUINS, FIVE_SIZES[:3], skipped=skipped) == []
    assert len(skipped) == 2 and "needs one video size" in skipped[0]


def test_skipped_is_optional():
    assert parse_points('<points coords="1 1 2000 1 9 x">', (10, 10)) == []


def _give_up(signum, frame):
    raise AssertionError("parsing 100 KB of junk ran past 120 s: a pattern backtracks without bound")


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM")
def test_100_kb_of_junk_is_fast():
    """Guarded by a generous limit, never by a measured duration: a backtracking pattern takes hours on
    these inputs, while a linear parser takes well under a second even on a loaded machine."""
    rng = random.Random(0)
    junks = [
        "".join(rng.choice("<>\"' ;:,\t=0123456789.abcpointsrk/") for _ in range(100_000)),
        "<points " * 12_500,
        '<points coords="' + "1 " * 50_000,
        "<points coords='" + "9" * 100_000,
        "<points coords=" + " " * 100_000,
        '<points coords="1 ' + "1 2 3 ;" * 14_000,
    ]
    previous = signal.signal(signal.SIGALRM, _give_up)
    signal.alarm(120)
    try:
        for junk in junks:
            parse_points(junk, (100, 100), skipped=[])
            parse_tracks(junk, (100, 100), skipped=[])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- bad arguments are programming errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes",
    [
        (0, 480),
        (640, -1),
        (640,),
        (640, 480, 3),
        "abc",
        None,
        [],
        (True, 5),
        (float("nan"), 5),
        [(640, 480), (1, 0)],
    ],
)
def test_invalid_sizes_raise(sizes):
    with pytest.raises(ValueError, match=r"size|width"):
        parse_points(CURB, sizes)


def test_tracks_need_one_size_and_video_true_needs_one_size():
    with pytest.raises(ValueError, match="parse_tracks needs one"):
        parse_tracks(TRACKS, [(640, 480), (640, 480)])
    with pytest.raises(ValueError, match="video=True needs one"):
        parse_points(PENGUINS, [(640, 480), (640, 480)], video=True)


# --- writing back ------------------------------------------------------------------------------------------


def test_format_points_writes_the_verbatim_grammar():
    assert format_points(parse_points(CURB, (640, 480)), (640, 480), "curb ramp") == CURB
    assert format_points(parse_tracks(TRACKS, (1000, 500)), (1000, 500), "player", tag="tracks") == TRACKS
    assert format_points(parse_points(MULTI, FIVE_SIZES), FIVE_SIZES) == MULTI + "</points>"
    assert (
        format_points([Point(3, 5.2, 100.0, time=12.25)], (100, 100))
        == '<points coords="12.2 3 052 1000"></points>'
    )


@pytest.mark.parametrize(
    ("points", "sizes", "tag", "match"),
    [
        ([Point(1, 1, 1, 1)], (10, 10), "box", "tag must be"),
        ([Point(1, 1, 1)], (10, 10), "points", "needs a time"),
        ([Point(1, 1, 1, image=3)], [(10, 10), (10, 10)], "points", "needs a time"),
        ([Point(1, 1, 1, time=0.5)], [(10, 10), (10, 10)], "points", "needs a time"),
        ([Point(0, 1, 1, 1)], (10, 10), "points", "ids start at 1"),
    ],
)
def test_format_points_bad_input(points, sizes, tag, match):
    with pytest.raises(ValueError, match=match):
        format_points(points, sizes, tag=tag)


sizes_st = st.tuples(
    st.one_of(st.integers(1, 4000), st.floats(1.0, 4000.0)),
    st.one_of(st.integers(1, 4000), st.floats(1.0, 4000.0)),
)
coord = st.integers(0, 1000)


def check_round_trip(parsed: list[Point], raw: list[tuple], point_sizes: list[tuple]) -> None:
    assert len(parsed) == len(raw)
    for p, (pid, image, time, gx, gy), (w, h) in zip(parsed, raw, point_sizes, strict=True):
        assert (p.id, p.image, p.time) == (pid, image, time)
        assert abs(p.x - gx / 1000 * w) <= w / 1000 and abs(p.y - gy / 1000 * h) <= h / 1000


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(sizes_st, min_size=1, max_size=5),
    data=st.data(),
    as_list=st.booleans(),
)
def test_round_trip_image_points(sizes, data, as_list):
    raw = data.draw(
        st.lists(
            st.tuples(st.integers(1, 99), st.integers(1, len(sizes)), st.none(), coord, coord), max_size=15
        )
    )
    given_sizes = sizes if as_list or len(sizes) > 1 else sizes[0]
    points = [
        Point(pid, gx / 1000 * sizes[i - 1][0], gy / 1000 * sizes[i - 1][1], image=i)
        for pid, i, _, gx, gy in raw
    ]
    parsed = parse_points("Here: " + format_points(points, given_sizes, "thing") + " done.", given_sizes)
    check_round_trip(parsed, raw, [sizes[i - 1] for _, i, *_ in raw])


@settings(max_examples=60, deadline=None)
@given(
    size=sizes_st,
    raw=st.lists(
        st.tuples(st.integers(1, 99), st.none(), st.integers(0, 600).map(lambda k: k / 10), coord, coord),
        max_size=15,
    ),
    tag=st.sampled_from(["points", "tracks"]),
)
def test_round_trip_video_points_and_tracks(size, raw, tag):
    points = [Point(pid, gx / 1000 * size[0], gy / 1000 * size[1], time=t) for pid, _, t, gx, gy in raw]
    text = format_points(points, size, tag=tag)
    parsed = parse_points(text, size) if tag == "points" else parse_tracks(text, size)
    check_round_trip(parsed, raw, [size] * len(raw))


# --- frames and times ----------------------------------------------------------------------------------------


def test_time_to_frame():
    assert time_to_frame(1.5, 30) == 45
    assert time_to_frame(0.7, 30) == 21  # 0.7 * 30 is 20.999...: nearest, not floor
    assert time_to_frame(0.0, 24) == 0
    assert time_to_frame(2.0, 29.97) == 60  # 59.94
    assert time_to_frame(10.0, 30, num_frames=100) == 99
    assert time_to_frame(1.0, 30, num_frames=100) == 30


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1.0, 0), "fps must be > 0"),
        ((1.0, -30), "fps must be > 0"),
        ((-0.1, 30), "time must be >= 0"),
        ((1.0, 30, 0), "num_frames"),
    ],
)
def test_time_to_frame_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        time_to_frame(*args)


def test_nearest_index():
    stamps = [0.0, 0.5, 1.0]
    assert [nearest_index(t, stamps) for t in (0.74, 0.76, 5.0, -1.0, 0.25)] == [1, 2, 2, 0, 0]
    with pytest.raises(ValueError, match="timestamps is empty"):
        nearest_index(0.5, [])


# --- records and files ---------------------------------------------------------------------------------------


MIXED = [
    Point(1, 197.12, 146.4, image=1),
    Point(2, 1 / 3, 2 / 3, image=2),
    Point(1, 635.0, 261.0, time=0.0),
    Point(2, 511.5, 62.25, time=0.5),
]


def test_points_to_records():
    records = points_to_records(MIXED, fps=30)
    assert records[0] == {"time": None, "frame": None, "id": 1, "x": 197.12, "y": 146.4, "image": 1}
    assert records[3] == {"time": 0.5, "frame": 15, "id": 2, "x": 511.5, "y": 62.25, "image": None}
    assert points_to_records(MIXED)[3]["frame"] is None
    assert points_from_records(records) == MIXED


def test_records_take_the_exact_frame_from_the_frames_shown():
    class Shown:  # the part of VideoFrames that records use: at 29.97 fps, 0.5 s shows frame 14
        def frame_at(self, time):
            return {0.0: 0, 0.5: 14}[time]

    records = points_to_records(MIXED, fps=30000 / 1001, video=Shown())
    assert [r["frame"] for r in records] == [None, None, 0, 14]  # not round(0.5 * 29.97) = 15


def test_points_from_bad_records():
    with pytest.raises(ValueError, match="record 1 is not a point"):
        points_from_records([{"id": 1, "x": 1, "y": 2}, {"x": 1, "y": 2}])


@pytest.mark.parametrize("name", ["points.csv", "points.json", "sub/dir/points.CSV"])
def test_save_and_load_round_trip(tmp_path, name):
    path = save_points(MIXED, tmp_path / name, fps=30)
    assert load_points(path) == MIXED
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_saved_files_hold_time_frame_id_x_y_image(tmp_path):
    with open(save_points(MIXED, tmp_path / "p.csv", fps=30), newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["time", "frame", "id", "x", "y", "image"]
    assert rows[4] == ["0.5", "15", "2", "511.5", "62.25", ""]
    data = json.loads(save_points(MIXED, tmp_path / "p.json", fps=30).read_text())
    assert data[3] == {"time": 0.5, "frame": 15, "id": 2, "x": 511.5, "y": 62.25, "image": None}


def test_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.csv or \.json files, not 'points.txt'"):
        save_points(MIXED, tmp_path / "points.txt")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        load_points(tmp_path / "points.txt")


def test_failed_save_keeps_the_old_file(tmp_path):
    path = save_points(MIXED, tmp_path / "p.json")
    before = path.read_text()
    with pytest.raises(TypeError):
        save_points([*MIXED, Point(3, object(), 1.0, image=1)], path)  # not JSON serialisable
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


def test_load_rejects_json_that_is_not_a_list(tmp_path):
    (tmp_path / "p.json").write_text('{"points": []}')
    with pytest.raises(ValueError, match="JSON list of point records"):
        load_points(tmp_path / "p.json")
