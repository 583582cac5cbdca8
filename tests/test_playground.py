"""The playground (notebook 07) runs its default question and each task on the tiny model."""

from __future__ import annotations

import datetime
import io

import numpy as np
import pytest
from PIL import Image

from molmo_nb_utils import paths
from molmo_nb_utils.asking import Answer
from molmo_nb_utils.playground import TASKS, Playground


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


def test_tracking_runs_on_the_video_at_8_fps(playground):
    playground.task.value = "track"
    playground.max_new_tokens.value = 16
    answer = playground.run()
    assert answer.video.info.path.name == "moving_objects.mp4"
    assert len(answer.video.timestamps) == 33  # 4 s at 8 fps: 0, 0.125, ..., 4.0
    assert (paths.OUTPUT_DIR / "playground_tracks.mp4").is_file()


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


def test_uploads_replace_picks_and_are_saved_cleanly_once(playground):
    video = (paths.INPUT_DIR / "counting.mp4").read_bytes()
    playground.upload.value = (_file("photo.png", _png("red")), _file("..\\..\u202eclip.mp4", video))
    playground.max_new_tokens.value = 8
    assert playground.run().images[0].getpixel((0, 0)) == (255, 0, 0)
    playground.media.value = "video"
    first = playground.run().video.info.path
    again = playground.run().video.info.path
    assert first == again and first.parent == paths.OUTPUT_DIR / "uploads"
    assert first.name == "clip.mp4" and first.read_bytes() == video
    other = Playground(playground.model, playground.processor)
    other.upload.value = (_file("clip.mp4", video),)
    other.media.value = "video"
    assert other.chosen_media() == paths.OUTPUT_DIR / "uploads" / "clip-1.mp4"  # never overwrites


def test_ipywidgets_7_upload_dict(playground):
    fake = {"a.png": {"content": _png("blue")}}
    playground.upload = type("Upload7", (), {"value": fake})()
    assert np.asarray(playground.chosen_media()[0])[0, 0].tolist() == [0, 0, 255]
