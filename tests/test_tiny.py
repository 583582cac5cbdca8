"""The tiny Molmo2 sees its images, and its builder never deletes what it did not write."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from transformers import Sam2VideoModel, Sam2VideoProcessor

from molmo_nb_utils import tiny
from molmo_nb_utils.asking import chat, prepare_inputs, user_message
from molmo_nb_utils.paths import INPUT_DIR
from molmo_nb_utils.tiny import MARKER, TinyModelError, build_tiny_molmo2

COINS, CAT = INPUT_DIR / "coin_table" / "table_03.jpg", INPUT_DIR / "cat.jpg"


def _forward(model, processor, image):
    inputs = prepare_inputs(processor, [user_message(image, text="Point to the coins.")])
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        pooled = model.model.get_image_features(
            inputs["pixel_values"], inputs["image_token_pooling"], inputs["image_grids"]
        ).pooler_output
    return out, torch.cat(pooled)


def _rms(tensor) -> float:
    return tensor.float().pow(2).mean().sqrt().item()


def test_activations_and_image_features_are_of_order_one(tiny_model):
    """Weights at std 0.02 on 32-wide layers left the image features at ~1e-7 and logits at ~0.1."""
    model, processor = tiny_model
    out, features = _forward(model, processor, COINS)
    assert 0.1 < _rms(features) < 10
    for hidden in out.hidden_states[1:]:  # after the first layer (embeddings are small, see _draw_weights)
        assert 0.1 < _rms(hidden) < 30
    assert 0.3 < out.logits[0, -1].std().item() < 3


def test_answers_depend_on_the_image(tiny_model):
    model, processor = tiny_model
    (coins, coin_features), (cat, cat_features) = (_forward(model, processor, f) for f in (COINS, CAT))
    assert (coin_features.mean(0) - cat_features.mean(0)).norm() > 0.1 * coin_features.mean(0).norm()
    assert (coins.logits[0, -1] - cat.logits[0, -1]).abs().max() > 0.05  # the old weights: ~1e-7
    answers = {str(chat(model, processor, [user_message(f, text="Point to the coins.")], max_new_tokens=12))
               for f in (COINS, CAT)}  # fmt: skip
    assert len(answers) == 2


def _files(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture
def built(tiny_model_path, tmp_path):
    """A copy of the session's build (the same code and seed as a fresh one)."""
    return shutil.copytree(tiny_model_path, tmp_path / "built")


def test_a_current_build_is_reused(built, monkeypatch):
    before = _files(built)
    monkeypatch.setattr(tiny.molmo2, "build_tokenizer", lambda: pytest.fail("rebuilt a current build"))
    assert build_tiny_molmo2(built) == built
    assert _files(built) == before
    assert json.loads((built / MARKER).read_text())["weights_version"] == tiny.WEIGHTS_VERSION


def test_an_older_build_is_rebuilt_and_overwrite_rebuilds_in_place(built, tiny_model_path):
    expected = _files(tiny_model_path)
    (built / MARKER).unlink()  # as written before the weights were redrawn
    with open(built / "model.safetensors", "r+b") as file:  # and other weights
        file.seek(-64, 2)
        file.write(bytes(64))
    build_tiny_molmo2(built)
    assert _files(built) == expected
    (built / "model.safetensors").write_bytes(b"not a model")
    assert build_tiny_molmo2(built, overwrite=True) == built
    assert _files(built) == expected
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_an_empty_folder_is_filled(tmp_path, tiny_model_path):
    (tmp_path / "empty").mkdir()
    assert build_tiny_molmo2(tmp_path / "empty") == tmp_path / "empty"
    assert _files(tmp_path / "empty") == _files(tiny_model_path)


