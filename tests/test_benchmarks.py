"""The paper's benchmarks: local copies in the Hub's exact layouts, loaded through the code that reads the
Hub's files, images served over HTTP from 127.0.0.1 (one URL dead, one image changed), and scores checked
against AllenAI's rules written out here from allenai/molmo2 ``olmo/eval/evaluators.py``:

* PointCountEval: the count is the number of points in the answer (the stated total is overridden);
* PointingEval: optimal assignment on distance, a hit when the point rounded to a pixel is in its
  object's mask; P = hits / predicted, R = hits / true; no true object: 1 if nothing predicted, else 0;
* PointBenchEval: at least one point and every point in the mask at (int(x), int(y)).
"""

from __future__ import annotations

import functools
import http.server
import json
import math
import random
import threading
import warnings
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from molmo_nb_utils import (
    BENCHMARKS,
    PAPER_SCORES,
    BenchmarkScore,
    draw_benchmark_item,
    draw_result,
    load_benchmark,
    make_sample_benchmarks,
    paper_table,
    results_from_answers,
    score_benchmark,
    score_results,
    worst_items,
)
from molmo_nb_utils.benchmarks import interval
from molmo_nb_utils.benchmarks.images import pick_member, zip_members
from molmo_nb_utils.benchmarks.scoring import ItemOutcome
from molmo_nb_utils.grounding import Point, format_points, parse_points

