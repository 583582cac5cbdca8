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
