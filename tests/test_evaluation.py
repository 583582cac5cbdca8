"""Scoring video points against the sample videos' ground truth."""

from __future__ import annotations

import json
import math

import pytest

from molmo_nb_utils.evaluation import (
    GroundTruth,
    PointScore,
    count_scores,
    distance_threshold,
    load_ground_truth,
    match_points,
    point_scores,
    score_points,
    sum_scores,
)
from molmo_nb_utils.grounding import Point, format_points, parse_tracks
from molmo_nb_utils.media import FramePlan
from molmo_nb_utils.paths import INPUT_DIR

TRUTH = INPUT_DIR / "ground_truth" / "moving_objects.json"


def test_ground_truth_loads_as_points():
    truth = load_ground_truth(TRUTH)
    raw = json.loads(TRUTH.read_text())
    assert truth.fps == raw["fps"] and truth.num_frames == raw["num_frames"]
    assert len(truth.points) == sum(len(f["objects"]) for f in raw["frames"])
    first = raw["frames"][0]["objects"][0]
    assert truth.points[0] == Point(first["id"], first["x"], first["y"], time=0.0)


def test_truth_at_sampled_times_uses_the_nearest_frame():
    truth = load_ground_truth(TRUTH)
    raw = json.loads(TRUTH.read_text())
    # 0.1 s is what Molmo2 writes for the frame at 0.125 s (8 fps); at 16 fps that is frame 2.
    at = truth.at([0.1])
    assert [(p.id, p.x, p.y) for p in at] == [(o["id"], o["x"], o["y"]) for o in raw["frames"][2]["objects"]]
    assert all(p.time == 0.1 for p in at)


def test_perfect_answer_scores_everything_and_survives_the_text_round_trip():
    truth = load_ground_truth(TRUTH)
    times = [k / 8 for k in range(32)]  # 8 fps over 4 s
    answer = format_points(truth.at(times), (truth.width, truth.height), label="coin", tag="tracks")
    parsed = parse_tracks(answer, (truth.width, truth.height))
    score = score_points(parsed, truth, times)
    assert score.truth_objects == len(truth.at(times))
    assert score.hits == score.truth_objects and score.false_points == 0
    assert score.mean_error_px is not None and score.mean_error_px < 1.0  # 0..1000 rounding only


def test_misses_and_extra_points_are_counted():
    truth = load_ground_truth(TRUTH)
    raw = json.loads(TRUTH.read_text())
    objects = raw["frames"][0]["objects"]  # two coins at t = 0
    near = Point(7, objects[0]["x"] + 3, objects[0]["y"] - 4, time=0.0)  # 5 px off, other id
    far = Point(8, 5.0, 5.0, time=0.0)
    score = score_points([near, far], truth, [0.0], radius=30)
    assert (score.times, score.truth_objects, score.hits, score.false_points) == (1, len(objects), 1, 1)
    assert score.mean_error_px == pytest.approx(5.0)
    assert score.hit_rate == pytest.approx(1 / len(objects))


def test_a_hit_is_within_5_percent_of_the_frame_diagonal_by_default():
    # 640x360: the diagonal is 734.3 px, 5% of it 36.7 px (the HIT RULE, stated in 04_video_pointing).
    truth = GroundTruth([Point(1, 100.0, 100.0, time=0.0)], 1.0, 640, 360, 1)
    near = score_points([Point(1, 136.0, 100.0, time=0.0)], truth, [0.0])  # 36 px off
    far = score_points([Point(1, 137.5, 100.0, time=0.0)], truth, [0.0])  # 37.5 px off
    assert (near.hits, far.hits) == (1, 0)
    assert score_points([Point(1, 136.0, 100.0, time=0.0)], truth, [0.0], radius=30).hits == 0  # override
    # The distance grows with the frame: at 3840x2160 the same 37.5 px is well within 220 px.
    big = GroundTruth([Point(1, 100.0, 100.0, time=0.0)], 1.0, 3840, 2160, 1)
    assert score_points([Point(1, 137.5, 100.0, time=0.0)], big, [0.0]).hits == 1
    assert score_points([Point(1, 330.0, 100.0, time=0.0)], big, [0.0]).hits == 0  # 230 px off


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_ground_truth(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"frames": 3}')
    with pytest.raises(ValueError, match="bad.json"):
        load_ground_truth(bad)
    with pytest.raises(ValueError, match="radius"):
        score_points([], load_ground_truth(TRUTH), [0.0], radius=0)