SIZE = (640, 360)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """The four local copies, their images served from 127.0.0.1 (one URL dead, one image changed)."""
    folder = tmp_path_factory.mktemp("benchmarks")
    (folder / "web").mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder / "web"))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield make_sample_benchmarks(folder, url_for=lambda rel: f"http://127.0.0.1:{port}/{rel}")
    finally:
        server.shutdown()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def load(name, copies, tmp_path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_benchmark(name, source=copies[name], cache_dir=tmp_path / "cache", **kwargs)


def text(points, size=SIZE, label="coins"):
    """An answer in Molmo2's format pointing at (x, y) pixels."""
    if not points:
        return "There are none."
    return format_points([Point(k, x, y, image=1) for k, (x, y) in enumerate(points, 1)], size, label)


# --- the files: exact layouts, read as the Hub's ---------------------------------------------------


def test_the_copies_have_the_hubs_file_names_and_columns(copies):
    assert sorted(p.name for p in (copies["countbench"] / "data").iterdir()) == [
        "test-00000-of-00001.parquet"
    ]
    count = pq.read_schema(copies["pixmo_count"] / "data" / "test-00000-of-00001.parquet")
    assert count.names == ["image_url", "image_sha256", "count", "points", "label"]
    assert count.field("points").type == pa.struct(
        [("x", pa.list_(pa.float32())), ("y", pa.list_(pa.float32()))]
    )
    points = pq.read_schema(copies["pixmo_points"] / "data" / "test-00000-of-00001.parquet")
    assert points.field("masks").type == pa.list_(pa.list_(pa.list_(pa.bool_())))
    bench = copies["point_bench"]
    assert {p.name for p in bench.iterdir()} == {"data.json", "selected_images.zip", "selected_masks.zip"}
    entry = json.loads((bench / "data.json").read_text())[0]
    assert set(entry) == {"image_filename", "mask_filename", "category", "user_input"}


def test_countbench_items_carry_the_image_question_and_count(copies, tmp_path):
    items = load("countbench", copies, tmp_path)
    assert [i.count for i in items] == [1, 3, 4, 6, 8, 24]
    assert {i.prompt for i in items} == {"How many coins are on the table?"}
    assert all(i.path.is_file() and i.kind == "image" for i in items)
    assert items.summary() == "6 of 6 items (the test split has 6)"


def test_pixmo_points_are_read_on_a_0_to_100_scale_and_masks_one_per_point(copies, tmp_path):
    items = load("pixmo_points", copies, tmp_path)
    three = items[1]  # table_03: coins at (160, 108), (400, 198), (528, 288)
    assert [(round(p.x, 3), round(p.y, 3)) for p in three.points] == [(160, 108), (400, 198), (528, 288)]
    assert len(three.masks) == 3 and three.masks[0].contains(160, 108, SIZE)
    assert not three.masks[0].contains(400, 198, SIZE)
    assert items[0].points == () and items[0].count == 0  # no coin: an empty mask carries only the size
    assert items[3].label == "largest coin" and len(items[3].points) == 1
    assert items[2].path != items[3].path  # one URL asked twice: one file per row
    assert items[2].path.read_bytes() == items[3].path.read_bytes()
    assert "Please say 'There are none.'" in items[0].prompt and items[0].prompt.startswith("Point to coins")


def test_dead_and_changed_images_are_left_out_with_a_warning_and_nothing_half_written(copies, tmp_path):
    with pytest.warns(
        UserWarning, match=r"left out 2 of 8 items, whose image is gone \(1\) or changed \(1\)"
    ):
        items = load_benchmark("pixmo_count", source=copies["pixmo_count"], cache_dir=tmp_path / "cache")
    assert len(items) == 6 and [row for row, _ in items.left_out] == [6, 7]
    assert items.summary() == "6 of 8 items (2 left out: image gone or changed; the test split has 8)"
    assert "changed" in items.left_out[1][1] and "gone" in items.left_out[0][1]
    files = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert not [f for f in files if ".part" in f or f.endswith(".link")]
    assert not [f for f in files if f.startswith(("00006", "00007"))]  # no file for the rows left out
    assert [i.prompt for i in items][:1] == ["How many coins are there?"]
    # a second load comes from the cache: the same files, even with the server's files gone
    again = load("pixmo_count", copies, tmp_path)
    assert [i.path for i in again] == [i.path for i in items]


def test_point_bench_reads_categories_masks_and_skips_entries_without_a_mask(copies, tmp_path):
    items = load("point_bench", copies, tmp_path)
    assert [i.label for i in items] == ["affordable", "counting", "reasoning", "spatial", "steerable"]
    assert items.total == 5  # data.json's sixth entry has no mask_filename: skipped, as AllenAI does
    spatial = items[3]  # the leftmost coin of the top row of table_06, at (80, 99)
    assert spatial.masks[0].contains(80, 99, SIZE) and not spatial.masks[0].contains(224, 117, SIZE)


def test_zip_members_are_found_by_name_wherever_the_zip_puts_them(tmp_path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("deep/a/counting/img.jpg", b"1")
        z.writestr("deep/a/spatial/img.jpg", b"2")
        z.writestr("other/only.png", b"3")
        z.writestr("__MACOSX/other/._only.png", b"junk")
    with zipfile.ZipFile(path) as z:
        members = zip_members(z)
        assert z.read(pick_member(members, "img.jpg", "spatial", "x.zip")) == b"2"
        assert z.read(pick_member(members, "only.png", "counting", "x.zip")) == b"3"
        assert pick_member(members, "nope.jpg", "counting", "x.zip").startswith("gone")
        with pytest.raises(ValueError, match="several times"):
            pick_member(members, "img.jpg", "steerable", "x.zip")


def test_a_limit_takes_the_same_evenly_spread_rows_every_time(copies, tmp_path):
    first = load("countbench", copies, tmp_path, limit=3)
    again = load("countbench", copies, tmp_path, limit=3)
    assert (
        [i.key for i in first]
        == [i.key for i in again]
        == [
            "countbench/test/00000.jpg",
            "countbench/test/00002.jpg",
            "countbench/test/00004.jpg",
        ]
    )
    assert first.sampled == 3 and first.total == 6


# --- the scores, by hand ---------------------------------------------------------------------------


def test_the_count_is_the_number_of_points_whatever_total_the_answer_states(copies, tmp_path):
    items = load("countbench", copies, tmp_path)[:3]  # true counts 1, 3, 4
    answers = [
        "There are none.",  # 0 for 1: wrong, close
        f"Counting the {text([(10, 10), (20, 20), (30, 30)])[:-9]}</points> shows a total of 5.",  # 3 points: right
        text([(10, 10), (20, 20)]),  # 2 for 4: wrong, not close
    ]
    score = score_benchmark("countbench", items, answers)
    assert dict(score) == {"correct": 1 / 3, "close": 2 / 3, "valid": 1.0, "n": 3}
    assert [o.predicted_count for o in score.outcomes] == [0, 3, 2]


def test_points_repeating_one_id_all_count_as_allenais_extract_points_does(copies, tmp_path):
    item = load("countbench", copies, tmp_path)[1]  # 3 coins
    answer = '<points coords="1 1 100 100 1 200 200 2 300 300">coins</points>'  # ids 1, 1, 2: three points
    assert score_benchmark("countbench", [item], [answer])["correct"] == 1.0


def test_a_failed_item_is_wrong_and_not_valid(copies, tmp_path):
    items = load("pixmo_count", copies, tmp_path)[:2]  # 0 and 1 coins
    score = score_benchmark("pixmo_count", items, [None, "There are none."])
    assert dict(score) == {"correct": 0.0, "close": 0.5, "valid": 0.5, "n": 2}


def edge_pixel(mask):
    """(column, row) of a pixel inside ``mask`` whose right neighbour is outside."""
    rows, cols = np.nonzero(mask[:, :-1] & ~mask[:, 1:])
    return int(cols[0]), int(rows[0])


def test_pointing_by_hand_an_edge_point_no_truth_and_a_repeated_url(copies, tmp_path):
    items = load("pixmo_points", copies, tmp_path)
    empty, three, four, largest = items
    # on table_03, a point on each of the first two coins and one far from all: P 2/3, R 2/3, F1 2/3
    answers = [
        "There are none.",  # no true object, nothing given: 1
        text([(160, 108), (400, 198), (20, 340)]),
        text([(10, 10)]),  # one point, far from table_04's four coins: 0
        text([(448, 117)]),  # the largest coin of table_04: 1
    ]
    score = score_benchmark("pixmo_points", items, answers)
    assert score["n"] == 4
    assert score["precision"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    assert score["recall"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    assert score["f1"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    # a point given where there is nothing to find scores 0
    assert score_benchmark("pixmo_points", [empty], [text([(300, 200)])])["f1"] == 0.0


def test_a_point_on_the_masks_edge_counts_as_rounded_to_a_pixel(copies, tmp_path):
    item = load("pixmo_points", copies, tmp_path)[3]  # the largest coin of table_04, one mask
    mask = item.masks[0].decode(SIZE)
    column, row = edge_pixel(mask)
    # Molmo2 writes 0..1000; find an x on that row that rounds to the inside edge pixel, and one past it
    inside = next(c for c in range(1001) if round(c / 1000 * 640) == column)
    outside = next(c for c in range(1001) if round(c / 1000 * 640) == column + 1)
    y = round((row + 0.5) / 360 * 1000)
    assert round(y / 1000 * 360) == row
    hit = f'<points coords="1 1 {inside:03d} {y:03d}">coin</points>'
    miss = f'<points coords="1 1 {outside:03d} {y:03d}">coin</points>'
    assert score_benchmark("pixmo_points", [item], [hit])["f1"] == 1.0
    assert score_benchmark("pixmo_points", [item], [miss])["f1"] == 0.0


def test_point_bench_needs_every_point_in_the_mask_and_at_least_one(copies, tmp_path):
    items = load("point_bench", copies, tmp_path)
    affordable, counting, reasoning, spatial, steerable = items
    answers = [
        text([(80, 72), (208, 216)]),  # two coins of table_05, both in the all-coins mask: pass
        text([(80, 72), (5, 5)]),  # one point outside: fail
        "There are none.",  # no point: fail
        text([(80, 99)]),  # the right coin: pass
        text([(320, 180)]),  # table_02's coin: pass
    ]
    score = score_benchmark("point_bench", items, answers)
    expected = {"affordable": 1.0, "counting": 0.0, "reasoning": 0.0, "spatial": 1.0, "steerable": 1.0}
    assert score == {**expected, "average": 0.6, "n": 5}  # a mapping, compared as one


def test_point_bench_truncates_to_a_pixel_where_pointing_rounds(copies, tmp_path):
    spatial = load("point_bench", copies, tmp_path)[3]
    mask = spatial.masks[0].decode(SIZE)
    column, row = edge_pixel(mask)
    # an x whose pixel by truncation (int) is the inside edge pixel, but which rounds to the one outside
    c = next(c for c in range(1001) if int(c / 1000 * 640) == column and round(c / 1000 * 640) == column + 1)
    y = next(v for v in range(1001) if int(v / 1000 * 360) == row)
    answer = f'<points coords="1 1 {c:03d} {y:03d}">coin</points>'
    with pytest.warns(UserWarning, match="no items of"):  # one category alone
        assert score_benchmark("point_bench", [spatial], [answer])["spatial"] == 1.0


def test_a_missing_category_is_nan_with_a_warning(copies, tmp_path):
    items = load("point_bench", copies, tmp_path)[:2]
    with pytest.warns(UserWarning, match="no items of reasoning, spatial, steerable"):
        score = score_benchmark("point_bench", items, ["There are none."] * 2)
    assert math.isnan(score["average"]) and score["affordable"] == 0.0


# --- against AllenAI's rules on random answers -----------------------------------------------------


def allenai_pointing(predicted, truth, masks):
    """PointingEval for one image (evaluators.py), masks as (H, W) bool arrays."""
    if not truth:
        v = float(not predicted)
        return v, v, v
    if not predicted:
        return 0.0, 0.0, 0.0
    rows, cols = linear_sum_assignment(cdist(predicted, truth))
    hits = 0
    for i, j in zip(rows, cols, strict=True):
        x, y = int(round(predicted[i][0])), int(round(predicted[i][1]))
        h, w = masks[j].shape
        hits += bool(0 <= x < w and 0 <= y < h and masks[j][y, x])
    p, r = hits / len(predicted), hits / len(masks)
    return p, r, (0.0 if p == 0 or r == 0 else 2 * p * r / (p + r + 1e-10))


@pytest.mark.parametrize("seed", range(5))
def test_pointing_equals_allenais_rule_on_random_answers(copies, tmp_path, seed):
    items = load("pixmo_points", copies, tmp_path)
    rng = random.Random(seed)
    answers, expected = [], []
    for item in items:
        truth = [(p.x, p.y) for p in item.points]
        guesses = [
            (x + rng.uniform(-40, 40), y + rng.uniform(-40, 40)) for x, y in truth if rng.random() < 0.8
        ]
        guesses += [(rng.uniform(0, 639), rng.uniform(0, 359)) for _ in range(rng.randint(0, 2))]
        answer = text(guesses)
        answers.append(answer)
        read = [(p.x, p.y) for p in parse_points(answer, SIZE)]
        expected.append(allenai_pointing(read, truth, [m.decode(SIZE) for m in item.masks]))
    score = score_benchmark("pixmo_points", items, answers)
    for k, metric in enumerate(("precision", "recall", "f1")):
        assert score[metric] == pytest.approx(np.mean([e[k] for e in expected]), abs=1e-9)


# --- the runner's tools work on benchmark items unchanged -------------------------------------------


def test_score_results_draw_result_and_worst_items_work_on_benchmark_items(copies, tmp_path):
    items = load("pixmo_points", copies, tmp_path)
    answers = {i.key: text([(p.x + 3, p.y) for p in i.points]) for i in items}
    results = results_from_answers(items, answers)
    score = score_results(items, results)
    assert score.rule == "in mask" and score.mean_image_f1 == 1.0
    worst = worst_items(score, 1)
    assert draw_result(items[1], results[1]).size[0] == 640
    assert score_benchmark("pixmo_points", items, results)["f1"] == 1.0  # ItemResults, matched by key
    assert worst and draw_benchmark_item(items[1], results[1]).size[0] == 640
    bench = load("point_bench", copies, tmp_path)
    assert draw_benchmark_item(bench[0]).size[0] == 640


# --- bad input -------------------------------------------------------------------------------------


def test_an_unknown_benchmark_or_split_is_named(copies):
    with pytest.raises(ValueError, match="unknown benchmark 'countbenc'.*countbench, pixmo_count"):
        load_benchmark("countbenc", source=copies["countbench"])
    with pytest.raises(ValueError, match="pixmo_count has no split 'train'.*test, validation"):
        load_benchmark("pixmo_count", "train", source=copies["pixmo_count"])


def test_a_source_missing_a_file_is_named(copies, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no data/test-\*\.parquet"):
        load_benchmark("countbench", source=tmp_path)
    partial = tmp_path / "bench"
    partial.mkdir()
    (partial / "data.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match="has no selected_images.zip, selected_masks.zip"):
        load_benchmark("point_bench", source=partial)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_benchmark("countbench", source=tmp_path / "nowhere")


def _rewrite(copies, tmp_path, name, change):
    """A copy of one benchmark's test parquet with ``change(rows)`` applied."""
    folder = tmp_path / name
    (folder / "data").mkdir(parents=True)
    table = pq.read_table(copies[name] / "data" / "test-00000-of-00001.parquet")
    rows = table.to_pylist()
    change(rows)
    pq.write_table(
        pa.Table.from_pylist(rows, schema=table.schema), folder / "data" / "test-00000-of-00001.parquet"
    )
    return folder


def test_malformed_rows_are_named(copies, tmp_path):
    def negative(rows):
        rows[1]["number"] = -2

    def masks(rows):
        rows[1]["masks"] = rows[1]["masks"][:1]  # 3 points, 1 mask

    def sha(rows):
        rows[0]["image_sha256"] = "abc"

    bad = _rewrite(copies, tmp_path, "countbench", negative)
    with pytest.raises(ValueError, match=r"test row 1: number must be a whole number >= 0, got -2"):
        load_benchmark("countbench", source=bad, cache_dir=tmp_path / "cache")
    bad = _rewrite(copies, tmp_path, "pixmo_points", masks)
    with pytest.raises(ValueError, match="row 1: 3 points but 1 masks"):
        load_benchmark("pixmo_points", source=bad, cache_dir=tmp_path / "cache")
    bad = _rewrite(copies, tmp_path / "2", "pixmo_count", sha)
    with pytest.raises(ValueError, match="row 0: image_sha256 must be 64 hexadecimal digits"):
        load_benchmark("pixmo_count", source=bad, cache_dir=tmp_path / "cache")


def test_pixmo_count_without_points_and_masks_of_another_size(copies, tmp_path):
    def no_points(rows):
        for row in rows:
            del row["points"]

    folder = tmp_path / "count"
    (folder / "data").mkdir(parents=True)
    table = pq.read_table(copies["pixmo_count"] / "data" / "test-00000-of-00001.parquet").drop_columns(
        ["points"]
    )
    pq.write_table(table, folder / "data" / "test-00000-of-00001.parquet")
    items = load("pixmo_count", {"pixmo_count": folder}, tmp_path)
    assert [i.count for i in items] == [0, 1, 3, 4, 6, 8] and all(i.points is None for i in items)

    def wider(rows):  # masks 8 px wider than the picture: cropped to it, as AllenAI reads them
        for row in rows:
            row["masks"] = [[line + [False] * 8 for line in mask] for mask in row["masks"]]

    bad = _rewrite(copies, tmp_path / "w", "pixmo_points", wider)
    with pytest.warns(UserWarning, match="not the size of their image"):
        items = load_benchmark("pixmo_points", source=bad, cache_dir=tmp_path / "cache")
    assert items[1].masks[0].size == SIZE and items[1].masks[0].contains(160, 108, SIZE)


def test_answers_of_the_wrong_length_or_for_other_items_are_refused(copies, tmp_path):
    items = load("countbench", copies, tmp_path)
    with pytest.raises(ValueError, match="2 answers for 6 items"):
        score_benchmark("countbench", items, ["There are none."] * 2)
    with pytest.raises(ValueError, match="is not a point_bench item"):
        score_benchmark("point_bench", items, ["There are none."] * 6)
    with pytest.raises(ValueError, match="unknown benchmark"):
        score_benchmark("pointbench", items, ["There are none."] * 6)


def test_without_a_source_the_hub_is_asked_and_offline_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(
        ConnectionError, match="Could not get vikhyatk/CountBenchQA from the Hugging Face Hub"
    ):
        load_benchmark("countbench", cache_dir=tmp_path / "cache")


# --- the table beside the paper --------------------------------------------------------------------


def test_the_table_puts_ours_with_a_wilson_interval_beside_the_papers():
    outcomes = tuple(ItemOutcome(f"k{i}", {"correct": float(i < 45)}) for i in range(50))
    score = BenchmarkScore(
        "countbench",
        {"correct": 0.9, "close": 1.0, "valid": 1.0, "n": 50},
        BENCHMARKS["countbench"].rules,
        outcomes,
        sampled=52,
        left_out=2,
    )
    low, high, method = interval(score, "correct")
    assert (round(low, 3), round(high, 3), method) == (0.786, 0.957, "Wilson")
    table = paper_table([score])
    assert "90.0% (78.6-95.7%, Wilson)" in table and "50 of 52 items" in table and "93.9%" in table
    assert "PointCountEval" in table
    assert PAPER_SCORES["point_bench"]["average"]["allenai/Molmo2-8B"].value == pytest.approx(0.687)
    assert "2601.10611" in PAPER_SCORES["countbench"]["correct"]["allenai/Molmo2-4B"].source


def test_an_f1_interval_is_a_bootstrap_the_same_every_time():
    outcomes = tuple(
        ItemOutcome(f"k{i}", {"f1": (i % 4) / 3, "precision": 0, "recall": 0}) for i in range(20)
    )
    score = BenchmarkScore(
        "pixmo_points",
        {"f1": 0.5, "precision": 0, "recall": 0, "n": 20},
        BENCHMARKS["pixmo_points"].rules,
        outcomes,
    )
    first = interval(score, "f1")
    assert first == interval(score, "f1") and first[2] == "bootstrap" and first[0] < 0.5 < first[1]
