"""Running Molmo2 over a dataset: loading, resuming after interruptions, failures, scores, exports."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from conftest import FAKE_ANSWER, FakeAsk
from molmo_nb_utils import dataset, media
from molmo_nb_utils.asking import chat
from molmo_nb_utils.dataset import (
    DEFAULT_PROMPT,
    DatasetItem,
    DatasetScore,
    ItemResult,
    ItemScore,
    draw_result,
    export_coco,
    export_csv,
    export_points_csv,
    item_prompt,
    load_dataset,
    load_results,
    plot_counts,
    results_from_answers,
    run_dataset,
    score_results,
    score_table,
    worked_answer,
    worst_items,
)
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.media import MediaSettings, load_image
from molmo_nb_utils.paths import INPUT_DIR, REPO_ROOT

SAMPLE = INPUT_DIR / "coin_table.json"

# ---------------------------------------------------------------------------------------------
# helpers


def _images(folder: Path, n: int, size: tuple[int, int] = (40, 30)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.new("RGB", size, (10 * k, 0, 0)).save(folder / f"img_{k}.png")
    return folder


def _lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


# ---------------------------------------------------------------------------------------------
# loading


def test_the_sample_dataset_loads_with_its_ground_truth():
    items = {item.key: item for item in load_dataset(SAMPLE)}
    assert len(items) == 9
    table = items["coin_table/table_04.jpg"]
    assert table.kind == "image" and table.label == "coin" and table.count == 4
    assert table.points[0] == Point(1, 96.0, 90.0, image=1)
    assert items["coins.jpg"].count == 24 and items["coins.jpg"].points is None
    video = items["moving_objects.mp4"]
    assert video.kind == "video" and video.truth == INPUT_DIR / "ground_truth" / "moving_objects.json"
    assert video.prompt == "Track the coins." and video.count == 3
    assert items["counting.mp4"].prompt is None


def test_a_folder_gives_every_image_and_video_without_truth(tmp_path):
    _images(tmp_path / "sub", 2)
    (tmp_path / "clip.mp4").write_bytes((INPUT_DIR / "counting.mp4").read_bytes())
    (tmp_path / "notes.txt").write_text("not media")
    (tmp_path / ".hidden.png").write_bytes(b"")
    items = load_dataset(tmp_path)
    assert [(i.key, i.kind) for i in items] == [
        ("clip.mp4", "video"),
        ("sub/img_0.png", "image"),
        ("sub/img_1.png", "image"),
    ]
    assert all(i.count is None and i.points is None and i.truth is None for i in items)


def test_a_linked_subfolder_is_part_of_a_folder_dataset_and_each_file_is_listed_once(tmp_path):
    camera = tmp_path / "camera"  # outside the dataset folder, linked into it
    _images(camera, 2)
    data = tmp_path / "data"
    _images(data / "own", 1)
    (data / "phone").symlink_to(camera, target_is_directory=True)
    (data / "again").symlink_to(data / "own", target_is_directory=True)  # the same files a second way
    (data / "own" / "loop").symlink_to(data, target_is_directory=True)  # a link back up: no endless walk
    (data / "own" / "alias.png").symlink_to(data / "own" / "img_0.png")  # a linked file: listed once
    keys = [i.key for i in load_dataset(data)]
    assert keys == ["own/img_0.png", "phone/img_0.png", "phone/img_1.png"]  # a file keeps its own name


def test_a_photo_shown_smaller_is_recorded_scored_and_drawn_in_its_own_pixels(tmp_path, monkeypatch):
    """A photo past MAX_IMAGE_PIXELS (a 200 MP phone JPEG) is shown at a reduced scale; its truth is in full pixels."""
    monkeypatch.setattr(media.images, "MAX_IMAGE_PIXELS", 10_000)  # 400x300 loads at 1/4: 100x75
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (400, 300), (90, 90, 90)).save(path)
    assert load_image(path).size == (100, 75)
    (item,) = load_dataset([{"file": str(path), "points": [[100, 80], [300, 200]], "label": "coin"}])
    (result,) = results_from_answers([item], {item.key: worked_answer(item)})
    assert result.size == (400, 300)
    assert [(round(p.x), round(p.y)) for p in result.points] == [(100, 80), (300, 200)]
    score = score_results([item], [result])
    assert (score.image_points.tp, score.image_points.fp, score.image_points.fn) == (2, 0, 0)
    assert draw_result(item, result).width >= 100
    (asked,) = run_dataset(None, None, [item], tmp_path / "out.jsonl", prompt="Point.", ask=FakeAsk())
    assert asked.size == (400, 300) and (asked.points[0].x, asked.points[0].y) == (200.0, 150.0)


def test_true_points_of_a_phone_photo_are_checked_against_its_upright_size(tmp_path):
    image = Image.new("RGB", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x20, shown (and pointed at) 20x40
    image.save(tmp_path / "phone.jpg", exif=exif)
    items = load_dataset([{"file": str(tmp_path / "phone.jpg"), "points": [[15, 35]]}])
    assert items[0].points == (Point(1, 15.0, 35.0, image=1),)
    with pytest.raises(ValueError, match="outside the 20x40 picture"):
        load_dataset([{"file": str(tmp_path / "phone.jpg"), "points": [[35, 15]]}])


@pytest.mark.parametrize("delimiter", ["\t", ";", ","])
def test_tab_and_semicolon_separated_lists_are_read(tmp_path, delimiter):
    _images(tmp_path, 2, size=(60, 50))
    rows = [["file", "count", "points"], ["img_0.png", "2", "10 20; 30 40"], ["img_1.png", "0", ""]]
    with open(tmp_path / "list.csv", "w", newline="", encoding="utf-16") as f:  # Excel's "Unicode text"
        csv.writer(f, delimiter=delimiter).writerows(rows)
    first, second = load_dataset(tmp_path / "list.csv")
    assert first.points == (Point(1, 10.0, 20.0, image=1), Point(2, 30.0, 40.0, image=1))
    assert (first.count, second.count) == (2, 0)
    (tmp_path / "list.tsv").write_text("file\tcount\nimg_0.png\t2\n", encoding="utf-8")
    assert load_dataset(tmp_path / "list.tsv")[0].count == 2
    (tmp_path / "list.txt").write_bytes((tmp_path / "list.csv").read_bytes())  # as Excel names "Unicode text"
    with pytest.raises(ValueError, match=r"not a \.txt file .*tab-separated list: rename it to \.tsv"):
        load_dataset(tmp_path / "list.txt")
    (tmp_path / "bad.csv").write_text("file|count\nimg_0.png|2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'file' column, separated by commas, tabs or semicolons"):
        load_dataset(tmp_path / "bad.csv")
    (tmp_path / "typo.csv").write_text("file;cuont\nimg_0.png;2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['cuont'\]"):  # the typo, by name
        load_dataset(tmp_path / "typo.csv")
    (tmp_path / "names.csv").write_text('file,count\n"a;b.png",1\n', encoding="utf-8")
    Image.new("RGB", (40, 30)).save(tmp_path / "a;b.png")
    assert load_dataset(tmp_path / "names.csv")[0].key == "a;b.png"  # a ';' in a name is no separator


def test_a_csv_list_reads_points_and_counts(tmp_path):
    _images(tmp_path, 3, size=(60, 50))
    (tmp_path / "list.csv").write_text(
        "file,count,points,label\nimg_0.png,2,10 20; 30 40,dot\nimg_1.png,5,,\nimg_2.png,,,\n",
        encoding="utf-8",
    )
    first, second, third = load_dataset(tmp_path / "list.csv")
    assert first.points == (Point(1, 10.0, 20.0, image=1), Point(2, 30.0, 40.0, image=1))
    assert (first.count, first.label) == (2, "dot")
    assert (second.count, second.points, second.label) == (5, None, "object")
    assert third.count is None


def test_a_json_list_and_a_python_list(tmp_path):
    _images(tmp_path, 2)
    (tmp_path / "list.json").write_text(json.dumps([{"file": "img_0.png", "points": [[1, 2], [3, 4]]}]))
    (item,) = load_dataset(tmp_path / "list.json", label="dot")
    assert item.count == 2 and item.label == "dot"  # the count follows from the points
    items = load_dataset([tmp_path / "img_1.png", {"file": str(tmp_path / "img_0.png"), "count": 0}])
    assert [i.count for i in items] == [None, 0] and items[0].path == tmp_path / "img_1.png"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"file": "img_0.png", "cout": 3}, r"unknown field\(s\) \['cout'\]"),
        ({"file": "img_0.png", "count": -1}, r"count must be a whole number >= 0, got -1"),
        ({"file": "img_0.png", "count": 3, "points": [[1, 2]]}, r"count 3 but 1 points; fix one of them"),
        ({"file": "img_0.png", "points": "1 2; 3"}, r"points must be pixel positions"),
        ({"file": "img_0.png", "truth": "t.json"}, r"'truth' files are for videos"),
        ({"file": "notes.txt"}, r"not an image or video file by its suffix \(\.txt\)"),
        ({"count": 3}, r"every item needs a 'file'"),
    ],
)
def test_bad_lists_are_refused_with_the_reason(tmp_path, entry, message):
    _images(tmp_path, 1)
    (tmp_path / "list.json").write_text(json.dumps({"items": [entry]}))
    with pytest.raises(ValueError, match=message):
        load_dataset(tmp_path / "list.json")


def test_missing_and_repeated_files_are_refused_before_any_run(tmp_path):
    _images(tmp_path, 1)
    (tmp_path / "list.json").write_text(json.dumps([{"file": "img_0.png"}, {"file": "gone.jpg"}]))
    with pytest.raises(FileNotFoundError, match=r"1 file\(s\) not found: gone\.jpg"):
        load_dataset(tmp_path / "list.json")
    (tmp_path / "list.json").write_text(json.dumps([{"file": "img_0.png"}, {"file": "img_0.png"}]))
    with pytest.raises(ValueError, match=r"img_0\.png is listed twice"):
        load_dataset(tmp_path / "list.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images or videos"):
        load_dataset(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# running and resuming


def test_a_run_writes_one_line_per_item_with_what_was_asked_and_seen(tmp_path):
    items = load_dataset(_images(tmp_path / "data", 3))
    ask = FakeAsk()
    results = run_dataset("model", "processor", items, tmp_path / "out.jsonl", prompt="Point.", ask=ask)
    assert ask.asked == ["img_0.png", "img_1.png", "img_2.png"]
    lines = _lines(tmp_path / "out.jsonl")
    assert [line["key"] for line in lines] == [i.key for i in items]
    first = lines[0]
    # 500/1000 of 40 x 30 px is (20, 15); 250/1000 is (10, 7.5)
    assert first["points"] == [
        {"id": 1, "x": 20.0, "y": 15.0, "image": 1},
        {"id": 2, "x": 10.0, "y": 7.5, "image": 1},
    ]
    assert first["answer"] == FAKE_ANSWER and first["size"] == [40, 30] and first["error"] is None
    assert first["settings"] == {
        "model": None, "adapter": None, "weights": None, "dtype": None, "quantization": None,
        "prompt": "Point.", "max_new_tokens": 256, "fps": 2.0, "max_frames": 384, "max_crops": None,
    }  # fmt: skip
    assert (first["prompt_tokens"], first["visual_tokens"]) == (7, 3)
    assert results[0].count == 2 and results == load_results(tmp_path / "out.jsonl")


def test_stopping_mid_run_and_running_again_answers_each_item_exactly_once(tmp_path):
    items = load_dataset(_images(tmp_path / "data", 5))
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_dataset(None, None, items, out, prompt="Point.", ask=FakeAsk(stop_after=2))
    assert [line["key"] for line in _lines(out)] == ["img_0.png", "img_1.png"]
    again = FakeAsk()
    results = run_dataset(None, None, items, out, prompt="Point.", ask=again)
    assert again.asked == ["img_2.png", "img_3.png", "img_4.png"]
    assert [line["key"] for line in _lines(out)] == [i.key for i in items]
    assert [r.key for r in results] == [i.key for i in items]
    idle = FakeAsk()
    run_dataset(None, None, items, out, prompt="Point.", ask=idle)
    assert idle.asked == [] and len(_lines(out)) == 5


KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from molmo_nb_utils import dataset
from molmo_nb_utils.dataset import results, running
from molmo_nb_utils.asking import Answer
from molmo_nb_utils.media import load_image

writes = 0
real_append = results.append_line


def torn_append(file, line):  # the third line is cut in half by a kill, as a power cut or OOM kill would
    global writes
    writes += 1
    if writes == 3:
        file.write(line[: len(line) // 2])
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_append(file, line)


results.append_line = torn_append
running.append_line = torn_append


def ask(model, processor, messages, **settings):
    path = messages[0]["content"][0]["image"]
    return Answer('<points coords="1 1 500 500">dot</points>', images=[load_image(path)])


items = dataset.load_dataset(sys.argv[1])
dataset.run_dataset(None, None, items, sys.argv[2], prompt="Point.", ask=ask)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_run_killed_while_writing_loses_nothing_and_duplicates_nothing(tmp_path):
    folder, out = _images(tmp_path / "data", 5), tmp_path / "out.jsonl"
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_MID_WRITE), str(folder), str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    torn = out.read_bytes()
    assert torn.count(b"\n") == 2 and not torn.endswith(b"\n")  # two whole lines and half a third
    assert [r.key for r in load_results(out)] == ["img_0.png", "img_1.png"]  # the half line is not done
    assert out.read_bytes() == torn  # and reading did not change the file

    ask = FakeAsk()
    run_dataset(None, None, load_dataset(folder), out, prompt="Point.", ask=ask)
    assert ask.asked == ["img_2.png", "img_3.png", "img_4.png"]
    assert [line["key"] for line in _lines(out)] == [f"img_{k}.png" for k in range(5)]


def test_a_failing_item_is_recorded_and_the_run_goes_on(tmp_path):
    items = load_dataset(_images(tmp_path / "data", 3))
    out = tmp_path / "out.jsonl"
    results = run_dataset(None, None, items, out, prompt="Point.", ask=FakeAsk(fail_on={"img_1.png"}))
    assert [r.error for r in results] == [None, "RuntimeError: cannot read img_1.png (simulated)", None]
    assert results[1].answer is None and results[1].points == ()
    skipped = FakeAsk()
    run_dataset(None, None, items, out, prompt="Point.", ask=skipped)
    assert skipped.asked == []  # a failure is a result: not asked again by default
    retried = FakeAsk()
    results = run_dataset(None, None, items, out, prompt="Point.", ask=retried, retry_failed=True)
    assert retried.asked == ["img_1.png"] and all(r.error is None for r in results)
    assert [line["key"] for line in _lines(out)] == ["img_0.png", "img_1.png", "img_2.png", "img_1.png"]
    assert [r.error for r in load_results(out)] == [None, None, None]  # the newer line wins


def test_an_unreadable_file_fails_through_the_real_chat_path(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG")
    (result,) = run_dataset(None, None, load_dataset([broken]), tmp_path / "out.jsonl", prompt="Point.")
    assert result.error.startswith(("ValueError", "UnidentifiedImageError", "OSError")), result.error


def test_limit_answers_only_that_many_new_items(tmp_path):
    items = load_dataset(_images(tmp_path / "data", 4))
    ask = FakeAsk()
    results = run_dataset(None, None, items, tmp_path / "out.jsonl", prompt="Point.", ask=ask, limit=1)
    assert ask.asked == ["img_0.png"] and len(results) == 1
    run_dataset(None, None, items, tmp_path / "out.jsonl", prompt="Point.", ask=ask, limit=2)
    assert ask.asked == ["img_0.png", "img_1.png", "img_2.png"]


def test_resuming_with_other_settings_or_prompts_is_refused(tmp_path):
    items = load_dataset(_images(tmp_path / "data", 2))
    out = tmp_path / "out.jsonl"
    run_dataset(None, None, items[:1], out, prompt="Point.", ask=FakeAsk())
    with pytest.raises(ValueError, match=r"other settings \(fps: 2\.0 there, 8\.0 now\).*new results file"):
        run_dataset(None, None, items, out, prompt="Point.", media=MediaSettings(fps=8.0), ask=FakeAsk())
    with pytest.raises(ValueError, match=r"other settings \(prompt: 'Point\.' there, 'Count\.' now\)"):
        run_dataset(None, None, items, out, prompt="Count.", ask=FakeAsk())
    own = [DatasetItem(items[0].key, items[0].path, "image", prompt="Track.")]
    with pytest.raises(
        ValueError, match=r"answered img_0\.png to 'Point\.', but its prompt is now 'Track\.'"
    ):
        run_dataset(None, None, own, out, prompt="Point.", ask=FakeAsk())
    with pytest.raises(ValueError, match=r"other settings \(prompt: 'Point\.' there, None now\)"):
        run_dataset(None, None, items, out, ask=FakeAsk())


def test_an_item_is_asked_the_prompt_it_is_trained_on(tmp_path):
    """One rule (item_prompt) for run_dataset and fine_tune: own prompt, run's prompt, default; {label} filled."""
    items = load_dataset(_images(tmp_path / "data", 2), label="coin")
    own = [items[0], replace(items[1], prompt="Count the {label}s.")]
    asked = []

    def ask(model, processor, messages, **settings):
        asked.append(messages[0]["content"][-1]["text"])
        return FakeAsk()(model, processor, messages, **settings)

    results = run_dataset(None, None, own, tmp_path / "a.jsonl", prompt="Point to each {label}.", ask=ask)
    assert asked == ["Point to each coin.", "Count the coins."]
    assert [r.prompt for r in results] == asked  # recorded as asked, braces filled
    asked.clear()
    run_dataset(None, None, items, tmp_path / "b.jsonl", ask=ask)  # no prompt: the default, as training's
    assert asked == [DEFAULT_PROMPT.replace("{label}", "coin")] * 2
    assert [item_prompt(item) for item in items] == asked


