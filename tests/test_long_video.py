"""Long videos: windows that fit, tracks joined across them with one id per object, resumable runs.

The joining is tested on tracks with known identities cut into overlapping windows with ids
shuffled per window, as a windowed run of Molmo2 would number them: MOT-like scenes (many objects
entering, leaving, crossing, with gaps), and the worked cases of the issue. Scores are the
package's own (``score_points``: TrackEval's HOTA).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from molmo_nb_utils import Answer, Point, format_points, load_ground_truth, load_segmenter, sample_frames
from molmo_nb_utils.evaluation import GroundTruth, score_points
from molmo_nb_utils.long_video import (
    GATE_FRACTION,
    LongVideoAnswer,
    plan_windows,
    plot_windows,
    stitch,
    stitch_windows,
    track_video,
    window_frames,
)
from molmo_nb_utils.media import plan_frames
from molmo_nb_utils.paths import INPUT_DIR

SIZE = (1920, 1080)
VIDEO = INPUT_DIR / "moving_objects.mp4"
TRUTH = load_ground_truth(INPUT_DIR / "ground_truth" / "moving_objects.json")


# ---------------------------------------------------------------------------------------------
# Scenes and windows


def mot_scene(seed: int, objects: int = 40, seconds: float = 60.0, fps: float = 10.0) -> list[Point]:
    """Pedestrian-like tracks on a 1920x1080 frame: born and gone at random times, walking in and out
    of the picture at a few to 200 px/s with a sway, each hidden for up to 3 short gaps."""
    rng = random.Random(seed)
    width, height = SIZE
    points = []
    for oid in range(1, objects + 1):
        birth, life = rng.uniform(-10, seconds), rng.uniform(3, 40)
        x, y = rng.uniform(0, width), rng.uniform(0.3 * height, height)
        angle, speed = rng.uniform(0, 2 * math.pi), rng.uniform(30, 200)
        vx, vy = speed * math.cos(angle), 0.4 * speed * math.sin(angle)
        gaps = [(g, g + rng.uniform(0.2, 1.5)) for g in (rng.uniform(birth, birth + life) for _ in range(3))]
        for f in range(int(seconds * fps) + 1):
            t = f / fps
            if not birth <= t <= birth + life or any(a <= t <= b for a, b in gaps):
                continue
            px, py = x + vx * (t - birth) + 20 * math.sin(t - birth), y + vy * (t - birth)
            if 0 <= px <= width and 0 <= py <= height:
                points.append(Point(oid, px, py, time=t))
    return points


def cut(points, seconds: float, window: float, overlap: float, seed: int = 0):
    """(start, end, points) windows, ids renumbered 1..n at random in each (as each answer numbers them)."""
    rng = random.Random(seed)
    windows, start = [], 0.0
    while True:
        end = min(start + window, seconds)
        inside = [p for p in points if start - 1e-9 <= p.time <= end + 1e-9]
        ids = sorted({p.id for p in inside})
        new = list(range(1, len(ids) + 1))
        rng.shuffle(new)
        renumber = dict(zip(ids, new, strict=True))
        windows.append((start, end, [Point(renumber[p.id], p.x, p.y, time=p.time) for p in inside]))
        if end >= seconds:
            return windows
        start += window - overlap


def identities(original, stitched) -> set[tuple[int, int]]:
    """(original id, stitched id) of every point, each found at its time, at its place (to 1 px:
    answers write coordinates on Molmo2's 0..1000 scale)."""
    at: dict[float, list[Point]] = {}
    for p in original:
        at.setdefault(round(p.time, 6), []).append(p)
    pairs = set()
    for q in stitched:
        p = min(at[round(q.time, 6)], key=lambda p: math.hypot(p.x - q.x, p.y - q.y))
        assert math.hypot(p.x - q.x, p.y - q.y) <= 1.0, (p, q)
        pairs.add((p.id, q.id))
    return pairs


def same_up_to_renaming(original, stitched) -> bool:
    pairs = identities(original, stitched)
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def truth_of(points, fps: float, seconds: float) -> GroundTruth:
    return GroundTruth(list(points), fps, SIZE[0], SIZE[1], int(seconds * fps) + 1)


def seen_through_every_overlap(points, windows) -> bool:
    """Whether every object present on both sides of a border is seen inside that overlap."""
    for (_, end, _), (start, _, _) in zip(windows, windows[1:], strict=False):
        by_id: dict[int, list[float]] = {}
        for p in points:
            by_id.setdefault(p.id, []).append(p.time)
        for times in by_id.values():
            if min(times) < start and max(times) > end and not any(start <= t <= end for t in times):
                return False
    return True


# ---------------------------------------------------------------------------------------------
# Joining


@pytest.mark.parametrize("seed", range(4))
def test_mot_scenes_cut_into_windows_are_joined_back_exactly(seed):
    points = mot_scene(seed)
    windows = cut(points, 60, window=10, overlap=2, seed=seed)
    assert seen_through_every_overlap(points, windows)
    stitched = stitch_windows(windows, SIZE)
    assert len(stitched) == len(points)  # one point per id and time: the overlaps are not doubled
    assert same_up_to_renaming(points, stitched)
    ids = [p.id for p in stitched]
    assert sorted(set(ids)) == list(range(1, len({p.id for p in points}) + 1))
    first = {}
    for p in stitched:
        first.setdefault(p.id, p.time)
    assert list(first) == sorted(first)  # ids in order of first appearance
    truth, times = truth_of(points, 10, 60), [f / 10 for f in range(601)]
    assert score_points(stitched, truth, times).hota == pytest.approx(score_points(points, truth, times).hota)


def noisy_tracker(points, seed: int) -> list[Point]:
    """A tracker's output: 10% of positions missed, 15 px of noise, fragments (new ids), false tracks."""
    rng = random.Random(seed)
    out, ids, fresh = [], {}, 1000
    for p in sorted(points, key=lambda p: (p.time, p.id)):
        if rng.random() < 0.1:
            continue
        if p.id not in ids or rng.random() < 0.002:
            ids[p.id], fresh = fresh, fresh + 1
        x = min(SIZE[0], max(0.0, p.x + rng.gauss(0, 15)))
        y = min(SIZE[1], max(0.0, p.y + rng.gauss(0, 15)))
        out.append(Point(ids[p.id], x, y, time=p.time))
    out += [
        Point(5000 + f, rng.uniform(0, SIZE[0]), rng.uniform(0, SIZE[1]), time=f / 10)
        for f in range(0, 601, 7)
    ]
    return out


@pytest.mark.parametrize("seed", range(3))
def test_a_trackers_output_cut_into_windows_scores_as_uncut(seed):
    points = mot_scene(seed)
    tracker = noisy_tracker(points, seed)
    windows = cut(tracker, 60, window=10, overlap=2, seed=seed + 10)
    stitched = stitch_windows(windows, SIZE)
    assert same_up_to_renaming(tracker, stitched)
    truth, times = truth_of(points, 10, 60), [f / 10 for f in range(601)]
    uncut, joined = score_points(tracker, truth, times), score_points(stitched, truth, times)
    assert (joined.hota, joined.deta, joined.assa) == pytest.approx((uncut.hota, uncut.deta, uncut.assa))


def test_an_object_unseen_through_a_whole_overlap_gets_a_new_id_after_it():
    a = [Point(1, 100, 100, time=t / 10) for t in range(0, 40)] + [
        Point(1, 500, 100, time=t / 10) for t in range(70, 100)
    ]
    windows = cut(a, 10, window=6, overlap=1)  # overlap 5-6 s: the object is away from 4 s to 7 s
    assert {p.id for p in stitch_windows(windows, SIZE)} == {1, 2}


def two_windows(first, second, start=5.0, end=6.0, seconds=10.0):
    return [(0.0, end, first), (start, seconds, second)]


def test_an_object_seen_only_inside_an_overlap_is_one_object():
    times = [5.0, 5.25, 5.5]
    first = [Point(3, 400, 300 + 10 * k, time=t) for k, t in enumerate(times)] + [Point(1, 50, 50, time=1.0)]
    second = [Point(7, 400, 300 + 10 * k, time=t) for k, t in enumerate(times)] + [Point(2, 60, 60, time=9.0)]
    stitched = stitch(two_windows(first, second), SIZE)
    assert stitched.borders[0].pairs == ((3, 7, 0.0),)
    assert len(stitched.points) == 5 and len({p.id for p in stitched.points}) == 3


def test_an_object_that_leaves_and_comes_back_inside_a_window_keeps_its_id():
    first = [Point(1, 200, 200, time=t / 4) for t in range(0, 25)]  # to 6 s
    # window 2 (5-10 s): the object, then away from 6.5 to 8 s, then back far from where it went
    second = [Point(4, 200, 200, time=t / 4) for t in range(20, 26)] + [
        Point(4, 900, 700, time=t / 4) for t in range(32, 41)
    ]
    stitched = stitch_windows(two_windows(first, second), SIZE)
    assert {p.id for p in stitched} == {1}


def test_objects_crossing_inside_an_overlap_keep_their_ids():
    """Two objects swap sides inside the overlap; at the crossing they are at the same place."""

    def walker(oid, x0, vx, times):
        return [Point(oid, x0 + vx * (t - 5.5), 500.0, time=t) for t in times]

    times_a, times_b = [t / 10 for t in range(0, 61)], [t / 10 for t in range(50, 101)]
    first = walker(1, 960, 100, times_a) + walker(2, 960, -100, times_a)
    first = [p for p in first if 0 <= p.x <= SIZE[0]]
    second = walker(2, 960, 100, times_b) + walker(1, 960, -100, times_b)  # ids swapped by the second answer
    second = [p for p in second if 0 <= p.x <= SIZE[0]]
    stitched = stitch_windows(two_windows(first, second), SIZE)
    ends = {p.id: p.x for p in stitched if p.time == 10.0}
    starts = {p.id: p.x for p in stitched if p.time == 0.0}
    assert starts[1] < 960 < ends[1] and starts[2] > 960 > ends[2]  # each kept its direction


def test_two_answers_of_one_object_a_little_apart_are_joined_and_far_apart_are_not():
    diagonal = math.hypot(*SIZE)
    near = 0.8 * GATE_FRACTION * diagonal
    first = [Point(1, 500, 500, time=t) for t in (4.0, 5.0, 6.0)]
    close = [Point(1, 500 + near, 500, time=t) for t in (5.0, 6.0, 7.0)]
    far = [Point(1, 500 + 1.2 * GATE_FRACTION * diagonal, 500, time=t) for t in (5.0, 6.0, 7.0)]
    assert {p.id for p in stitch_windows(two_windows(first, close), SIZE)} == {1}
    assert {p.id for p in stitch_windows(two_windows(first, far), SIZE)} == {1, 2}
    # in the overlap each object has one point per time: that of the window owning the time
    joined = stitch_windows(two_windows(first, close), SIZE)
    assert [(p.time, p.x) for p in joined] == [(4.0, 500), (5.0, 500), (6.0, 500 + near), (7.0, 500 + near)]


def test_joining_is_deterministic_and_ignores_the_order_of_points():
    points = mot_scene(7)
    windows = cut(points, 60, window=10, overlap=2, seed=3)
    again = [(a, b, list(reversed(ps))) for a, b, ps in windows]
    assert stitch_windows(windows, SIZE) == stitch_windows(windows, SIZE) == stitch_windows(again, SIZE)


def test_bare_lists_of_points_and_empty_windows():
    points = mot_scene(1)
    windows = cut(points, 60, window=10, overlap=2, seed=1)
    bare = [ps for _, _, ps in windows]
    assert same_up_to_renaming(points, stitch_windows(bare, SIZE))
    with_empty = [[], bare[0], [], *bare[1:], []]
    assert len(stitch_windows([bare[0], [], bare[1]], SIZE)) > 0
    assert stitch_windows([[], []], SIZE) == []
    assert len(stitch_windows(with_empty[:2], SIZE)) == len(bare[0])


def disc(center, radius=40, size=(400, 300)):
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    return (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius**2


def test_masks_decide_the_join_where_both_windows_have_them():
    """Points that say the wrong thing (the second answer pointed at the other object's edge) and
    masks that say the right one: the masks win, and the border says so."""
    size = (400, 300)
    first = [Point(1, 100, 150, time=t) for t in (4.0, 5.0, 6.0)] + [
        Point(2, 300, 150, time=t) for t in (4.0, 5.0, 6.0)
    ]
    second = [Point(1, 290, 150, time=t) for t in (5.0, 6.0, 7.0)] + [
        Point(2, 110, 150, time=t) for t in (5.0, 6.0, 7.0)
    ]
    masks_a = {t: {1: disc((100, 150)), 2: disc((300, 150))} for t in (5.0, 6.0)}
    masks_b = {t: {1: disc((100, 150)), 2: disc((300, 150))} for t in (5.0, 6.0)}  # SAM 2's own ids
    by_points = stitch(two_windows(first, second), size)
    by_masks = stitch(two_windows(first, second), size, masks=[masks_a, masks_b])
    assert by_points.borders[0].rule == "point distance" and by_masks.borders[0].rule == "mask IoU"
    assert [(a, b) for a, b, _ in by_points.borders[0].pairs] == [(1, 2), (2, 1)]
    assert [(a, b) for a, b, _ in by_masks.borders[0].pairs] == [(1, 1), (2, 2)]
    assert "mask IoU" in str(by_masks.borders[0])


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ([(5.0, 10.0, []), (0.0, 6.0, [])], "out of order"),
        (
            [
                [Point(1, 5, 5, time=5.0), Point(1, 5, 5, time=9.0)],
                [Point(1, 5, 5, time=0.0), Point(1, 5, 5, time=6.0)],
            ],
            "out of order",
        ),
        ([[Point(1, 2000, 5, time=1.0)]], "outside the 1920x1080 video"),
        ([[Point(1, 5, -3, time=1.0)]], "outside"),
        ([(0.0, 6.0, [Point(1, 5, 5, time=7.0)])], "outside it"),
        ([[Point(1, 5, 5)]], "needs a video time"),
        ([[Point(1, 5, 5, time=-1.0)]], "needs a video time"),
        ([[(1, 5, 5, 1.0)]], "expected a Point"),
        ([(3.0, 1.0, [])], "start <= end"),
        ("windows", "list of windows"),
    ],
)
def test_bad_windows_are_refused_clearly(windows, message):
    with pytest.raises(ValueError, match=message):
        stitch_windows(windows, SIZE)


