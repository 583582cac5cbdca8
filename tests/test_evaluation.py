"""Scoring video points against the sample videos' ground truth."""

from __future__ import annotations

import json

import pytest

from molmo_nb_utils.evaluation import load_ground_truth, score_points
from molmo_nb_utils.grounding import Point, format_points, parse_tracks
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