def test_two_runs_cannot_write_one_file_at_once(tmp_path):
    items = load_dataset(_images(tmp_path / "data", 1))
    out = tmp_path / "out.jsonl"
    with dataset.results.open_results(out):
        with pytest.raises(RuntimeError, match="Another run is writing"):
            run_dataset(None, None, items, out, prompt="Point.", ask=FakeAsk())


def test_a_damaged_line_inside_the_file_is_reported_not_skipped(tmp_path):
    items = load_dataset(_images(tmp_path / "data", 2))
    out = tmp_path / "out.jsonl"
    run_dataset(None, None, items, out, prompt="Point.", ask=FakeAsk())
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0][:20] + "\n" + lines[1])
    with pytest.raises(ValueError, match=r"out\.jsonl, line 1 is not a result of run_dataset"):
        load_results(out)
    with pytest.raises(ValueError, match="fix or delete that line"):
        run_dataset(None, None, items, out, prompt="Point.", ask=FakeAsk())


def test_the_tiny_model_through_chat_end_to_end(tiny_model, tmp_path):
    model, processor = tiny_model
    items = [i for i in load_dataset(SAMPLE) if i.key in ("coin_table/table_02.jpg", "counting.mp4")]
    out = tmp_path / "out.jsonl"
    calls = []

    def counted_chat(*args, **kwargs):
        calls.append(1)
        return chat(*args, **kwargs)

    results = run_dataset(
        model, processor, items, out, prompt="Point to the coins.", max_new_tokens=8, ask=counted_chat
    )
    assert len(calls) == 2 and all(r.error is None for r in results), [r.error for r in results]
    image, video = results
    assert image.size == (640, 360) and image.visual_tokens > 0 and isinstance(image.answer, str)
    assert video.times == (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)  # 2 fps over 4 s, and the end
    assert video.frame_indices == (0, 8, 16, 24, 32, 40, 48, 56, 63)
    assert video.settings["model"] == str(model.name_or_path) and "/" in video.settings["model"]
    assert all(len(line) < 5000 for line in out.read_bytes().splitlines())  # no frames in the file
    run_dataset(
        model, processor, items, out, prompt="Point to the coins.", max_new_tokens=8, ask=counted_chat
    )
    assert len(calls) == 2
    assert len(score_results(items, results).items) == 2