def test_a_bad_size_is_refused():
    with pytest.raises(ValueError, match="width, height"):
        stitch_windows([], (0, 10))


# ---------------------------------------------------------------------------------------------
# Windows


def test_plan_windows_fits_the_frame_budget_and_the_gpu():
    plan = plan_windows(1200.0)
    assert plan.frames <= 384 and plan.windows[0] == (0.0, plan.window_seconds)
    assert plan.windows[-1][1] == 1200.0
    for (_, a1), (b0, _) in zip(plan.windows, plan.windows[1:], strict=False):
        assert b0 == pytest.approx(a1 - plan.overlap_seconds) and b0 * plan.fps == pytest.approx(
            round(b0 * plan.fps)
        )
    t4 = plan_windows(1200.0, config="allenai/Molmo2-4B", budget_gb=14.76, precision="fp16")
    assert t4.window_seconds < plan.window_seconds and t4.estimate_gb <= 14.76 and "GiB" in t4.reason
    with pytest.warns(UserWarning, match="more than 14.8 GiB"):
        longer = plan_windows(1200.0, config="allenai/Molmo2-4B", budget_gb=14.76, precision="fp16",
                              window_seconds=t4.window_seconds + 10)  # fmt: skip
    assert longer.estimate_gb > 14.76 and "out-of-memory" in longer.reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_seconds": 2, "overlap_seconds": 2}, "overlap_seconds=2 is not shorter"),
        ({"window_seconds": 2, "overlap_seconds": 3}, "not shorter"),
        ({"window_seconds": 100, "fps": 8}, "more than max_frames=384"),
        ({"fps": 0}, "fps"),
        ({"overlap_seconds": -1}, "overlap_seconds"),
    ],
)
def test_plan_windows_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_windows(60.0, **kwargs)