def test_snap_times_recovers_the_frame_behind_a_one_decimal_timestamp():
    from molmo_nb_utils.grounding import snap_times

    sampled = [k / 8 for k in range(8)]  # 0.0, 0.125, 0.25, ...
    written = [Point(1, 1.0, 2.0, time=0.2), Point(2, 3.0, 4.0, time=0.9), Point(3, 5.0, 6.0, image=1)]
    snapped = snap_times(written, sampled)
    assert [p.time for p in snapped] == [0.25, 0.875, None]  # "0.2" is the frame at 0.25 s
    assert [(p.id, p.x, p.y) for p in snapped] == [(1, 1.0, 2.0), (2, 3.0, 4.0), (3, 5.0, 6.0)]


# --- optimal matching --------------------------------------------------------------------------------


def test_match_points_finds_both_pairs_where_greedy_finds_one():
    truth = [Point(1, 30.0, 50.0), Point(2, 68.0, 50.0)]
    predicted = [Point(1, 40.0, 50.0), Point(2, 1.0, 50.0)]
    # Greedy takes the nearest pair first, 40-30 = 10 px, leaving 1 -> 68 = 67 px > 30: 1 pair.
    # Optimal: 40 -> 68 is 28 px and 1 -> 30 is 29 px, both within 30: 2 pairs.
    assert match_points(predicted, truth, 30) == [(0, 1, 28.0), (1, 0, 29.0)]


def test_match_points_puts_the_number_of_pairs_before_the_total_distance():
    predicted = [Point(1, 0.0, 0.0), Point(2, 9.0, 0.0)]
    truth = [Point(1, 0.0, 0.0), Point(2, 0.0, 9.0)]
    # Straight: 0 + sqrt(9^2 + 9^2) = 12.73 px in total, but 12.73 > 10, so only 1 pair counts.
    # Crossed: 9 + 9 = 18 px in total, both pairs within 10: the most pairs wins.
    assert match_points(predicted, truth, 10) == [(0, 1, 9.0), (1, 0, 9.0)]
    # With no limit the smallest total distance is all that matters (Molmo2's matching).
    assert match_points(predicted, truth, math.inf) == [(0, 0, 0.0), (1, 1, pytest.approx(math.sqrt(162)))]


def test_match_points_takes_the_smallest_total_among_equally_many_pairs():
    # One truth, two candidates 5 and 3 px away: the 3 px one is matched, the other left over.
    assert match_points([Point(1, 5.0, 0.0), Point(2, 3.0, 0.0)], [Point(1, 0.0, 0.0)], 10) == [(1, 0, 3.0)]
    # Two pairs either way: straight 1 + 1 = 2 px beats crossed 11 + 9 = 20 px.
    predicted = [Point(1, 0.0, 0.0), Point(2, 10.0, 0.0)]
    truth = [Point(1, 1.0, 0.0), Point(2, 11.0, 0.0)]
    assert match_points(predicted, truth, 20) == [(0, 0, 1.0), (1, 1, 1.0)]


def test_match_points_counts_the_limit_itself_and_handles_empty_sides():
    assert match_points([Point(1, 0.0, 0.0)], [Point(1, 3.0, 4.0)], 5) == [(0, 0, 5.0)]  # 3-4-5 triangle
    assert match_points([Point(1, 0.0, 0.0)], [Point(1, 3.0, 4.0)], 4.9) == []
    assert match_points([], [Point(1, 0.0, 0.0)], 5) == []
    assert match_points([Point(1, 0.0, 0.0)], [], 5) == []