# ---------------------------------------------------------------------------------------------
# scores, by hand


def _image_item(key: str, points: list[tuple[float, float]] | None, count: int | None = None) -> DatasetItem:
    truth = None if points is None else tuple(Point(k, x, y, image=1) for k, (x, y) in enumerate(points, 1))
    return DatasetItem(
        key, Path(key), "image", count=len(points) if points is not None else count, points=truth
    )


def _image_result(key: str, points: list[tuple[float, float]], size=(640, 480)) -> ItemResult:
    return ItemResult(
        key,
        "image",
        "Point.",
        {},
        answer="...",
        points=tuple(Point(k, x, y, image=1) for k, (x, y) in enumerate(points, 1)),
        size=size,
    )


def test_image_scores_by_hand():
    # 640 x 480 images: the diagonal is 800 px, so the threshold is 5% of it, 40 px.
    items = [
        _image_item("a", [(100, 100), (300, 100), (500, 400)]),
        _image_item("b", [(50, 50), (590, 430)]),
        _image_item("c", []),
        _image_item("d", None, count=10),  # a count only
    ]
    results = [
        _image_result("a", [(110, 100), (300, 130), (600, 50)]),  # 10 px and 30 px from a truth; one far away
        _image_result("b", []),  # nothing found
        _image_result("c", []),  # nothing there, nothing found
        _image_result("d", [(k, k) for k in range(12)]),  # 12 points
    ]
    score = score_results(items, results)
    a, b, c, d = score.items
    assert a.threshold_px == pytest.approx(40.0)
    assert (a.points.tp, a.points.fp, a.points.fn) == (2, 1, 1)
    assert a.points.mean_error_px == pytest.approx(20.0)  # (10 + 30) / 2
    assert a.points.f1 == pytest.approx(2 / 3)  # 2 * 2 / (2 * 2 + 1 + 1)
    assert (b.points.tp, b.points.fn, b.points.f1) == (0, 2, 0.0)
    assert c.points.f1 == 1.0  # nothing there and nothing found is right
    assert d.points is None and d.count_error == +2
    pooled = score.image_points  # tp 2, fp 1, fn 1 + 2 = 3
    assert pooled.precision == pytest.approx(2 / 3)  # 2 / (2 + 1)
    assert pooled.recall == pytest.approx(2 / 5)  # 2 / (2 + 3)
    assert pooled.f1 == pytest.approx(0.5)  # 2 * 2 / (2 * 2 + 1 + 3) = 4 / 8
    assert score.mean_image_f1 == pytest.approx(5 / 9)  # (2/3 + 0 + 1) / 3
    # counts: a 3 of 3, b 0 of 2, c 0 of 0, d 12 of 10
    assert score.counts.accuracy == 0.5  # 2 exact of 4
    assert score.counts.mean_abs_error == 1.0  # (0 + 2 + 0 + 2) / 4
    assert score.counts.mean_signed_error == 0.0  # (0 - 2 + 0 + 2) / 4
    assert [s.key for s in worst_items(score, 2)] == ["b", "a"]  # F1 0 then 2/3
    assert [s.key for s in worst_items(score, 2, by="count")] == ["b", "d"]  # |-2| and |+2|, F1 0 first


