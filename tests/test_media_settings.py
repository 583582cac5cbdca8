"""How media are shown, said once: ``MediaSettings`` carried by runs and trainings, the processor's crop
count written once, and one answer to "which frame is at time t" on a plan (issue 29, section 3)."""

from __future__ import annotations

import csv
import dataclasses
import inspect

import numpy as np
import pytest
from PIL import Image
from transformers import Molmo2ImageProcessor

from conftest import FakeAsk
from molmo_nb_utils import memory
from molmo_nb_utils.asking import _oom_advice
from molmo_nb_utils.dataset import (
    ItemResult,
    RunSettings,
    load_dataset,
    load_results,
    results_from_answers,
    run_dataset,
    run_sharded,
    worked_answer,
)
from molmo_nb_utils.dataset.exports import export_points_csv
from molmo_nb_utils.evaluation import load_ground_truth
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.media import (
    DEFAULT_MAX_CROPS,
    DEFAULT_MEDIA,
    FramePlan,
    MediaSettings,
    plan_for_times,
    plan_frames,
    sample_frames,
)
from molmo_nb_utils.paths import INPUT_DIR
from molmo_nb_utils.training import TrainingError, fine_tune, training_examples
from molmo_nb_utils.training.settings import FineTuneSettings

VIDEO = INPUT_DIR / "moving_objects.mp4"

# ---------------------------------------------------------------------------------------------
# The object


