"""Scores as Molmo2's evaluation computes them: point in mask, counts, HOTA by TrackEval.

The reference rule below is written from the description of allenai/molmo2's ``PointingEval``
(``olmo/eval/evaluators.py``): optimal assignment on distance, a matched prediction counts if its
rounded point is inside the matched object's mask; precision = hits / predicted, recall = hits /
true, F1 = 2PR / (P + R); no true objects: 1.0 if nothing predicted, else 0.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import trackeval
from PIL import Image
from pycocotools import mask as coco_mask
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from molmo_nb_utils import load_dataset, results_from_answers, score_results, score_table
from molmo_nb_utils.evaluation import (
    DISTANCE_RULE,
    MASK_RULE,
    GroundTruth,
    count_scores,
    hota_scores,
    load_ground_truth,
    mask_point_scores,
    point_scores,
    score_points,
)
from molmo_nb_utils.grounding import Point, format_points
from molmo_nb_utils.masks import Mask, mask_from_coco
from molmo_nb_utils.media import FramePlan
from molmo_nb_utils.paths import INPUT_DIR

SIZE = (200, 120)  # width, height
# An L: a 10 px wide bar along the top and one down the left side. Its box's centre (100, 60) is
# far outside it; its far corner (195, 5) is inside.
L_SHAPE = [[0, 0, 200, 0, 200, 10, 10, 10, 10, 120, 0, 120]]


def reference(predicted, truth, masks, size):
    """Precision, recall, F1 of one image by the rule in this file's docstring."""
    if not truth:
        score = float(not predicted)
        return score, score, score
    if not predicted:
        return 0.0, 0.0, 0.0
    rows, cols = linear_sum_assignment(cdist(predicted, truth))
    hits = 0
    for i, j in zip(rows, cols, strict=True):
        x, y = (int(round(v)) for v in predicted[i])
        pixels = masks[j]
        hits += bool(0 <= x < size[0] and 0 <= y < size[1] and pixels[y, x])
    p, r = hits / len(predicted), hits / len(truth)
    return p, r, (2 * p * r / (p + r) if p and r else 0.0)


def pts(*xy, image=1):
    return [Point(k, float(x), float(y), image=image) for k, (x, y) in enumerate(xy, start=1)]


# --- the in-mask rule, by hand ----------------------------------------------------------------


def test_a_point_near_a_thin_objects_centre_but_outside_it_misses():
    l_mask = mask_from_coco(L_SHAPE)
    truth = pts((5, 60))  # the true point, on the left bar
    score = mask_point_scores(pts((100, 60)), truth, [l_mask], SIZE)  # the box's centre: outside the L
    assert (score.tp, score.fp, score.fn, score.f1, score.rule) == (0, 1, 1, 0.0, MASK_RULE)


def test_a_point_inside_but_far_from_the_centre_hits():
    l_mask = mask_from_coco(L_SHAPE)
    truth = pts((5, 60))
    score = mask_point_scores(pts((195, 5)), truth, [l_mask], SIZE)  # 197 px away, inside the top bar
    assert (score.tp, score.precision, score.recall, score.f1) == (1, 1.0, 1.0, 1.0)
    far = point_scores(pts((195, 5)), truth, 20.0)  # the distance rule says the opposite
    assert (far.tp, far.rule) == (0, DISTANCE_RULE)


def test_no_truth_and_no_prediction():
    square = mask_from_coco([[10, 10, 30, 10, 30, 30, 10, 30]])
    nothing = mask_point_scores([], [], [], SIZE)
    assert (nothing.precision, nothing.recall, nothing.f1) == (1.0, 1.0, 1.0)
    extra = mask_point_scores(pts((20, 20)), [], [], SIZE)
    assert (extra.precision, extra.recall, extra.f1) == (0.0, 0.0, 0.0)
    missed = mask_point_scores([], pts((20, 20)), [square], SIZE)
    assert (missed.precision, missed.recall, missed.f1) == (0.0, 0.0, 0.0)