def test_matching_is_optimal_and_the_threshold_scales_with_the_image():
    # Truth at x = 100 and 170; answers at x = 132 (32 px from the first, 38 px from the second) and
    # x = 95 (5 px from the first, 75 px from the second). Pairing each answer with its nearest free
    # truth in order matches only one; the best pairing is 95 -> 100 and 132 -> 170: two, both < 40 px.
    items = [_image_item("a", [(100, 100), (170, 100)])]
    (score,) = score_results(items, [_image_result("a", [(132, 100), (95, 100)])]).items
    assert (score.points.tp, score.points.fp, score.points.fn) == (2, 0, 0)
    assert score.points.mean_error_px == pytest.approx(21.5)  # (38 + 5) / 2
    # At 320 x 240 the diagonal is 400 px and the threshold 20 px: 38 px no longer matches.
    (small,) = score_results(items, [_image_result("a", [(132, 100), (95, 100)], size=(320, 240))]).items
    assert small.threshold_px == pytest.approx(20.0)
    assert (small.points.tp, small.points.fp, small.points.fn) == (1, 1, 1)


def _sample(keys: set[str]) -> list[DatasetItem]:
    return [item for item in load_dataset(SAMPLE) if item.key in keys]


def test_video_scores_per_frame_shown_by_hand():
    (counting,) = _sample({"counting.mp4"})
    answer = worked_answer(counting, drop=[5])
    (result,) = results_from_answers([counting], {"counting.mp4": answer})
    (score,) = score_results([counting], [result]).items
    # At 2 fps the model sees frames 0, 8, ..., 56 and 63; coin k is there from frame 8k on, so the
    # frames hold 0 + 1 + 2 + 3 + 4 + 5 + 5 + 5 + 5 = 30 true positions. Coin 5 (from frame 40) is
    # left out: missed in frames 40, 48, 56 and 63.
    assert (score.points.tp, score.points.fp, score.points.fn) == (26, 0, 4)
    assert score.points.recall == pytest.approx(26 / 30)
    assert (score.true_count, score.predicted_count) == (5, 4)
    assert score.tracks is None  # a pointing answer: ids only count