@pytest.mark.parametrize("bad", [0, -1, math.nan, True, "30"])
def test_match_points_rejects_bad_distances(bad):
    with pytest.raises(ValueError, match="max_distance"):
        match_points([Point(1, 0.0, 0.0)], [Point(1, 0.0, 0.0)], bad)


def test_match_points_rejects_non_finite_coordinates():
    with pytest.raises(ValueError, match="finite"):
        match_points([Point(1, math.nan, 0.0)], [Point(1, 0.0, 0.0)], 5)


# --- precision, recall, F1 ---------------------------------------------------------------------------


def test_point_scores_counts_matched_extra_and_missed_points():
    truth = [Point(1, 0.0, 0.0), Point(2, 100.0, 0.0)]
    predicted = [Point(1, 3.0, 4.0), Point(2, 100.0, 6.0), Point(3, 50.0, 50.0)]
    score = point_scores(predicted, truth, 10)
    # (3, 4) is 5 px from (0, 0); (100, 6) is 6 px from (100, 0); (50, 50) is 70.7 px from both.
    assert (score.tp, score.fp, score.fn) == (2, 1, 0)
    assert score.precision == pytest.approx(2 / 3)
    assert score.recall == 1.0
    assert score.f1 == pytest.approx(0.8)  # 2 * 2 / (2 * 2 + 1 + 0)
    assert score.mean_error_px == pytest.approx(5.5)  # (5 + 6) / 2
    assert "F1 0.80" in str(score)


def test_point_scores_when_one_side_is_empty():
    none = point_scores([], [], 10)  # a correct "there are none"
    assert (none.precision, none.recall, none.f1, none.mean_error_px) == (1.0, 1.0, 1.0, None)
    extra = point_scores([Point(1, 0.0, 0.0)], [], 10)
    assert (extra.fp, extra.precision, extra.recall, extra.f1) == (1, 0.0, 0.0, 0.0)
    missed = point_scores([], [Point(1, 0.0, 0.0)], 10)
    assert (missed.fn, missed.precision, missed.recall, missed.f1) == (1, 0.0, 0.0, 0.0)


def test_scores_add_up_over_images():
    first = point_scores([Point(1, 3.0, 4.0), Point(2, 50.0, 50.0)], [Point(1, 0.0, 0.0)], 10)  # tp 1, fp 1
    second = point_scores([], [Point(1, 0.0, 0.0), Point(2, 9.0, 9.0)], 10)  # fn 2
    total = sum_scores([first, second])
    assert total == first + second == PointScore(tp=1, fp=1, fn=2, total_error_px=5.0)
    assert total.precision == 0.5  # 1 / (1 + 1)
    assert total.recall == pytest.approx(1 / 3)  # 1 / (1 + 2)
    assert total.f1 == pytest.approx(0.4)  # 2 * 1 / (2 * 1 + 1 + 2)
    with pytest.raises(ValueError, match="no scores"):
        sum_scores([])


def test_point_scores_wants_one_image_or_frame_at_a_time():
    # Truth without an image index goes with predictions on image 1 (parse_points' single image).
    assert point_scores([Point(1, 0.0, 0.0, image=1)], [Point(1, 1.0, 0.0)], 5).tp == 1
    with pytest.raises(ValueError, match="sum_scores"):
        point_scores([Point(1, 0.0, 0.0, time=0.0)], [Point(1, 0.0, 0.0, time=0.5)], 5)
    with pytest.raises(ValueError, match="threshold_px"):
        point_scores([], [], 0)


def test_distance_threshold_is_a_fraction_of_the_diagonal():
    assert distance_threshold(640, 480) == pytest.approx(40.0)  # 5% of sqrt(640^2 + 480^2) = 800
    assert distance_threshold(640, 480, fraction=0.1) == pytest.approx(80.0)
    for bad in [(0, 480), (640, -1)]:
        with pytest.raises(ValueError, match="width|height"):
            distance_threshold(*bad)
    for fraction in [0, 1.5]:
        with pytest.raises(ValueError, match="fraction"):
            distance_threshold(640, 480, fraction=fraction)


