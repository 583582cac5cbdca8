"""The playground (notebook 07) runs its default question and each task on the tiny model."""

from __future__ import annotations

import datetime
import io
import math

import numpy as np
import pytest
from PIL import Image

from molmo_nb_utils import paths
from molmo_nb_utils.asking import Answer
from molmo_nb_utils.masks import load_segmenter
from molmo_nb_utils.playground import (
    MAX_DISPLAY_HEIGHT,
    TASKS,
    Playground,
    display_size,
    grid_columns,
)
from molmo_nb_utils.tiny import build_tiny_sam2


@pytest.fixture
def playground(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "OUTPUT_DIR", tmp_path / "outputs")
    model, processor = tiny_model
    return Playground(model, processor)


def test_default_run_points_at_the_coins_photo(playground, capsys):
    answer = playground.run()
    assert isinstance(answer, Answer) and answer.image_sizes == [
        Image.open(paths.INPUT_DIR / "coins.jpg").size
    ]
    assert "Points found:" in capsys.readouterr().out


def test_picking_a_task_fills_prompt_and_switches_to_video(playground):
    playground.task.value = "track"
    assert (playground.prompt.value, playground.max_new_tokens.value) == TASKS["track"]
    assert playground.media.value == "video"


def test_segment_on_a_video_gets_trackings_answer_length(playground):
    """Segmenting a video asks at tracking's 8 fps, so its answer needs tracking's length; on images, pointing's.
    A length the reader chose stays when the media change."""
    playground.task.value = "segment"
    assert playground.max_new_tokens.value == TASKS["segment"][1]
    playground.media.value = "video"
    assert playground.max_new_tokens.value == TASKS["track"][1] > TASKS["segment"][1]
    playground.media.value = "images"
    assert playground.max_new_tokens.value == TASKS["segment"][1]
    playground.task.value = "ask"
    playground.media.value = "video"
    playground.task.value = "segment"  # the video first, then the task
    assert playground.max_new_tokens.value == TASKS["track"][1]
    playground.max_new_tokens.value = 300
    playground.media.value = "images"
    assert playground.max_new_tokens.value == 300


def test_tracking_runs_on_the_video_at_8_fps(playground):
    playground.task.value = "track"
    playground.max_new_tokens.value = 16
    answer = playground.run()
    assert answer.video.info.path.name == "moving_objects.mp4"
    assert len(answer.video.timestamps) == 33  # 4 s at 8 fps: 0, 0.125, ..., 4.0
    assert (paths.OUTPUT_DIR / "playground_tracks.mp4").is_file()


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    return load_segmenter(build_tiny_sam2(tmp_path_factory.mktemp("sam") / "tiny-sam2"))


def test_segment_draws_masks_on_the_images_and_a_video(playground, tiny_sam, capsys, monkeypatch):
    playground.segmenter = tiny_sam
    shown = []
    monkeypatch.setattr("molmo_nb_utils.playground.display", shown.append)
    playground.task.value = "segment"
    assert playground.prompt.value == TASKS["segment"][0] and playground.media.value == "images"
    playground.max_new_tokens.value = 16
    answer = playground.run()
    assert answer.images and isinstance(shown[-1], Image.Image)
    assert "Masks:" in capsys.readouterr().out
    playground.media.value = "video"
    answer = playground.run()
    assert len(answer.video.timestamps) == 33  # tracking's 8 fps: what SAM 2 follows
    assert (paths.OUTPUT_DIR / "playground_masks.mp4").is_file()


def test_tracking_needs_a_video(playground, capsys):
    playground.task.value = "track"
    playground.media.value = "images"
    assert playground.run() is None
    assert "Tracking needs a video" in capsys.readouterr().out


def test_several_images_and_a_video_point(playground):
    playground.image_files.value = ("cat.jpg", "coins.jpg")
    playground.max_new_tokens.value = 16
    assert len(playground.run().images) == 2
    playground.media.value = "video"
    playground.video_file.value = "counting.mp4"
    assert playground.run().video.indices[-1] == 63


def _file(name: str, content: bytes) -> dict:
    """One upload as ipywidgets 8's FileUpload holds it."""
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    return {
        "name": name,
        "type": "",
        "size": len(content),
        "content": memoryview(content),
        "last_modified": when,
    }


