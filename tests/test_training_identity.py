"""What a run trained on is what it records: every TrainingArguments field that changes the training, the
items with their media's content, and validation on files it never trained on. A run folder answers a call only
with the adapter of the same training."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields

import pytest
from PIL import ImageOps
from transformers import Trainer, TrainingArguments

from molmo_nb_utils import INPUT_DIR, load_dataset, load_image, load_model
from molmo_nb_utils.training import TrainingError, fine_tune
from molmo_nb_utils.training.record import NOT_TRAINING, arguments_record

PROMPT = "Point to the coins."
QUICK = dict(prompt=PROMPT, max_steps=2, save_steps=1, progress=False)


@pytest.fixture(scope="module")
def tables(coin_tables):
    return coin_tables[1:3]


def _no_training(*args, **kwargs):
    pytest.fail("trained again")


# ---------------------------------------------------------------------------------------------
# TrainingArguments


def test_every_training_argument_that_changes_the_training_is_recorded(
    tiny_model_path, tables, tmp_path, monkeypatch, interrupt
):
    run = tmp_path / "run"
    schedule = dict(lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.5})
    settings = {**QUICK, "max_steps": 3, **schedule}
    model, processor = load_model(tiny_model_path)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(model, processor, tables, run, callbacks=[interrupt(2)], **settings)
    # killed in step 2: resuming with another schedule would train step 1 on one and steps 2-3 on another
    model, processor = load_model(tiny_model_path)
    with pytest.raises(
        TrainingError, match=r"other settings \(lr_scheduler_kwargs: \{'min_lr_rate': 0\.5\} there"
    ):
        fine_tune(model, processor, tables, run, **{**settings, "lr_scheduler_kwargs": {"min_lr_rate": 0.1}})
    model, processor = load_model(tiny_model_path)
    assert fine_tune(model, processor, tables, run, **settings).training_log.resumed_from == 1

    # finished: any of these would be another training, not this run's adapter
    monkeypatch.setattr(Trainer, "train", _no_training)
    for changed in (
        {"neftune_noise_alpha": 5.0},
        {"optim_args": "amsgrad=True"},
        {"dataloader_drop_last": True},
        {"lr_scheduler_kwargs": {"min_lr_rate": 0.1}},
        {"seed": 1},
    ):
        model, processor = load_model(tiny_model_path)
        with pytest.raises(TrainingError, match=rf"other settings \({next(iter(changed))}:"):
            fine_tune(model, processor, tables, run, **{**settings, **changed})
    # what only watches or writes the run is not what it trained: the finished adapter loads
    model, processor = load_model(tiny_model_path)
    watched = {**settings, "logging_steps": 1, "save_steps": 3, "save_total_limit": 5, "progress": True}
    assert fine_tune(model, processor, tables, run, **watched).training_log.steps == 3


def test_the_record_is_every_field_of_training_arguments_but_those_that_only_watch_or_write(tmp_path):
    names = {f.name for f in fields(TrainingArguments) if f.init}
    assert NOT_TRAINING <= names  # a field renamed in transformers is recorded, never silently dropped
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    record = arguments_record(args)
    assert set(record) == names - NOT_TRAINING | {"world_size"}
    assert {"lr_scheduler_kwargs", "neftune_noise_alpha", "optim_args", "dataloader_drop_last"} <= set(record)
    assert "local_rank" not in record and "hub_token" not in record  # one process's own; a secret
    assert json.loads(json.dumps(record)) == record  # as the manifest stores it


def test_a_whole_training_arguments_with_validation_items_evaluates_or_is_refused(
    tiny_model_path, coin_tables, tmp_path
):
    train, validation = coin_tables[:2], coin_tables[2:3]
    plain = dict(output_dir=str(tmp_path / "ignored"), max_steps=2, save_steps=1, use_cpu=True, report_to="none",
                 disable_tqdm=True)  # fmt: skip
    model, processor = load_model(tiny_model_path)
    with pytest.raises(
        TrainingError, match=r"eval_strategy='steps', eval_steps=1, load_best_model_at_end=True"
    ):
        fine_tune(model, processor, train, tmp_path / "run", prompt=PROMPT, validation_items=validation,
                  args=TrainingArguments(**plain))  # fmt: skip
    assert not (tmp_path / "run").exists()
    evaluated = TrainingArguments(**plain, eval_strategy="steps", eval_steps=1, load_best_model_at_end=True,
                                  metric_for_best_model="eval_loss")  # fmt: skip
    tuned = fine_tune(model, processor, train, tmp_path / "run", prompt=PROMPT, validation_items=validation,
                      args=evaluated)  # fmt: skip
    log = tuned.training_log
    assert [step for step, _ in log.validation_loss] == [1, 2]
    assert log.best_checkpoint == f"checkpoint-{min(log.validation_loss, key=lambda e: e[1])[0]}"


# ---------------------------------------------------------------------------------------------
# Items: files, not list keys


def _listing(path, entries):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"label": "coin", **entry} for entry in entries]))
    return load_dataset(path)


def test_the_same_file_is_never_trained_and_validated_on_under_two_names(tiny_model, tmp_path):
    model, processor = tiny_model
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, table in (("d0.jpg", "table_02.jpg"), ("d1.jpg", "table_03.jpg")):
        shutil.copy(INPUT_DIR / "coin_table" / table, photos / name)
    shutil.copy(photos / "d0.jpg", tmp_path / "copy-of-d0.jpg")
    train = _listing(tmp_path / "train.json", [{"file": "photos/d0.jpg", "points": [[320, 180]]},
                                               {"file": "photos/d1.jpg", "points": [[100, 100]]}])  # fmt: skip
    same = _listing(photos / "validation.json", [{"file": "d0.jpg", "points": [[320, 180]]}])
    assert {item.key for item in train} & {item.key for item in same} == set()  # other keys, one file
    with pytest.raises(TrainingError, match=r"photos/d0\.jpg.*d0\.jpg.*same file"):
        fine_tune(model, processor, train, tmp_path / "run", validation_items=same, **QUICK)
    copied = _listing(tmp_path / "v2.json", [{"file": "copy-of-d0.jpg", "points": [[320, 180]]}])
    with pytest.raises(TrainingError, match=r"photos/d0\.jpg.*copy-of-d0\.jpg.*same"):
        fine_tune(model, processor, train, tmp_path / "run", validation_items=copied, **QUICK)
    assert not (tmp_path / "run").exists()


def test_new_photos_under_the_old_names_are_another_training(tiny_model_path, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, table in (("d0.jpg", "table_02.jpg"), ("d1.jpg", "table_03.jpg")):
        shutil.copy(INPUT_DIR / "coin_table" / table, photos / name)
    listing = [
        {"file": "photos/d0.jpg", "points": [[320, 180]]},
        {"file": "photos/d1.jpg", "points": [[100, 100]]},
    ]
    items = _listing(tmp_path / "train.json", listing)
    run = tmp_path / "run"
    model, processor = load_model(tiny_model_path)
    fine_tune(model, processor, items, run, **QUICK)
    ImageOps.mirror(load_image(photos / "d1.jpg")).save(photos / "d1.jpg")  # other photo, same name and truth
    model, processor = load_model(tiny_model_path)
    monkeypatch.setattr(Trainer, "train", _no_training)
    with pytest.raises(TrainingError, match=r"photos/d1\.jpg.*changed"):
        fine_tune(model, processor, _listing(tmp_path / "train.json", listing), run, **QUICK)
    monkeypatch.undo()
    model, processor = load_model(tiny_model_path)
    again = fine_tune(model, processor, items, run, resume=False, **QUICK)  # trained on the new photos
    assert again.training_log.resumed_from == 0 and again.training_log.steps == 2
