"""fine_tune never deletes what it did not write (not even inside its own folders), never counts a checkpoint
without its weights, never trains or loads an adapter on another base than its own, and never lets two calls
train in one folder at once."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from molmo_nb_utils import REPO_ROOT, load_model
from molmo_nb_utils.asking import chat, user_message
from molmo_nb_utils.training import Molmo2Trainer, TrainingError, fine_tune, latest_checkpoint, load_adapter
from molmo_nb_utils.training import checkpoints as checkpoints_module

PROMPT = "Point to the coins."
QUICK = dict(prompt=PROMPT, max_steps=2, save_steps=1, progress=False)


@pytest.fixture(scope="module")
def tables(coin_tables):
    return coin_tables[1:3]


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _another_programs_checkpoint(folder):
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text('{"global_step": 5}')
    (folder / "adapter_model.safetensors").write_bytes(b"theirs")
    return _files(folder)


# ---------------------------------------------------------------------------------------------
# Never delete what it did not write


def test_starting_over_keeps_another_programs_checkpoint(tiny_model_path, tables, tmp_path):
    run = tmp_path / "run"
    theirs = _another_programs_checkpoint(run / "checkpoint-5")
    for resume in (True, False):
        model, processor = load_model(tiny_model_path)
        fine_tune(model, processor, tables, run, resume=resume, **QUICK)
        assert _files(run / "checkpoint-5") == theirs
    assert latest_checkpoint(run).parent == run / "checkpoints"  # ours, never theirs
    load_adapter(load_model(tiny_model_path)[0], run)


def test_hidden_checkpoint_folders_of_others_stay(tiny_model_path, tables, tmp_path):
    run = tmp_path / "run"
    hidden = run / ".checkpoint-000004.x1y2"
    hidden.mkdir(parents=True)
    (hidden / "partial.bin").write_bytes(b"not ours")
    for resume in (True, False, True):
        model, processor = load_model(tiny_model_path)
        fine_tune(model, processor, tables, run, resume=resume, **QUICK)
    assert _files(hidden) == {"partial.bin": b"not ours"}


def test_a_users_own_checkpoint_folder_is_never_replaced(tiny_model_path, tables, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-000002").mkdir(parents=True)
    (run / "checkpoint-000002" / "notes.txt").write_text("my own work")
    model, processor = load_model(tiny_model_path)
    fine_tune(model, processor, tables, run, prompt=PROMPT, max_steps=2, save_steps=2, progress=False)
    assert _files(run / "checkpoint-000002") == {"notes.txt": b"my own work"}

    # a checkpoint folder of another program where the Trainer would write: refused, untouched
    other = tmp_path / "other"
    theirs = _another_programs_checkpoint(other / "checkpoints" / "checkpoint-2")
    (other / "fine_tune.json").write_text(json.dumps({"written_by": "someone else"}))
    with pytest.raises(TrainingError, match="not written by fine_tune"):
        fine_tune(load_model(tiny_model_path)[0], processor, tables, other, **QUICK)
    (other / "fine_tune.json").unlink()
    with pytest.raises(TrainingError, match="did not write"):
        fine_tune(load_model(tiny_model_path)[0], processor, tables, other, **QUICK)
    assert _files(other / "checkpoints" / "checkpoint-2") == theirs


def test_a_removal_killed_half_way_leaves_no_checkpoint_without_weights(
    tiny_model_path, tables, tmp_path, monkeypatch, interrupt
):
    run = tmp_path / "run"
    real_rmtree = shutil.rmtree

    def killed(path, *args, **kwargs):  # the weights go first, then the process is killed
        (checkpoints_module.Path(path) / "adapter_model.safetensors").unlink(missing_ok=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints_module.shutil, "rmtree", killed)
    model, processor = load_model(tiny_model_path)
    with pytest.raises(KeyboardInterrupt):  # save_total_limit=1: step 2 removes checkpoint-1
        fine_tune(model, processor, tables, run, save_total_limit=1, **{**QUICK, "max_steps": 4})
    monkeypatch.setattr(checkpoints_module.shutil, "rmtree", real_rmtree)
    for folder in (run / "checkpoints").glob("checkpoint-*"):
        assert (folder / "adapter_model.safetensors").is_file()  # no checkpoint without weights
    assert latest_checkpoint(run).name == "checkpoint-2"
    base, processor = load_model(tiny_model_path)
    load_adapter(base, run)  # the last whole checkpoint, no Hub error
    model, processor = load_model(tiny_model_path)
    resumed = fine_tune(model, processor, tables, run, save_total_limit=1, **{**QUICK, "max_steps": 4})
    assert resumed.training_log.resumed_from == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "checkpoint-4"
    ]  # the trash is gone too
    assert sorted(p.name for p in run.iterdir()) == ["adapter", "checkpoints", "fine_tune.json"]

    # starting over, killed while removing the earlier run: what is left counts only if whole
    monkeypatch.setattr(checkpoints_module.shutil, "rmtree", killed)
    model, processor = load_model(tiny_model_path)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(
            model, processor, tables, run, resume=False, save_total_limit=1, **{**QUICK, "max_steps": 4}
        )
    monkeypatch.setattr(checkpoints_module.shutil, "rmtree", real_rmtree)
    for folder in (run / "checkpoints").glob("checkpoint-*"):
        assert (folder / "adapter_model.safetensors").is_file()
    load_adapter(load_model(tiny_model_path)[0], run)  # a whole checkpoint, not a half-removed adapter
    model, processor = load_model(tiny_model_path)
    again = fine_tune(
        model, processor, tables, run, resume=False, save_total_limit=1, **{**QUICK, "max_steps": 4}
    )
    assert again.training_log.resumed_from == 0
    assert sorted(p.name for p in run.iterdir()) == ["adapter", "checkpoints", "fine_tune.json"]

    # a checkpoint that lost its weights some other way is not one: the one before it is resumed
    cut = tmp_path / "cut"
    model, processor = load_model(tiny_model_path)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(
            model,
            processor,
            tables,
            cut,
            save_total_limit=3,
            callbacks=[interrupt(3)],
            **{**QUICK, "max_steps": 4},
        )
    (cut / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").unlink()
    assert latest_checkpoint(cut).name == "checkpoint-1"
    load_adapter(load_model(tiny_model_path)[0], cut)
    with pytest.raises(TrainingError, match="incomplete checkpoint"):
        load_adapter(load_model(tiny_model_path)[0], cut / "checkpoints" / "checkpoint-2")
    model, processor = load_model(tiny_model_path)
    resumed = fine_tune(model, processor, tables, cut, save_total_limit=3, **{**QUICK, "max_steps": 4})
    assert resumed.training_log.resumed_from == 1


# ---------------------------------------------------------------------------------------------
# Never train or load on the wrong base


def _changed(model):
    """The same shapes and name, other weights: a base nobody trained this adapter for."""
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1.0
    return model


def test_an_adapter_refuses_another_base_of_the_same_shapes(tiny_model_path, tables, tmp_path):
    run = tmp_path / "run"
    model, processor = load_model(tiny_model_path)
    tuned = fine_tune(model, processor, tables, run, **QUICK)
    other = _changed(load_model(tiny_model_path)[0])
    with pytest.raises(
        TrainingError, match=r"another base model.*weights fingerprint .* there, .* now.*load the base"
    ):
        load_adapter(other, run)
    with pytest.raises(TrainingError, match="another base model"):
        load_adapter(other, run / "checkpoints" / "checkpoint-2")
    loaded = load_adapter(other, run, allow_other_base=True)  # asked for: the same base in another precision
    assert hasattr(loaded, "peft_config")
    same = load_adapter(load_model(tiny_model_path)[0], run)
    message = [user_message(tables[0].path, text=PROMPT)]
    assert str(chat(same, processor, message, max_new_tokens=20)) == str(
        chat(tuned, processor, message, max_new_tokens=20)
    )


def test_a_training_does_not_resume_on_other_weights_in_the_same_folder(
    tiny_model_path, tables, tmp_path, interrupt
):
    base_dir = shutil.copytree(tiny_model_path, tmp_path / "base")
    run = tmp_path / "run"
    model, processor = load_model(base_dir)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(model, processor, tables, run, callbacks=[interrupt(2)], **{**QUICK, "max_steps": 3})
    _changed(load_model(base_dir)[0]).save_pretrained(base_dir)  # other weights, same folder
    model, processor = load_model(base_dir)
    with pytest.raises(TrainingError, match=r"another base model.*fingerprint.*Resuming.*another folder"):
        fine_tune(model, processor, tables, run, **{**QUICK, "max_steps": 3})
    with pytest.raises(TrainingError, match="another base model"):
        load_adapter(model, run)
    assert latest_checkpoint(run).name == "checkpoint-1"  # nothing of the earlier run was touched


# ---------------------------------------------------------------------------------------------
# Inside our own folders: only what a mark proves fine_tune wrote may go


class _AddNotes(TrainerCallback):
    """The user saves their own notes into a checkpoint as soon as it is written."""

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 1:
            (Path(args.output_dir) / "checkpoint-1" / "notes.txt").write_text("my evaluation of step 1")


def test_the_users_files_inside_adapter_and_checkpoints_are_never_removed(tiny_model_path, tables, tmp_path):
    run = tmp_path / "run"
    model, processor = load_model(tiny_model_path)
    fine_tune(model, processor, tables, run, save_total_limit=3, **QUICK)  # checkpoint-1, -2 and the adapter
    notes = run / "adapter" / "notes.txt"
    notes.write_text("what I found with this adapter")
    card = run / "checkpoints" / "checkpoint-1" / "README.md"  # peft's model card: written by us, then edited
    card.write_text(card.read_text() + "\nTrained on my coins.\n")
    mine = {path: path.read_bytes() for path in (notes, card)}
    model, processor = load_model(tiny_model_path)
    with pytest.raises(TrainingError, match=r"did not write.*(notes\.txt|README\.md).*[Mm]ove"):
        fine_tune(model, processor, tables, run, resume=False, **QUICK)
    assert {path: path.read_bytes() for path in mine} == mine
    assert latest_checkpoint(run).name == "checkpoint-2"  # refused before anything was removed
    load_adapter(load_model(tiny_model_path)[0], run)

    # moved away: the files fine_tune wrote go, and it starts over
    for path in mine:
        shutil.move(path, tmp_path / f"kept-{path.name}")
    model, processor = load_model(tiny_model_path)
    again = fine_tune(model, processor, tables, run, resume=False, **QUICK)
    assert again.training_log.resumed_from == 0
    assert sorted(p.name for p in run.iterdir()) == ["adapter", "checkpoints", "fine_tune.json"]

    # a checkpoint the rotation would remove, holding the user's notes: kept, and said so
    rotated = tmp_path / "rotated"
    model, processor = load_model(tiny_model_path)
    with pytest.warns(UserWarning, match=r"checkpoint-1.*notes\.txt.*kept"):
        fine_tune(model, processor, tables, rotated, save_total_limit=1, callbacks=[_AddNotes()], **QUICK)
    assert (rotated / "checkpoints" / "checkpoint-1" / "notes.txt").read_text() == "my evaluation of step 1"

    # another run's adapter copied over this one's: its mark is not this run's, so nothing in it is proven ours
    shutil.rmtree(run / "adapter")
    shutil.copytree(rotated / "adapter", run / "adapter")
    model, processor = load_model(tiny_model_path)
    with pytest.raises(TrainingError, match=r"adapter/adapter_model\.safetensors"):
        fine_tune(model, processor, tables, run, resume=False, **QUICK)
    assert _files(run / "adapter") == _files(rotated / "adapter")


def test_a_checkpoint_killed_while_written_at_an_epochs_end_is_recognised(
    tiny_model_path, tables, tmp_path, monkeypatch
):
    """save_strategy="epoch": the checkpoint is decided at the epoch's end, not at a step's; a kill while it is
    written leaves a folder the run must know as its own."""
    run = tmp_path / "run"
    epochs = dict(
        prompt=PROMPT, save_strategy="epoch", num_train_epochs=2, progress=False
    )  # 2 steps an epoch
    real = Molmo2Trainer._save_optimizer_and_scheduler

    def killed_at_step_4(self, output_dir):  # the adapter is written, the optimizer never is
        if self.state.global_step == 4:
            raise KeyboardInterrupt
        return real(self, output_dir)

    monkeypatch.setattr(Molmo2Trainer, "_save_optimizer_and_scheduler", killed_at_step_4)
    model, processor = load_model(tiny_model_path)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(model, processor, tables, run, **epochs)
    half = run / "checkpoints" / "checkpoint-4"
    assert (half / "adapter_model.safetensors").is_file() and not (half / "optimizer.pt").exists()
    assert latest_checkpoint(run).name == "checkpoint-2"
    monkeypatch.undo()
    model, processor = load_model(tiny_model_path)
    resumed = fine_tune(model, processor, tables, run, **epochs)
    assert resumed.training_log.resumed_from == 2 and resumed.training_log.steps == 4

    monkeypatch.setattr(Molmo2Trainer, "_save_optimizer_and_scheduler", killed_at_step_4)
    model, processor = load_model(tiny_model_path)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(model, processor, tables, run, resume=False, **epochs)
    monkeypatch.undo()
    model, processor = load_model(tiny_model_path)
    again = fine_tune(model, processor, tables, run, resume=False, **epochs)
    assert again.training_log.resumed_from == 0 and again.training_log.steps == 4
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]


# ---------------------------------------------------------------------------------------------
# One fine_tune at a time in a run folder

HOLDER = """
import sys
import warnings