def test_identity_consistency_of_tracks_by_hand():
    (moving,) = _sample({"moving_objects.mp4"})
    answer = worked_answer(moving, swap=(1, 2, 2.0), tag="tracks")
    assert answer.startswith('<tracks coords="0.0 1 ')
    (score,) = score_results([moving], results_from_answers([moving], {"moving_objects.mp4": answer})).items
    # Coins 1 and 2 trade ids at 2 s: each is followed by two ids, coin 3 (from 2.5 s) by one: 1 of 3.
    assert score.tracks.id_consistency == pytest.approx(1 / 3)
    assert score.tracks.id_switches == 2
    assert score.points.fp == score.points.fn == 0  # the positions are all right


def test_worked_answers_shift_drop_and_add_exactly():
    items = {i.key: i for i in load_dataset(SAMPLE)}
    table = items["coin_table/table_03.jpg"]
    # Truth centres lie on Molmo2's 0..1000 grid, so a shift of (19.2, 14.4) px reads back exactly:
    # every point is sqrt(19.2^2 + 14.4^2) = 24 px off, inside the 36.7 px threshold.
    (result,) = results_from_answers([table], {table.key: worked_answer(table, shift=(19.2, 14.4))})
    (score,) = score_results([table], [result]).items
    assert score.points.tp == 3 and score.points.mean_error_px == pytest.approx(24.0)
    assert score.threshold_px == pytest.approx(0.05 * math.hypot(640, 360))
    assert worked_answer(items["coin_table/table_01.jpg"]) == "There are none."
    text = worked_answer(items["coin_table/table_04.jpg"], drop=[3], add=[(320, 180)])
    assert text == '<points coords="1 1 150 250 2 425 700 4 875 750 5 500 500">coin</points>'
    with pytest.raises(ValueError, match="no true points"):
        worked_answer(items["coins.jpg"])