def test_a_windows_frames_are_its_slice_of_the_whole_videos_frames_in_its_own_time():
    whole = plan_frames(VIDEO, 10**9, 8)
    assert whole == sample_frames(VIDEO, fps=8).plan  # the package's one rule
    local = window_frames(whole, 1.5, 3.5)
    assert local.times[0] == 0.0 and local.times[-1] == 2.0 and len(local.times) == 17
    assert local.indices == whole.indices[12:29]


# ---------------------------------------------------------------------------------------------
# A whole run, with worked answers standing in for the model


class WorkedAnswers:
    """Stands in for ``chat``: each window's answer written from the truth, ids shuffled per window."""

    def __init__(self, kill_at: int | None = None):
        self.asked: list[tuple[float, ...]] = []
        self.kill_at = kill_at

    def __call__(self, model, processor, messages, **kwargs):
        frames = messages[0]["content"][0]["video"]
        self.asked.append(tuple(frames.indices))
        if self.kill_at is not None and len(self.asked) == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # as a crash or a lost Colab runtime would
        truth = TRUTH.at_plan(frames.plan)
        rng = random.Random(frames.indices[0])
        ids = sorted({p.id for p in truth})
        new = dict(zip(ids, rng.sample(range(1, len(ids) + 1), len(ids)), strict=True))
        points = sorted(
            (Point(new[p.id], p.x, p.y, time=p.time) for p in truth), key=lambda p: (p.time, p.id)
        )
        text = (
            format_points(points, frames.size, label="coins", tag="tracks") if points else "There are none."
        )
        return Answer(text, videos=[frames])