def _png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_upload_is_listed_selected_and_used(playground):
    video = (paths.INPUT_DIR / "counting.mp4").read_bytes()
    playground.upload.value = (_file("photo.png", _png("red")), _file("..\\..\u202eclip.mp4", video))
    # The lists name what a run will use: the uploads, selected, at the top of their lists.
    assert playground.image_files.value == ("photo.png (uploaded)",)
    assert playground.video_file.value == "clip.mp4 (uploaded)"
    assert playground.image_files.options[0] == "photo.png (uploaded)"
    assert "coins.jpg" in playground.image_files.options  # the samples stay pickable
    assert playground.media.value == "video"
    playground.max_new_tokens.value = 8
    first = playground.run().video.info.path
    again = playground.run().video.info.path
    assert first == again and first.parent == paths.OUTPUT_DIR / "uploads"  # saved once, on upload
    assert first.name == "clip.mp4" and first.read_bytes() == video
    playground.media.value = "images"
    assert playground.run().images[0].getpixel((0, 0)) == (255, 0, 0)
    other = Playground(playground.model, playground.processor)
    other.upload.value = (_file("clip.mp4", video),)
    assert other.video_file.value == "clip.mp4 (uploaded)"  # the name the reader knows
    assert other.chosen_media() == paths.OUTPUT_DIR / "uploads" / "clip-1.mp4"  # never overwrites


def test_the_upload_button_counts_every_file_listed_not_the_last_pick(playground):
    """ipywidgets shows "Upload (n)" for the files in the widget's value; each pick replaces the value, so
    two images then a video once read "(1)". The count is what the lists hold, without the files' bytes."""
    video = (paths.INPUT_DIR / "counting.mp4").read_bytes()
    playground.upload.value = (_file("a.png", _png("red")), _file("b.png", _png("green")))
    assert len(playground.upload.value) == 2
    playground.upload.value = (_file("clip.mp4", video),)  # a second pick
    assert [f["name"] for f in playground.upload.value] == ["a.png", "b.png", "clip.mp4"]
    assert all(len(f["content"]) == 0 for f in playground.upload.value)  # no copy of the files in the widget
    assert playground.video_file.value == "clip.mp4 (uploaded)" and len(playground._uploaded_images) == 2
    playground.upload.value = (_file("broken.jpg", b"not a jpeg"),)  # refused: not counted
    assert len(playground.upload.value) == 3
    playground.clear_uploads()
    assert playground.upload.value == ()


def test_uploads_can_be_cleared(playground):
    playground.upload.value = (_file("photo.png", _png("red")),)
    playground.upload.value = (_file("photo.png", _png("green")),)  # the same name again
    assert playground.image_files.options[:2] == ("photo.png (uploaded)", "photo.png (uploaded) 2")
    assert playground.chosen_media()[0].getpixel((0, 0)) == (0, 128, 0)
    playground.clear_uploads()
    assert not any("uploaded" in name for name in playground.image_files.options)
    assert playground.image_files.value == ("coins.jpg",) and playground.upload.value == ()
    assert playground.chosen_media()[0].size == Image.open(paths.INPUT_DIR / "coins.jpg").size


def test_only_the_list_of_the_chosen_media_is_shown(playground):
    assert playground.image_files.layout.display is None and playground.video_file.layout.display == "none"
    playground.media.value = "video"
    assert playground.image_files.layout.display == "none" and playground.video_file.layout.display is None
    assert "big_buck_bunny.mp4" in playground.video_file.options  # the real clip is offered


def test_a_broken_upload_is_reported_under_the_button(playground):
    playground.upload.value = (_file("broken.jpg", b"not a jpeg"),)
    text = "".join(o.get("text", "") for o in playground.output.outputs)
    assert "Cannot read the given bytes" in text
    assert playground.image_files.value == ("coins.jpg",)  # nothing was added


def test_ipywidgets_7_upload_dict(playground):
    playground._on_upload({"new": {"a.png": {"content": _png("blue")}}})
    assert np.asarray(playground.chosen_media()[0])[0, 0].tolist() == [0, 0, 255]


# --- pictures that fit the screen --------------------------------------------------------------


def test_display_size_never_enlarges_and_caps_portrait_height():
    assert display_size(640, 360) == (640, 360)
    assert display_size(1722, 400) == (1000, 232)  # wider than the notebook
    assert display_size(682, 1213) == (360, 640)  # a portrait photo's picture: 640 px high
    assert display_size(100, 5000, max_height=500) == (10, 500)


def test_grid_columns_keep_a_portrait_video_on_one_screen():
    assert grid_columns(9, 640, 360) == 4  # landscape: 3 rows of 4
    cols = grid_columns(9, 360, 640)  # a phone video held upright
    thumb = (1000 - 4 * (cols - 1)) / cols
    assert math.ceil(9 / cols) * (thumb * 640 / 360 + 20) <= MAX_DISPLAY_HEIGHT and cols > 4
    assert grid_columns(400, 360, 640) == 12


def test_a_portrait_upload_is_shown_at_a_sensible_height(playground, monkeypatch):
    shown = []
    monkeypatch.setattr("molmo_nb_utils.playground.display", lambda obj: shown.append(obj))
    buffer = io.BytesIO()
    Image.new("RGB", (682, 1213), "white").save(buffer, format="PNG")
    playground.upload.value = (_file("portrait.png", buffer.getvalue()),)
    playground.max_new_tokens.value = 8
    playground.run()
    (picture,) = shown
    assert picture.height == MAX_DISPLAY_HEIGHT and picture.width < 400
