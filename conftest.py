"""Test session setup: everything runs offline on a tiny random Molmo2 built here.

The tiny model is built once per session into a temporary folder and ``MOLMO_MODEL_ID`` points
at it before any notebook kernel starts, so nbval runs the notebooks exactly as a reader would,
only on the tiny model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(session, config, items):
    """Build the tiny model only when a notebook or a model test was collected (it costs seconds)."""
    needs_model = any(
        item.path.suffix == ".ipynb"
        or {"tiny_model", "tiny_model_path"} & set(getattr(item, "fixturenames", ()))
        for item in items
    )
    if needs_model:
        from molmo_nb_utils.tiny import build_tiny_molmo2

        folder = Path(tempfile.mkdtemp(prefix="tiny-molmo2-")) / "model"
        build_tiny_molmo2(folder)
        os.environ["MOLMO_MODEL_ID"] = str(folder)
        config._tiny_model_root = folder.parent


def pytest_unconfigure(config):
    root = getattr(config, "_tiny_model_root", None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    return Path(os.environ["MOLMO_MODEL_ID"])


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    """(model, processor) loaded through the same call the notebooks make."""
    from molmo_nb_utils.loading import load_model

    return load_model(tiny_model_path)


@pytest.fixture(scope="session")
def coin_tables():
    """The coin-table photos of ``input/coin_table.json`` with every coin's position (fine-tuning's data)."""
    import warnings

    from molmo_nb_utils import INPUT_DIR, load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # table_01 has no coins, and the photo without points says so
        items = load_dataset(INPUT_DIR / "coin_table.json")
    return [item for item in items if item.points is not None]


@pytest.fixture(scope="session")
def interrupt():
    """``interrupt(at)``: a Trainer callback that stops training as Ctrl-C does, after optimizer step ``at``."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def __init__(self, at: int) -> None:
            self.at = at

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.at:
                raise KeyboardInterrupt

    return Interrupt