def test_pairs_are_made_on_distance_before_the_mask_test():
    # Two long bars side by side; both predictions lie in bar B, one of them near A's true point.
    bar_a = mask_from_coco([[0, 0, 20, 0, 20, 120, 0, 120]])
    bar_b = mask_from_coco([[21, 0, 200, 0, 200, 120, 21, 120]])
    truth = pts((10, 60), (190, 60))
    predicted = pts((25, 60), (100, 60))  # (25, 60) pairs with A's point (15 px) but lies in B
    score = mask_point_scores(predicted, truth, [bar_a, bar_b], SIZE)
    assert (score.tp, score.fp, score.fn) == (1, 1, 1)  # only (100, 60) -> B counts
    assert (score.precision, score.recall, score.f1) == (0.5, 0.5, 0.5)


def test_points_are_rounded_to_the_nearest_pixel():
    pixels = np.zeros((SIZE[1], SIZE[0]), dtype=np.uint8)
    pixels[50, 10] = 1  # one pixel: column 10, row 50
    one = mask_from_coco(
        {"size": [SIZE[1], SIZE[0]], "counts": coco_mask.encode(np.asfortranarray(pixels))["counts"].decode()}
    )
    assert one.contains(10.4, 49.6, SIZE) and not one.contains(10.6, 50.0, SIZE)
    assert not mask_from_coco(L_SHAPE).contains(-1, 5, SIZE)