def run(tmp_path, ask, **kwargs):
    return track_video(object(), None, VIDEO, "Track the coins.", window_seconds=1.5, overlap_seconds=0.5,
                       results_path=tmp_path / "windows.jsonl", progress=False, ask=ask, **kwargs)  # fmt: skip


def test_track_video_joins_worked_answers_into_the_true_tracks(tmp_path):
    ask = WorkedAnswers()
    answer = run(tmp_path, ask)
    assert isinstance(answer, LongVideoAnswer)
    assert len(answer.windows) == len(answer.window_plan) == len(ask.asked) == 4
    one_answer = TRUTH.at_plan(answer.plan)  # what one answer over the whole clip would say
    assert same_up_to_renaming(one_answer, answer.tracks())
    assert answer.count == 3
    whole = score_points(answer.tracks(), TRUTH, answer.plan)
    assert (
        whole.hota == pytest.approx(score_points(one_answer, TRUTH, answer.plan).hota) == pytest.approx(1.0)
    )
    # each window's own ids, left unjoined, lose the identities: what joining fixes
    unjoined = [
        Point(10 * k + p.id, p.x, p.y, time=p.time) for k, w in enumerate(answer.window_tracks()) for p in w
    ]
    unjoined = list({(p.time, round(p.x, 3)): p for p in unjoined}.values())
    assert score_points(unjoined, TRUTH, answer.plan).assa < whole.assa
    assert "3 objects" in str(answer) and "border 1" in str(answer)
    assert answer.window_answer(1).video.plan.times[0] == 0.0
    plot_windows(answer.window_plan, answer.tracks())
    plot_windows(answer.window_plan, answer.window_tracks())


