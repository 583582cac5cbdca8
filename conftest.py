"""Test session setup: everything runs offline on a tiny random Molmo2 built here.

The tiny model is built once per session into a temporary folder and ``MOLMO_MODEL_ID`` points
at it before any notebook kernel starts, so nbval runs the notebooks exactly as a reader would,
only on the tiny model.

Tests write only to temporary folders, never into the reader's checkout: ``MOLMO_DATA_DIR`` (the
one place the package and the notebooks' kernels take the outputs folder, the download cache and the
tiny SAM 2's folder from) points at one temporary folder per run, made before xdist starts its
workers, which inherit it. A run that leaves a new file or folder in the checkout fails and names it.
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

CHECKOUT = Path(__file__).resolve().parent
# Python's and the tools' own caches, and virtual environments: not what a test writes.
_NOT_OUTPUTS = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
_IS_WORKER = "PYTEST_XDIST_WORKER" in os.environ  # an xdist worker: the controller owns the data folder
_OWN_DATA_DIR = None if _IS_WORKER else tempfile.mkdtemp(prefix="molmo-test-data-")
if _OWN_DATA_DIR is not None:  # before molmo_nb_utils.paths is imported, which reads it once
    os.environ["MOLMO_DATA_DIR"] = _OWN_DATA_DIR


def checkout_entries(root: Path = CHECKOUT) -> set[str]:
    """Every file and folder of the checkout, relative to it, but caches and virtual environments."""
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _NOT_OUTPUTS and not (Path(folder, d) / "pyvenv.cfg").exists()]
        rel = Path(folder).relative_to(root)
        found.update(str(rel / name) for name in [*dirs, *files])
    return found


def pytest_configure(config):
    if not _IS_WORKER:
        config._checkout_before = checkout_entries()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if it left anything new in the checkout: tests write to temporary folders only."""
    before = getattr(session.config, "_checkout_before", None)
    if before is not None:
        session.config._checkout_left = left = sorted(checkout_entries() - before)
        if left:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    left = getattr(config, "_checkout_left", None)
    if left:
        terminalreporter.section("new files in the checkout", red=True)
        terminalreporter.line(
            f"This run left {len(left)} new files or folders in {CHECKOUT}; tests and the notebooks they run must "
            "write to temporary folders only (under pytest, output_path() and the tiny SAM 2 do):"
        )
        for entry in left[:20]:
            terminalreporter.line(f"  {entry}")
        if len(left) > 20:
            terminalreporter.line(f"  ... and {len(left) - 20} more")


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
    if _OWN_DATA_DIR is not None:
        shutil.rmtree(_OWN_DATA_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    return Path(os.environ["MOLMO_MODEL_ID"])


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    """(model, processor) loaded through the same call the notebooks make."""
    from molmo_nb_utils.loading import load_model

    return load_model(tiny_model_path)


@pytest.fixture
def checkout_files():
    """``checkout_entries``, for a test that checks what a call leaves in the checkout."""
    return checkout_entries