from transformers import TrainerCallback

from molmo_nb_utils import INPUT_DIR, load_dataset, load_model
from molmo_nb_utils.training import fine_tune


class Hold(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        print("saved", state.global_step, flush=True)
        sys.stdin.readline()  # training, until killed


with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    tables = [item for item in load_dataset(INPUT_DIR / "coin_table.json") if item.points is not None][1:3]
model, processor = load_model(sys.argv[1])
fine_tune(model, processor, tables, sys.argv[2], prompt="Point to the coins.", max_steps=2, save_steps=1,
          progress=False, callbacks=[Hold()])
"""


def test_a_second_fine_tune_on_a_folder_in_training_is_refused(tiny_model_path, tables, tmp_path):
    """Two notebook kernels, or a job submitted twice: the second says which process holds the folder; once that
    process is gone (even killed with SIGKILL) the folder is free."""
    run = tmp_path / "run"
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen([sys.executable, str(script), str(tiny_model_path), str(run)], env=env, cwd=REPO_ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 600)  # a hang guard, not a timing
        line = holder.stdout.readline() if ready else ""
        assert line.strip() == "saved 1", holder.stderr.read() if holder.poll() is not None else line
        model, processor = load_model(tiny_model_path)
        with pytest.raises(TrainingError, match=rf"in use by process {holder.pid}\b"):
            fine_tune(model, processor, tables, run, **QUICK)
        assert latest_checkpoint(run).name == "checkpoint-1"
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait(timeout=60)
    model, processor = load_model(tiny_model_path)
    resumed = fine_tune(model, processor, tables, run, **QUICK)
    assert resumed.training_log.resumed_from == 1
    assert sorted(p.name for p in run.iterdir()) == ["adapter", "checkpoints", "fine_tune.json"]