# --- counting ----------------------------------------------------------------------------------------


def test_count_scores():
    score = count_scores([3, 5, 0, 22], [3, 4, 2, 20])
    # errors 0, +1, -2, +2; close margins 1 + floor(5% of 3, 4, 2, 20) = 1, 1, 1, 2 -> 3 close
    assert (score.n, score.exact, score.close) == (4, 1, 3)
    assert score.accuracy == 0.25
    assert score.mean_abs_error == 1.25  # (0 + 1 + 2 + 2) / 4
    assert score.mean_signed_error == 0.25  # (0 + 1 - 2 + 2) / 4
    assert str(score).startswith("1/4 counts exact (25%), 3 close (75%)")


@pytest.mark.parametrize(
    ("predicted", "true", "message"),
    [
        ([1, 2], [1], "2 predicted counts but 1"),
        ([], [], "no counts"),
        ([-1], [1], r"predicted_counts\[0\]"),
        ([1], [2.5], r"true_counts\[0\]"),
        ([True], [1], "whole number"),
    ],
)
def test_count_scores_rejects_bad_counts(predicted, true, message):
    with pytest.raises(ValueError, match=message):
        count_scores(predicted, true)


# --- video: the frames the model saw, and identities ------------------------------------------------


def Sampled(times: list[float], indices: list[int], size: tuple[int, int] = (640, 360)) -> FramePlan:
    """The frames shown, as a run records them (``media.FramePlan``)."""
    return FramePlan(tuple(times), tuple(indices), size)


def test_truth_is_read_on_the_frames_shown_not_recomputed_from_times():
    fps = 29.97
    truth = GroundTruth(
        [Point(1, 100.0, 100.0, time=14 / fps), Point(1, 200.0, 100.0, time=15 / fps)], fps, 640, 360, 30
    )
    answer = [Point(1, 100.0, 100.0, time=0.5)]  # where the object is on frame 14
    # The sample at 0.5 s shows frame 14; round(0.5 * 29.97) = round(14.985) = 15 would be the next frame.
    shown = score_points(answer, truth, Sampled([0.5], [14]))
    assert (shown.truth_objects, shown.hits, shown.false_points) == (1, 1, 0)
    nearest = score_points(answer, truth, [0.5])  # plain times: nearest frame, 15, object at x = 200
    assert (nearest.truth_objects, nearest.hits, nearest.false_points) == (1, 0, 1)


def test_a_clamped_last_sample_reads_the_last_frame_again():
    truth = load_ground_truth(TRUTH)
    raw = json.loads(TRUTH.read_text())
    last = raw["frames"][63]["objects"]  # coins 1, 2 and 3 are all visible on the last frame, 63
    answer = [Point(o["id"], o["x"], o["y"], time=4.0) for o in last]
    score = score_points(answer, truth, Sampled([3.9, 4.0], [63, 63]))
    assert (score.times, score.truth_objects, score.hits) == (2, 6, 3)  # 2 samples x 3 coins; 4.0 s answered


def test_bad_frames():
    truth = load_ground_truth(TRUTH)
    with pytest.raises(ValueError, match="one index per time"):
        score_points([], truth, Sampled([0.0], [0, 1]))
    with pytest.raises(ValueError, match="frame index 64"):
        score_points([], truth, Sampled([4.0], [64]))
    with pytest.raises(ValueError, match="no sampled frames"):
        score_points([], truth, [])
    with pytest.raises(ValueError, match="one time per frame"):
        truth.at_frames([0, 1], [0.0])


def _two_coins() -> GroundTruth:
    """Coin 1 at (100, 100) and coin 2 at (300, 100) on frames 0..3 at 1 fps."""
    return GroundTruth(
        [Point(oid, x, 100.0, time=float(t)) for t in range(4) for oid, x in [(1, 100.0), (2, 300.0)]],
        1.0,
        640,
        360,
        4,
    )