@pytest.mark.parametrize("overwrite", [False, True])
def test_never_deletes_what_it_did_not_write(tmp_path, monkeypatch, overwrite):
    """`tiny .` in a project folder used to empty it; a folder without config.json was deleted."""
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for folder in (".", tmp_path):
        with pytest.raises(TinyModelError, match="did not write.*nothing was changed"):
            build_tiny_molmo2(folder, overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "sub"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_build_with_a_file_of_someone_else_is_not_replaced(built):
    (built / "my_adapter.bin").write_bytes(b"keep me")
    with pytest.raises(TinyModelError, match="did not write"):
        build_tiny_molmo2(built, overwrite=True)
    assert (built / "my_adapter.bin").read_bytes() == b"keep me"


def test_another_model_folder_is_used_as_it_is(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "molmo2", "text_config": {"hidden_size": 2560}}')
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"weights")
    assert build_tiny_molmo2(tmp_path) == tmp_path
    with pytest.raises(TinyModelError):
        build_tiny_molmo2(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model-00001-of-00002.safetensors"]


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "model").write_text("x")
    with pytest.raises(TinyModelError, match="is a file"):
        build_tiny_molmo2(tmp_path / "model")


def test_command_line_is_a_real_parser(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(
        tiny.cli, "build_tiny_molmo2", lambda folder, **kw: calls.append((folder, kw)) or folder
    )
    monkeypatch.chdir(tmp_path)
    assert tiny.main(["--overwrite"]) == 0
    assert tiny.main(["out", "--seed", "3"]) == 0
    assert calls == [
        ("downloaded_data/tiny-molmo2", {"seed": 0, "overwrite": True}),
        ("out", {"seed": 0, "overwrite": False} | {"seed": 3}),
    ]
    assert not (tmp_path / "--overwrite").exists()
    with pytest.raises(SystemExit) as exit_:
        tiny.main(["--no-such-flag"])
    assert exit_.value.code == 2


def test_command_line_refuses_a_folder_of_files_it_did_not_write(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        tiny.main(["."])
    assert exit_.value.code == 2
    assert "did not write" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


# --- the tiny SAM 2 ----------------------------------------------------------------------------


def test_the_tiny_sam2_loads_through_from_pretrained_and_is_reused(tmp_path, monkeypatch):
    folder = tiny.build_tiny_sam2(tmp_path / "sam")
    marker = json.loads((folder / tiny.SAM_MARKER).read_text())
    assert marker["weights_version"] == tiny.SAM_WEIGHTS_VERSION and "config.json" in marker["files"]
    model = Sam2VideoModel.from_pretrained(folder)
    processor = Sam2VideoProcessor.from_pretrained(folder)
    assert model.config.image_size == processor.target_size == tiny.TINY_SAM_IMAGE_SIZE
    assert sum(p.numel() for p in model.parameters()) < 2_000_000  # far below SAM 2.1 tiny's 39M
    before = _files(folder)
    monkeypatch.setattr(tiny.sam2, "Sam2VideoModel", lambda config: pytest.fail("rebuilt a current build"))
    assert tiny.build_tiny_sam2(folder) == folder and _files(folder) == before


def test_the_tiny_sam2_never_replaces_others_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TinyModelError, match="did not write"):
        tiny.build_tiny_sam2(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_command_line_builds_the_segmenter(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        tiny.cli, "build_tiny_sam2", lambda folder, **kw: calls.append((folder, kw)) or folder
    )
    monkeypatch.chdir(tmp_path)
    assert tiny.main(["--segmenter"]) == 0
    assert calls == [("downloaded_data/tiny-sam2", {"seed": 0, "overwrite": False})]


def test_a_build_another_process_finished_meanwhile_is_used(tmp_path, monkeypatch):
    """Parallel test workers may build the same tiny SAM 2 at once: the second finds the first's."""
    done = tiny.build_tiny_sam2(tmp_path / "done")
    target = tmp_path / "sam"
    real = os.replace

    def racing(src, dst):
        if Path(dst) == target and not target.exists():
            shutil.copytree(done, target)  # the other worker moves its build in first
        return real(src, dst)

    monkeypatch.setattr(os, "replace", racing)
    assert tiny.build_tiny_sam2(target) == target
    assert _files(target) == _files(done)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