def test_failed_and_missing_items_are_reported_not_scored():
    items = [_image_item("a", [(1, 1)]), _image_item("b", [(1, 1)]), _image_item("c", [(1, 1)])]
    failed = ItemResult("b", "image", "Point.", {}, error="ValueError: cannot read")
    score = score_results(items, [_image_result("a", [(1, 1)]), failed])
    assert [s.key for s in score.failed] == ["b"] and score.not_run == ("c",)
    assert score.counts.n == 1 and score.image_points.tp == 1
    assert "1 item(s) scored, 1 failed, 1 not run yet" in str(score)
    table = score_table(score.items).splitlines()
    assert table[2].split() == ["b", "1", "failed", "-", "-", "-", "-", "-"]
    assert table[-1] == "b failed: ValueError: cannot read"


# ---------------------------------------------------------------------------------------------
# pictures and exports


@pytest.fixture(scope="module")
def worked():
    items = _sample({"coin_table/table_04.jpg", "coin_table/table_05.jpg", "moving_objects.mp4", "coins.jpg"})
    by_key = {i.key: i for i in items}
    answers = {
        "coin_table/table_04.jpg": worked_answer(by_key["coin_table/table_04.jpg"], drop=[3]),
        "coin_table/table_05.jpg": worked_answer(by_key["coin_table/table_05.jpg"]),
        "moving_objects.mp4": worked_answer(by_key["moving_objects.mp4"], tag="tracks"),
    }
    results = results_from_answers(items, answers)
    broken = ItemResult("coins.jpg", "image", "Point.", {}, error="OutOfMemoryAdvice: try max_crops=4")
    return items, [*results, broken], score_results(items, [*results, broken])