def test_score_points_matches_optimally_per_frame():
    truth = GroundTruth([Point(1, 30.0, 50.0, time=0.0), Point(2, 68.0, 50.0, time=0.0)], 1.0, 100, 100, 1)
    answer = [Point(1, 40.0, 50.0, time=0.0), Point(2, 1.0, 50.0, time=0.0)]
    score = score_points(answer, truth, [0.0], radius=30)
    assert (score.hits, score.false_points) == (2, 0)  # greedy found 1 (see the match_points test)
    assert score.mean_error_px == pytest.approx(28.5)  # (28 + 29) / 2


def test_identity_switches_and_consistency():
    answer = [
        Point(1, 100.0, 100.0, time=0.0),
        Point(2, 300.0, 100.0, time=0.0),
        Point(1, 100.0, 100.0, time=1.0),
        Point(5, 300.0, 100.0, time=1.0),  # coin 2 now "5"
        Point(1, 100.0, 100.0, time=2.0),  # coin 2 missed
        Point(1, 100.0, 100.0, time=3.0),
        Point(2, 300.0, 100.0, time=3.0),  # back to "2"
    ]
    score = score_points(answer, _two_coins(), [0.0, 1.0, 2.0, 3.0])
    assert (score.truth_objects, score.hits) == (8, 7)  # 2 coins x 4 frames, one miss
    assert score.ids_per_object == {1: (1,), 2: (2, 5)}
    assert score.id_switches == 2  # coin 2: 2 -> 5, 5 -> 2
    assert score.followed_by_one_id(1) and not score.followed_by_one_id(2)
    assert score.id_consistency == 0.5  # 1 of 2 coins
    assert score.id_report().splitlines() == [
        "object 1: id 1",
        "object 2: ids 2, 5",
        "1/2 objects followed by one id (50%), 2 id switches",
    ]


def test_an_id_that_jumps_to_another_object_follows_neither():
    # Id 1 follows coin 1 on frames 0-1, then coin 2 on frames 2-3: each coin saw one id, but the same one.
    answer = [Point(1, 100.0, 100.0, time=0.0), Point(1, 100.0, 100.0, time=1.0)]
    answer += [Point(1, 300.0, 100.0, time=2.0), Point(1, 300.0, 100.0, time=3.0)]
    score = score_points(answer, _two_coins(), [0.0, 1.0, 2.0, 3.0])
    assert score.ids_per_object == {1: (1,), 2: (1,)}
    assert (score.id_switches, score.id_consistency) == (0, 0.0)
    assert "id 1 also on other objects" in score.id_report()


def test_a_never_hit_object_is_not_followed():
    score = score_points([Point(7, 100.0, 100.0, time=0.0)], _two_coins(), [0.0])
    assert score.ids_per_object == {1: (7,), 2: ()}
    assert score.id_consistency == 0.5  # coin 1 by id 7; coin 2 never hit
    assert "object 2: never hit" in score.id_report()
    with pytest.raises(ValueError, match="no true object 9"):
        score.followed_by_one_id(9)


def test_at_plan_reads_the_plans_frames_and_keeps_a_repeated_time_once():
    truth = load_ground_truth(TRUTH)
    raw = json.loads(TRUTH.read_text())
    at = truth.at_plan(FramePlan((3.9, 4.0, 4.0), (62, 63, 62), (truth.width, truth.height)))
    expected = [(o["id"], o["x"], o["y"], 3.9) for o in raw["frames"][62]["objects"]]
    expected += [(o["id"], o["x"], o["y"], 4.0) for o in raw["frames"][63]["objects"]]
    assert [(p.id, p.x, p.y, p.time) for p in at] == expected
    assert truth.at([0.1]) == truth.at_plan(truth.plan_at([0.1]))


def test_at_plan_refuses_another_videos_frames():
    truth = load_ground_truth(TRUTH)
    with pytest.raises(ValueError, match="right truth file"):
        truth.at_plan(FramePlan((0.0,), (0,), (1280, 720)))
    with pytest.raises(TypeError, match="FramePlan"):
        truth.at_plan([0.0])  # type: ignore[arg-type]