def test_a_finished_run_asks_nothing_again_and_other_settings_are_not_mixed_in(tmp_path):
    first = run(tmp_path, WorkedAnswers())
    again = WorkedAnswers()
    assert run(tmp_path, again).tracks() == first.tracks() and again.asked == []
    with pytest.raises(ValueError, match="other settings"):
        track_video(object(), None, VIDEO, "Track the cups.", window_seconds=1.5, overlap_seconds=0.5,
                    results_path=tmp_path / "windows.jsonl", progress=False, ask=WorkedAnswers())  # fmt: skip


def test_a_constrained_run_asks_each_window_so_and_is_not_mixed_with_a_free_one(tmp_path):
    seen: list[dict] = []

    class Recording(WorkedAnswers):
        def __call__(self, model, processor, messages, **kwargs):
            seen.append(kwargs)
            return super().__call__(model, processor, messages, **kwargs)

    constrained = run(tmp_path, Recording(), constrain="tracks")
    assert len(seen) == 4 and all(k["constrain"] == "tracks" for k in seen)
    assert constrained.count == 3
    with pytest.raises(ValueError, match="other settings"):
        run(tmp_path, WorkedAnswers())  # the same file, asked without the constraint


def test_a_kill_during_a_long_run_and_a_resume_lose_and_duplicate_nothing(tmp_path):
    child = (
        "import sys; from pathlib import Path; "
        f"sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "import test_long_video as t; "
        f"t.run(Path({str(tmp_path)!r}), t.WorkedAnswers(kill_at=3))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    path = tmp_path / "windows.jsonl"
    assert len(path.read_bytes().splitlines()) == 2  # windows 1 and 2 were saved before the kill
    with path.open("ab") as f:  # and a line cut off mid-write, as a kill while writing leaves
        f.write(b'{"key": "window 1.000-2.500 s", "kind": "vid')
    resumed = WorkedAnswers()
    answer = run(tmp_path, resumed)
    assert len(resumed.asked) == 2  # windows 3 and 4 only
    keys = [json.loads(line)["key"] for line in path.read_bytes().splitlines()]
    assert len(keys) == len(set(keys)) == 4
    (tmp_path / "fresh").mkdir()
    assert answer.tracks() == run(tmp_path / "fresh", WorkedAnswers()).tracks()


def test_track_video_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="not shorter"):
        track_video(object(), None, VIDEO, "Track the coins.", window_seconds=1.0, overlap_seconds=1.0,
                    progress=False, results_path=tmp_path / "x.jsonl", ask=WorkedAnswers())  # fmt: skip
    with pytest.raises(ValueError, match="prompt"):
        track_video(object(), None, VIDEO, "", results_path=tmp_path / "x.jsonl", ask=WorkedAnswers())
    with pytest.raises(FileNotFoundError):
        track_video(object(), None, tmp_path / "missing.mp4", "Track.", results_path=tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_track_video_on_the_tiny_model(tiny_model, tmp_path):
    model, processor = tiny_model
    answer = track_video(model, processor, VIDEO, "Track the coins.", window_seconds=2.0, overlap_seconds=0.5,
                         max_new_tokens=32, results_path=tmp_path / "tiny.jsonl", progress=False)  # fmt: skip
    assert len(answer.windows) == 3 and all(r.error is None for r in answer.windows)
    assert answer.plan.indices == plan_frames(VIDEO, 10**9, 8).indices
    assert answer.count == len({p.id for p in answer.tracks()})
    assert answer.window_plan.estimate_gb is not None  # the memory planner read the model's config


def test_with_sam2_masks_decide_the_joins_and_the_answer_says_so(tmp_path):
    sam, sam_processor = load_segmenter("tiny")  # its masks are noise: this checks the plumbing
    answer = run(tmp_path, WorkedAnswers(), segmenter=(sam, sam_processor))
    assert [b.rule for b in answer.stitched.borders] == ["mask IoU"] * 3
    assert "by mask IoU" in str(answer)