def test_pictures_show_each_item(worked):
    items, results, score = worked
    picture = draw_result(items[0], results[0])
    assert picture.width == 640 and picture.height > 360  # the photo under a header
    grid = draw_result(items[3], results[2])
    assert grid.width == 1024
    with pytest.raises(ValueError, match="failed"):
        draw_result(items[2], results[3])
    figure = plot_counts(score)
    assert figure.axes[0].get_xlabel() == "true count"


def test_a_pictures_title_names_which_answer_it_shows(worked, monkeypatch):
    """Two pictures of one item (before and after fine-tuning, 09) say which answer each one shows."""
    items, results, _ = worked
    titles = []
    original, original_header = dataset.pictures.draw_points, dataset.pictures.with_header
    monkeypatch.setattr(
        dataset.pictures,
        "draw_points",
        lambda *a, label, **k: titles.append(label) or original(*a, label=label, **k),
    )
    monkeypatch.setattr(
        dataset.pictures,
        "with_header",
        lambda image, text, *a: titles.append(text) or original_header(image, text, *a),
    )
    draw_result(items[0], results[0])
    draw_result(items[0], results[0], answer="answer before fine-tuning")
    draw_result(items[3], results[2], answer="answer of the last checkpoint")
    assert titles[0].endswith("in rings), answer") and titles[1].endswith(
        "in rings), answer before fine-tuning"
    )
    assert titles[-1].endswith("answer of the last checkpoint: 3 ids")


