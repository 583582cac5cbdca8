"""Test session setup: everything runs offline on a tiny random Molmo2 built here.

The tiny model is built once per session into a temporary folder and ``MOLMO_MODEL_ID`` points
at it before any notebook kernel starts, so nbval runs the notebooks exactly as a reader would,
only on the tiny model. The test doubles several test files share live here too: ``FakeAsk``
(stands in for ``chat`` and ``chat_batch`` in a run) and ``Interrupt`` (Ctrl-C during training);
tests import them with ``from conftest import FakeAsk``.

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


# After the environment: transformers and the Hub read it when they are imported.
from transformers import TrainerCallback  # noqa: E402

from molmo_nb_utils.asking import Answer  # noqa: E402
from molmo_nb_utils.media import load_image  # noqa: E402

# What FakeAsk answers about every image: two points, at the centre and a quarter of the way in.
FAKE_ANSWER = '<points coords="1 1 500 500 2 250 250">dot</points>'


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


# ---------------------------------------------------------------------------------------------
# Test doubles shared by several test files


class FakeAsk:
    """Stand-ins for ``chat`` (call it) and ``chat_batch`` (``.batch``), as ``run_dataset`` calls them.

    Each answers ``FAKE_ANSWER`` about the image asked about (7 prompt tokens, 3 of them visual) and
    lists what it was asked: ``asked``, the file of each single question; ``batches``, the files of each
    batch answered. A file named in ``fail_on`` fails (in a batch: the whole batch); ``stop_after``
    single questions or ``stop_at_batch`` batches, the reader presses Stop (KeyboardInterrupt).
    ``settings`` lists the keywords of every call (how the media were to be shown, ...).
    """

    def __init__(self, fail_on=(), stop_after: int | None = None, stop_at_batch: int | None = None):
        self.fail_on, self.stop_after, self.stop_at_batch = set(fail_on), stop_after, stop_at_batch
        self.asked: list[str] = []
        self.batches: list[list[str]] = []
        self.settings: list[dict] = []

    def _answer(self, messages) -> Answer:
        path = Path(messages[0]["content"][0]["image"])
        if path.name in self.fail_on:
            raise RuntimeError(f"cannot read {path.name} (simulated)")
        return Answer(FAKE_ANSWER, images=[load_image(path)], prompt_tokens=7, visual_tokens=3)

    def __call__(self, model, processor, messages, **settings) -> Answer:
        if self.stop_after is not None and len(self.asked) == self.stop_after:
            raise KeyboardInterrupt  # the reader presses Stop while the model is answering
        self.asked.append(Path(messages[0]["content"][0]["image"]).name)
        self.settings.append(settings)
        return self._answer(messages)

    def batch(self, model, processor, conversations, **settings) -> list[Answer]:
        if self.stop_at_batch is not None and len(self.batches) == self.stop_at_batch:
            raise KeyboardInterrupt
        self.settings.append(settings)
        answers = [self._answer(c) for c in conversations]  # one failure fails the whole batch
        self.batches.append([Path(c[0]["content"][0]["image"]).name for c in conversations])
        return answers


class Interrupt(TrainerCallback):
    """Ctrl-C after optimizer step ``at``: a training killed part-way, to resume."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt


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
    return Interrupt


# Variables an outer make hands down to everything it runs (`make test-latest` runs `make test` with VENV=...,
# CONSTRAINTS=...; MAKEFLAGS carries them and the directory printing of a sub-make).
OUTER_MAKE = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "VENV", "DEV_VENV", "CONSTRAINTS")


def reader_make_env(**extra: str) -> dict[str, str]:
    """The environment of a reader's own ``make`` in this checkout: none of an outer make's variables."""
    return {**{k: v for k, v in os.environ.items() if k not in OUTER_MAKE}, **extra}