def test_media_settings_are_checked_when_made_and_normalised():
    media = MediaSettings(fps=np.float32(4), max_frames=np.int64(16), max_crops=np.int64(2))
    assert (media.fps, media.max_frames, media.max_crops) == (4.0, 16, 2)
    assert [type(v) for v in (media.fps, media.max_frames, media.max_crops)] == [float, int, int]
    assert MediaSettings() == DEFAULT_MEDIA == MediaSettings(2.0, 384, None)
    with pytest.raises(ValueError, match="fps must be a number > 0"):
        MediaSettings(fps=0)
    with pytest.raises(ValueError, match="max_frames must be a whole number >= 1"):
        MediaSettings(max_frames=True)
    with pytest.raises(ValueError, match=r"max_crops must be .* or None \(the processor's default, 8\)"):
        MediaSettings(max_crops=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        media.fps = 8.0


def test_media_settings_plan_and_sample_as_the_functions_do():
    media = MediaSettings(fps=1, max_frames=3)
    assert media.plan(VIDEO) == plan_frames(VIDEO, 3, 1) == sample_frames(VIDEO, 3, 1).plan
    assert media.sample(VIDEO).plan == media.plan(VIDEO)
    assert media.keywords() == {"fps": 1.0, "max_frames": 3, "max_crops": None}
    assert media.images_kwargs() == {} and MediaSettings(max_crops=2).images_kwargs() == {"max_crops": 2}


def test_the_processors_crop_count_is_written_once():
    """chat's default, its out-of-memory advice and the memory planner all read DEFAULT_MAX_CROPS."""
    assert DEFAULT_MAX_CROPS == Molmo2ImageProcessor.max_crops == 8
    assert MediaSettings().crops == DEFAULT_MAX_CROPS and MediaSettings(max_crops=3).crops == 3
    assert memory.IMAGE_CROPS == memory.MAX_CROPS_STEPS[0] == DEFAULT_MAX_CROPS
    assert memory.image_tokens_estimate() == memory.image_tokens_estimate(max_crops=DEFAULT_MAX_CROPS)
    model = type("Model", (), {"dtype": "torch.bfloat16"})()
    image = [
        {"role": "user", "content": [{"type": "image", "image": "a.jpg"}, {"type": "text", "text": "?"}]}
    ]
    assert "max_crops=6" in _oom_advice(model, image, MediaSettings())  # the step below the default
    assert "max_crops=2" in _oom_advice(model, image, MediaSettings(max_crops=4))


# ---------------------------------------------------------------------------------------------
# Runs and trainings carry it


def test_runs_and_trainings_take_the_object_not_loose_knobs():
    for function in (
        run_dataset,
        run_sharded,
        fine_tune,
        training_examples,
        worked_answer,
        results_from_answers,
    ):
        parameters = inspect.signature(function).parameters
        assert "media" in parameters and not {"fps", "max_frames", "max_crops"} & set(parameters), function
    assert [f.name for f in dataclasses.fields(RunSettings)][-1] == "media"


def test_a_run_asks_with_its_media_settings_and_records_them_flat(tmp_path):
    (tmp_path / "data").mkdir()
    for k in range(2):
        Image.new("RGB", (40, 30)).save(tmp_path / "data" / f"img_{k}.png")
    items = load_dataset(tmp_path / "data")
    ask = FakeAsk()
    media = MediaSettings(fps=4, max_frames=16, max_crops=2)
    run_dataset(None, None, items, tmp_path / "out.jsonl", prompt="Point.", media=media, ask=ask)
    assert ask.settings == [{"max_new_tokens": 256, "fps": 4.0, "max_frames": 16, "max_crops": 2}] * 2
    recorded = load_results(tmp_path / "out.jsonl")[0].settings
    assert {k: recorded[k] for k in ("fps", "max_frames", "max_crops")} == media.keywords()
    assert "media" not in recorded  # the layout of files written before MediaSettings: they resume
    again = FakeAsk()
    run_dataset(None, None, items, tmp_path / "out.jsonl", prompt="Point.", media=media, ask=again)
    assert again.asked == []
    with pytest.raises(ValueError, match=r"max_crops: 2 there, None now"):
        other = MediaSettings(fps=4, max_frames=16)
        run_dataset(None, None, items, tmp_path / "out.jsonl", prompt="Point.", media=other, ask=FakeAsk())
    with pytest.raises(TypeError, match="media must be a MediaSettings"):
        RunSettings.for_model(None, media={"fps": 4})


def test_worked_answers_and_training_examples_follow_the_media_settings():
    (video,) = [i for i in load_dataset(INPUT_DIR / "coin_table.json") if i.key == "moving_objects.mp4"]
    media = MediaSettings(fps=1)
    (result,) = results_from_answers([video], {video.key: worked_answer(video, media=media)}, media=media)
    assert result.plan == media.plan(video.path) and result.times == (0.0, 1.0, 2.0, 3.0, 4.0)
    assert result.settings["fps"] == 1.0
    (example,) = training_examples([video], media=media)
    assert example.frames == result.plan and example.media == media
    assert FineTuneSettings(media=media).record()["fps"] == 1.0  # flat, as checkpoints recorded it before
    with pytest.raises(TrainingError, match="media must be a MediaSettings"):
        FineTuneSettings(media={"fps": 1})


# ---------------------------------------------------------------------------------------------
# Which frame is at time t: one answer, on a plan


def test_the_frame_at_a_time_is_the_plans_first_frame_of_the_nearest_time():
    plan = FramePlan((0.0, 0.5, 1.0, 1.0), (0, 14, 29, 30), (64, 48))
    assert plan.prompt_times == (0.0, 0.5, 1.0)
    assert [plan.frame_at(t) for t in (0.0, 0.2, 0.3, 0.5, 0.8, 1.0, 9.0)] == [0, 0, 14, 14, 29, 29, 29]
    assert plan.position(0.74) == 1 and plan.position(1.0) == 2


def test_a_points_export_names_the_frame_the_plan_shows(tmp_path):
    """A time repeated in the plan is one prompt entry, on its first frame: the export agrees with the scores."""
    items = load_dataset(
        [{"file": str(VIDEO), "truth": str(INPUT_DIR / "ground_truth" / "moving_objects.json")}]
    )
    result = ItemResult(
        items[0].key, "video", "Track.", {}, answer="...", points=(Point(1, 10, 10, time=4.0),),
        size=(640, 360), times=(0.0, 4.0, 4.0), frame_indices=(0, 63, 64),
    )  # fmt: skip
    with open(export_points_csv(items, [result], tmp_path / "points.csv"), newline="") as file:
        (row,) = list(csv.DictReader(file))
    assert row["frame"] == "63" == str(result.plan.frame_at(4.0))
    truth = load_ground_truth(INPUT_DIR / "ground_truth" / "moving_objects.json")
    assert {p.time for p in truth.at_plan(result.plan)} == {0.0, 4.0}


def test_times_no_plan_recorded_get_the_frame_on_screen_then():
    """At 16 fps, 0.53 s is on frame 8 (which shows from 0.5 s to 0.5625 s), not round(0.53 * 16) = 8.48 -> 8;
    and 0.56 s is still frame 8, where round(0.56 * 16) = 9."""
    plan = plan_for_times(VIDEO, [0.0, 0.53, 0.56, 4.0])
    assert plan.indices == (0, 8, 8, 63) and plan.size == (640, 360)
    assert plan_for_times(VIDEO, plan_frames(VIDEO).times) == plan_frames(VIDEO)
    with pytest.raises(ValueError, match="need times >= 0"):
        plan_for_times(VIDEO, [-1.0])