def test_csv_export_reads_back(worked, tmp_path):
    items, results, score = worked
    with open(export_csv(score, results, tmp_path / "items.csv"), newline="", encoding="utf-8") as file:
        rows = {row["key"]: row for row in csv.DictReader(file)}
    assert list(rows) == [
        "coin_table/table_04.jpg",
        "coin_table/table_05.jpg",
        "coins.jpg",
        "moving_objects.mp4",
    ]
    four = rows["coin_table/table_04.jpg"]
    assert (four["true_count"], four["predicted_count"], four["count_error"]) == ("4", "3", "-1")
    assert (four["tp"], four["fp"], four["fn"], four["recall"]) == ("3", "0", "1", "0.75")
    assert (
        rows["coins.jpg"]["error"] == "OutOfMemoryAdvice: try max_crops=4" and rows["coins.jpg"]["tp"] == ""
    )
    assert rows["moving_objects.mp4"]["id_consistency"] == "1.0"

    with open(
        export_points_csv(items, results, tmp_path / "points.csv"), newline="", encoding="utf-8"
    ) as file:
        points = list(csv.DictReader(file))
    assert sum(p["key"] == "coin_table/table_05.jpg" for p in points) == 6
    first_track = next(p for p in points if p["tag"] == "tracks")
    assert (first_track["time"], first_track["frame"], first_track["image"]) == ("0.0", "0", "")


def test_coco_export_reads_back(worked, tmp_path):
    items, results, _ = worked
    coco = json.loads(export_coco(items, results, tmp_path / "coco.json").read_text())
    assert coco["categories"] == [
        {"id": 1, "name": "coin", "supercategory": "coin", "keypoints": ["coin"], "skeleton": []}
    ]
    photo = coco["images"][0]
    assert photo == {"id": 1_000_000, "file_name": "coin_table/table_04.jpg", "width": 640, "height": 360}
    on_photo = [a for a in coco["annotations"] if a["image_id"] == photo["id"]]
    assert [a["keypoints"] for a in on_photo] == [[96.0, 90.0, 2], [272.0, 252.0, 2], [560.0, 270.0, 2]]
    assert all(a["num_keypoints"] == 1 and a["category_id"] == 1 for a in on_photo)
    frames = [im for im in coco["images"] if im.get("video") == "moving_objects.mp4"]
    assert [im["file_name"] for im in frames[:2]] == [
        "moving_objects.mp4/000000.jpg",
        "moving_objects.mp4/000008.jpg",
    ]
    assert "coins.jpg" not in {im["file_name"] for im in coco["images"]}  # failed: nothing to export
    tracked = [a for a in coco["annotations"] if "track_id" in a]
    assert tracked and all(a["track_id"] == a["point_id"] for a in tracked)
    ids = [a["id"] for a in coco["annotations"]]
    assert ids == list(range(1, len(ids) + 1))


def test_the_count_plot_says_when_several_items_share_one_spot():
    """Two items with the same true and predicted count are one dot: its number is in it, the legend says so."""
    items = (
        ItemScore("a.jpg", "image", 3, 3),
        ItemScore("b.jpg", "image", 3, 3),
        ItemScore("c.jpg", "image", 2, 4),
        ItemScore("d.jpg", "image", 2, 4),
        ItemScore("e.jpg", "image", 1, 1),
    )
    score = DatasetScore(items, None, None, None, None, None)
    ax = plot_counts(score).axes[0]
    numbers = {(text.xy, text.get_text()) for text in ax.texts if text.get_text().isdigit()}
    assert numbers == {((3, 3), "2"), ((2, 4), "2")}  # not on the single item at (1, 1)
    assert any(text.get_text() == "c, d" for text in ax.texts)
    assert "several items on one spot" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    alone = plot_counts(DatasetScore(items[2:3], None, None, None, None, None)).axes[0]
    assert [t.get_text() for t in alone.get_legend().get_texts()] == ["exact"]  # nothing shared, nothing said