@pytest.mark.parametrize("seed", range(8))
def test_mask_scores_equal_the_reference_rule_on_random_cases(seed):
    rng = random.Random(seed)
    discs, truth = [], []
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    for _ in range(rng.randint(0, 5)):
        cx, cy, r = rng.uniform(10, 190), rng.uniform(10, 110), rng.uniform(3, 25)
        truth.append((cx, cy))
        discs.append(((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.uint8))
    predicted = [(rng.uniform(-5, 205), rng.uniform(-5, 125)) for _ in range(rng.randint(0, 6))]
    masks = [
        mask_from_coco(
            {"size": [SIZE[1], SIZE[0]], "counts": coco_mask.encode(np.asfortranarray(d))["counts"]}
        )
        for d in discs
    ]
    score = mask_point_scores(pts(*predicted), pts(*truth), masks, SIZE)
    expected = reference(predicted, truth, [d.astype(bool) for d in discs], SIZE)
    assert (score.precision, score.recall, score.f1) == pytest.approx(expected)


# --- masks: COCO polygons and RLE ---------------------------------------------------------------


def _runs(pixels: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE: run lengths of 0s and 1s, column by column, starting with 0s."""
    flat = pixels.flatten(order="F")
    runs, current, length = [], 0, 0
    for value in flat:
        if value != current:
            runs.append(length)
            current, length = value, 0
        length += 1
    return [*runs, length]


def test_polygons_and_rle_compressed_or_not_decode_to_the_same_mask():
    polygon = mask_from_coco(L_SHAPE)
    pixels = polygon.decode(SIZE)
    assert pixels.shape == (SIZE[1], SIZE[0]) and pixels.dtype == bool
    assert pixels[5, 195] and pixels[60, 5] and not pixels[60, 100]
    compressed = coco_mask.encode(np.asfortranarray(pixels.astype(np.uint8)))
    as_bytes = mask_from_coco({"size": [SIZE[1], SIZE[0]], "counts": compressed["counts"]})
    as_text = mask_from_coco({"size": [SIZE[1], SIZE[0]], "counts": compressed["counts"].decode()})
    uncompressed = mask_from_coco({"size": [SIZE[1], SIZE[0]], "counts": _runs(pixels)})
    for mask in (as_bytes, as_text, uncompressed):
        assert np.array_equal(mask.decode(SIZE), pixels)
    assert as_bytes == as_text == uncompressed  # one compact form, whatever the input's


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"size": [120, 200], "counts": [5, 3]}, "add up to 8 pixels"),
        ({"size": [200], "counts": "abc"}, r"\[height, width\]"),
        ([[0, 0, 10, 10]], "3 corners"),
        ("not a mask", "COCO polygons"),
        ({"counts": [1]}, "RLE mask is"),
    ],
)
def test_bad_masks_say_what_a_mask_is(value, message):
    with pytest.raises(ValueError, match=message):
        mask_from_coco(value)


def test_an_rle_mask_of_another_size_is_refused():
    mask = mask_from_coco({"size": [10, 20], "counts": [200]})
    with pytest.raises(ValueError, match="20x10 picture, not 200x120"):
        mask.decode(SIZE)


# --- datasets with masks -----------------------------------------------------------------------


def _picture(tmp_path, name="a.png"):
    Image.new("RGB", SIZE, "white").save(tmp_path / name)
    return name


def test_points_with_polygon_masks_are_scored_by_the_in_mask_rule(tmp_path):
    name = _picture(tmp_path)
    square = [[120, 60, 160, 60, 160, 100, 120, 100]]
    listing = [
        {
            "file": name,
            "label": "thing",
            "points": [{"x": 5, "y": 60, "mask": L_SHAPE}, {"x": 140, "y": 80, "mask": square}],
        }
    ]
    (tmp_path / "list.json").write_text(json.dumps(listing))
    (item,) = load_dataset(tmp_path / "list.json")
    assert item.count == 2 and len(item.masks) == 2
    # (195, 6) is inside the L but 190 px from its true point; (100, 60) is outside everything but
    # 95 px from it: the assignment on distance pairs the L's point with (100, 60), a miss.
    answer = format_points(pts((195, 6), (100, 60), (141, 79)), [SIZE], label="thing")
    (result,) = results_from_answers([item], {item.key: answer})
    (scored,) = score_results([item], [result]).items
    expected = reference(
        [(p.x, p.y) for p in result.points], [(5, 60), (140, 80)], [m.decode(SIZE) for m in item.masks], SIZE
    )
    assert scored.rule == MASK_RULE
    assert (scored.points.precision, scored.points.recall, scored.points.f1) == pytest.approx(expected)
    assert expected == pytest.approx((1 / 3, 1 / 2, 0.4))  # 1 hit of 3 predicted, of 2 true
    by_distance = score_results([item], [result], rule="distance").items[0]
    assert by_distance.rule == DISTANCE_RULE and by_distance.points.tp == 1  # only (141, 79) is near
    table = score_table([scored])
    assert "in the object's mask (Molmo2's rule)" in table and "rule: in mask" in str(scored.points)


def test_a_mask_on_some_points_only_is_refused(tmp_path):
    name = _picture(tmp_path)
    listing = [{"file": name, "points": [{"x": 5, "y": 60, "mask": L_SHAPE}, {"x": 140, "y": 80}]}]
    (tmp_path / "list.json").write_text(json.dumps(listing))
    with pytest.raises(ValueError, match=r"points \[2\] have no 'mask'"):
        load_dataset(tmp_path / "list.json")


def test_an_rle_mask_of_another_size_than_the_picture_is_refused_at_loading(tmp_path):
    name = _picture(tmp_path)
    listing = [{"file": name, "points": [{"x": 5, "y": 5, "mask": {"size": [10, 20], "counts": [200]}}]}]
    (tmp_path / "list.json").write_text(json.dumps(listing))
    with pytest.raises(ValueError, match="20x10 picture, but the picture is 200x120"):
        load_dataset(tmp_path / "list.json")


def _coco(tmp_path) -> dict:
    names = [_picture(tmp_path, "a.png"), _picture(tmp_path, "b.png"), _picture(tmp_path, "c.png")]
    pixels = mask_from_coco([[120, 60, 160, 60, 160, 100, 120, 100]]).decode(SIZE)
    rle = coco_mask.encode(np.asfortranarray(pixels.astype(np.uint8)))
    return {
        "images": [{"id": k + 1, "file_name": n, "width": SIZE[0], "height": SIZE[1]} for k, n in enumerate(names)],
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": L_SHAPE, "bbox": [0, 0, 200, 120], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [120, 60, 40, 40], "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [120, 60, 40, 40],
             "segmentation": {"size": [SIZE[1], SIZE[0]], "counts": rle["counts"].decode()}},
            {"id": 13, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 9, 9],
             "segmentation": {"size": [SIZE[1], SIZE[0]], "counts": _runs(pixels)}},
            {"id": 14, "image_id": 3, "category_id": 2, "segmentation": L_SHAPE, "bbox": [0, 0, 200, 120], "iscrowd": 0},
        ],
    }  # fmt: skip


def test_a_coco_instances_file_loads_as_a_dataset_with_masks(tmp_path):
    (tmp_path / "instances.json").write_text(json.dumps(_coco(tmp_path)))
    with pytest.raises(ValueError, match=r"2 categories \(other, thing\).*label='<category name>'"):
        load_dataset(tmp_path / "instances.json")
    with pytest.warns(UserWarning) as caught:
        items = load_dataset(tmp_path / "instances.json", label="thing")
    said = " ".join(str(w.message) for w in caught)
    assert "1 'thing' annotation(s) have no segmentation" in said and "1 crowd annotation(s)" in said
    assert [(i.key, i.label, i.count, len(i.masks or ())) for i in items] == [
        ("a.png", "thing", 2, 2),
        ("b.png", "thing", 1, 1),
        ("c.png", "thing", 0, 0),
    ]
    l_point, box_point = items[0].points
    assert items[0].masks[0].contains(l_point.x, l_point.y, SIZE)  # the true point lies inside the L
    assert (box_point.x, box_point.y) == pytest.approx((140, 80), abs=1)  # the box's deepest pixel
    assert np.array_equal(items[0].masks[1].decode(SIZE), items[1].masks[0].decode(SIZE))  # box = RLE square
    answers = {
        "a.png": "There are none.",
        "b.png": format_points(pts((141, 81)), [SIZE]),
        "c.png": "There are none.",
    }
    score = score_results(items, results_from_answers(items, answers))
    assert [(s.points.precision, s.points.f1) for s in score.items] == [(0.0, 0.0), (1.0, 1.0), (1.0, 1.0)]
    assert score.image_points.rule == MASK_RULE and "Molmo2's rule" in str(score)


# --- counting ---------------------------------------------------------------------------------


def test_counts_exact_within_one_and_valid_as_molmo2_reports_them():
    score = count_scores([3, 5, None, 22, 1], [3, 4, 2, 20, 1])
    assert (score.n, score.exact, score.within_one, score.valid) == (5, 2, 3, 4)
    assert score.by_true_count == ((1, 1, 1), (2, 0, 1), (3, 1, 1), (4, 0, 1), (20, 0, 1))
    assert score.mean_abs_error == pytest.approx(3 / 4)  # over the valid answers: 0 + 1 + 2 + 0
    assert "close (within one) 60%, valid 80%" in str(score)


# --- HOTA by TrackEval ------------------------------------------------------------------------


def _trackeval(frames):
    """TrackEval's HOTA, DetA, AssA straight from its own class (ids numbered 0.. by hand)."""
    gt_ids = sorted({i for g, _, _ in frames for i in g})
    tr_ids = sorted({i for _, t, _ in frames for i in t})
    data = {
        "num_timesteps": len(frames),
        "num_gt_ids": len(gt_ids),
        "num_tracker_ids": len(tr_ids),
        "gt_ids": [np.array([gt_ids.index(i) for i in g], dtype=int) for g, _, _ in frames],
        "tracker_ids": [np.array([tr_ids.index(i) for i in t], dtype=int) for _, t, _ in frames],
        "similarity_scores": [np.array(s, dtype=float).reshape(len(g), len(t)) for g, t, s in frames],
        "num_gt_dets": sum(len(g) for g, _, _ in frames),
        "num_tracker_dets": sum(len(t) for _, t, _ in frames),
    }
    res = trackeval.metrics.HOTA().eval_sequence(data)
    return float(res["HOTA"].mean()), float(res["DetA"].mean()), float(res["AssA"].mean())


def _two_coins(masked: bool) -> GroundTruth:
    """Coin 1 at (100, 100), coin 2 at (300, 100), 30 px squares, on frames 0..5 at 1 fps."""
    points = [Point(oid, x, 100.0, time=float(t)) for t in range(6) for oid, x in [(1, 100.0), (2, 300.0)]]
    masks = {}
    if masked:
        for p in points:
            x0, y0 = p.x - 15, p.y - 15
            masks[(int(p.time), p.id)] = mask_from_coco(
                [[x0, y0, x0 + 30, y0, x0 + 30, y0 + 30, x0, y0 + 30]]
            )
    return GroundTruth(points, 1.0, 640, 360, 6, masks)


def _similarity_frames(predicted, truth, inside):
    frames = []
    for t in range(6):
        true_here = [p for p in truth.points if p.time == t]
        guesses = [p for p in predicted if p.time == t]
        sim = [[float(inside(g, o, t)) for g in guesses] for o in true_here]
        frames.append(([o.id for o in true_here], [g.id for g in guesses], sim))
    return frames


CASES = {
    "id swap": lambda t, oid, x: (oid if t < 3 else 3 - oid, x + 4),
    "dropped object": lambda t, oid, x: None if oid == 2 else (oid, x),
    "extra points": lambda t, oid, x: (oid, x - 12),
}


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_hota_equals_trackevals_own(case, masked):
    truth = _two_coins(masked)
    predicted = []
    for p in truth.points:
        made = CASES[case](int(p.time), p.id, p.x)
        if made is not None:
            predicted.append(Point(made[0], made[1], 100.0, time=p.time))
    if case == "extra points":
        predicted += [Point(7, 500.0, 300.0, time=float(t)) for t in range(0, 6, 2)]
        predicted += [Point(8, 300.0, 140.0, time=float(t)) for t in range(6)]  # 40 px below coin 2
    score = score_points(predicted, truth, [float(t) for t in range(6)], radius=36.0)

    def inside(g, o, t):
        if masked:
            return truth.masks[(t, o.id)].contains(g.x, g.y, (640, 360))
        return math.hypot(g.x - o.x, g.y - o.y) <= 36.0

    expected = _trackeval(_similarity_frames(predicted, truth, inside))
    assert (score.hota, score.deta, score.assa) == pytest.approx(expected)
    assert score.rule == (MASK_RULE if masked else DISTANCE_RULE)
    if case == "id swap":  # every position found; each object 3 of 6 frames per id: AssA 3 / (6 + 6 - 3)
        assert (score.deta, score.assa, score.hota) == pytest.approx((1.0, 1 / 3, math.sqrt(1 / 3)))
    if case == "dropped object":  # half the positions found, by one id throughout
        assert (score.deta, score.assa) == pytest.approx((0.5, 1.0))


def test_hota_scores_refuses_an_id_twice_in_a_frame():
    with pytest.raises(ValueError, match="twice in one frame"):
        hota_scores([([1], [2, 2], [[1.0, 1.0]])])


def _masked_truth(tmp_path):
    """moving_objects.json with each coin's disc (its diameter) as an RLE mask on every frame."""
    raw = json.loads((INPUT_DIR / "ground_truth" / "moving_objects.json").read_text())
    diameters = {o["id"]: o["diameter"] for o in raw["objects"]}
    yy, xx = np.mgrid[0 : raw["height"], 0 : raw["width"]]
    for frame in raw["frames"]:
        for o in frame["objects"]:
            disc = (xx - o["x"]) ** 2 + (yy - o["y"]) ** 2 <= (diameters[o["id"]] / 2) ** 2
            rle = coco_mask.encode(np.asfortranarray(disc.astype(np.uint8)))
            o["mask"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    path = tmp_path / "moving_objects_masks.json"
    path.write_text(json.dumps(raw))
    return path


def test_video_truth_with_masks_scores_tracks_by_the_in_mask_rule(tmp_path):
    truth_file = _masked_truth(tmp_path)
    truth = load_ground_truth(truth_file)
    assert truth.rule == MASK_RULE and len(truth.masks) == len(truth.points)
    (item,) = load_dataset(
        [
            {
                "file": str(INPUT_DIR / "moving_objects.mp4"),
                "truth": str(truth_file),
                "prompt": "Track the coins.",
            }
        ]
    )
    (probe,) = results_from_answers([item], {item.key: "There are none."})
    plan = probe.plan
    shown = truth.at_plan(plan)
    swapped = [
        Point(3 - p.id if p.id in (1, 2) and p.time >= 2 else p.id, p.x, p.y, time=p.time) for p in shown
    ]
    answer = format_points(swapped, plan.size, label="coins", tag="tracks")
    (result,) = results_from_answers([item], {item.key: answer})
    score = score_results([item], [result])
    tracks = score.items[0].tracks
    assert tracks.rule == MASK_RULE and score.items[0].rule == MASK_RULE
    direct = score_points(result.tracks, truth, plan)
    assert (tracks.hota, tracks.deta, tracks.assa) == (direct.hota, direct.deta, direct.assa)
    assert tracks.deta == pytest.approx(1.0) and tracks.assa < 1.0
    assert (score.hota, score.deta, score.assa) == (tracks.hota, tracks.deta, tracks.assa)
    assert "HOTA" in str(score) and tracks.id_consistency == pytest.approx(1 / 3)


def test_video_truth_with_masks_on_some_objects_only_is_refused(tmp_path):
    raw = json.loads(_masked_truth(tmp_path).read_text())
    del raw["frames"][3]["objects"][0]["mask"]
    path = tmp_path / "some.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="has no mask but others do"):
        load_ground_truth(path)


def test_at_plan_is_what_scores_read():
    truth = _two_coins(masked=True)
    plan = FramePlan((0.0, 1.0), (0, 1), (640, 360))
    assert [(p.id, p.time) for p in truth.at_plan(plan)] == [(1, 0.0), (2, 0.0), (1, 1.0), (2, 1.0)]
    assert isinstance(truth.mask_of(1, 2), Mask)


def test_a_list_of_rle_parts_is_one_mask_and_a_flat_polygon_is_one_polygon():
    left = mask_from_coco([[0, 0, 20, 0, 20, 120, 0, 120]]).decode(SIZE)
    right = mask_from_coco([0, 0, 20, 0, 20, 120, 0, 120]).decode(SIZE)  # flat: one polygon
    assert np.array_equal(left, right)
    bottom = np.zeros_like(left)
    bottom[100:, :] = True
    parts = [
        {
            "size": [SIZE[1], SIZE[0]],
            "counts": coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))["counts"],
        }
        for m in (left, bottom)
    ]
    assert np.array_equal(mask_from_coco(parts).decode(SIZE), left | bottom)


def test_the_dataset_score_says_its_rule_and_refuses_an_unknown_one(tmp_path):
    name = _picture(tmp_path)
    listing = [{"file": name, "points": [{"x": 5, "y": 60, "mask": L_SHAPE}]}]
    (tmp_path / "list.json").write_text(json.dumps(listing))
    items = load_dataset(tmp_path / "list.json")
    results = results_from_answers(items, {name: format_points(pts((195, 6)), [SIZE])})
    assert score_results(items, results).rule == MASK_RULE
    assert score_results(items, results, rule="distance").rule == DISTANCE_RULE
    with pytest.raises(ValueError, match="rule must be 'auto'"):
        score_results(items, results, rule="mask")


def test_a_coco_annotation_without_mask_or_box_is_named(tmp_path):
    data = _coco(tmp_path)
    data["annotations"] = [{"id": 99, "image_id": 1, "category_id": 1, "iscrowd": 0}]
    (tmp_path / "instances.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation 99 .*neither a 'segmentation' nor a 'bbox'"):
        load_dataset(tmp_path / "instances.json", label="thing")
