"""Tests write only to temporary folders: what the lessons write (outputs, results files, fine-tuning runs, the
tiny SAM 2 loaded by name) goes to ``MOLMO_DATA_DIR``, which conftest points at a temporary folder, in this
process and in the notebooks' kernels, which inherit it. (conftest also fails a run that leaves anything new.)"""

from __future__ import annotations

import os
import subprocess
import sys

from molmo_nb_utils import paths
from molmo_nb_utils.dataset import load_dataset, run_dataset
from molmo_nb_utils.grounding import Point, save_points
from molmo_nb_utils.paths import REPO_ROOT, output_path, save_upload
from molmo_nb_utils.tiny import tiny_model_dir, tiny_segmenter_dir


def _outside_the_checkout(path) -> bool:
    return not os.path.realpath(path).startswith(os.path.realpath(REPO_ROOT) + os.sep)


def test_outputs_and_tiny_models_go_to_a_temporary_folder():
    assert os.environ["MOLMO_DATA_DIR"] == str(paths.DATA_DIR)
    for path in (paths.DATA_DIR, paths.OUTPUT_DIR, output_path("09_fine_tune/run"), tiny_model_dir(),
                 tiny_segmenter_dir()):  # fmt: skip
        assert _outside_the_checkout(path), path


def test_a_notebook_kernel_started_by_the_tests_writes_outside_the_checkout():
    """nbval's kernels are child processes: they inherit the variable, as this one does."""
    code = "from molmo_nb_utils.paths import output_path; print(output_path('08_your_dataset/results.jsonl'))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert _outside_the_checkout(done.stdout.strip()), done.stdout


def test_running_a_dataset_and_saving_exports_leaves_the_checkout_unchanged(tiny_model, checkout_files):
    before = checkout_files()
    model, processor = tiny_model
    items = load_dataset(REPO_ROOT / "input" / "coin_table.json")[:2]
    results = output_path("08_your_dataset/coin_table-tiny.jsonl")
    run_dataset(model, processor, items, results, prompt="Point to the coins.", max_new_tokens=4)
    save_points([Point(1, 10.0, 20.0)], output_path("tracks_example.csv"))
    save_upload("clip.mp4", b"not really a video")
    assert results.is_file() and checkout_files() == before
