"""What a reader meets in the lessons and the README (issue 31): a score is explained before or where it is
printed, a setting has one name, a printed True says what it answers, a plot has a title, a model's answer
is shown through the one place that shortens it, and the README states no figure that nothing keeps true."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

from molmo_nb_utils.media import DEFAULT_FPS, DEFAULT_MAX_FRAMES, MAX_IMAGE_PIXELS, TRACKING_FPS
from molmo_nb_utils.memory import T4_GIB
from molmo_nb_utils.paths import REPO_ROOT
from molmo_nb_utils.playground import TASKS
from molmo_nb_utils.vision_chunks import VISION_CHUNK

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CATALOG = json.loads((REPO_ROOT / "notebooks" / "catalog.json").read_text())
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _outputs(cell) -> str:
    return "".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", [])
    )


def _code_trees(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            lines = [line for line in cell.source.splitlines() if not line.lstrip().startswith(("!", "%"))]
            yield ast.parse("\n".join(lines))


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request):
    return request.param.name, _read(request.param)


def test_a_lesson_before_05_that_prints_hota_points_to_05(notebook):
    """HOTA, DetA and AssA are explained in 05; 04 prints them first, so it says where to read about them."""
    name, nb = notebook
    if name >= "05" or not any("HOTA" in _outputs(cell) for cell in nb.cells):
        return
    assert any(
        c.cell_type == "markdown" and "HOTA" in c.source and "`05_video_tracking.ipynb`" in c.source
        for c in nb.cells
    ), f"{name} prints HOTA: say in its prose that 05_video_tracking.ipynb explains it"


def test_checkpointing_has_one_name(notebook):
    """transformers' current name is activation checkpointing (``activation_checkpointing``); no lesson
    tells the reader the older name as well."""
    name, nb = notebook
    for cell in nb.cells:
        text = cell.source + _outputs(cell)
        assert not re.search(r"gradient[ _]checkpointing", text, re.IGNORECASE), (
            f"{name}: {cell.source[:80]!r}"
        )


def _is_bare_truth(node: ast.AST) -> bool:
    return isinstance(node, (ast.Compare, ast.BoolOp)) or (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("all", "any", "bool")
    )


def test_a_printed_true_or_false_says_what_it_answers(notebook):
    """``print(a == b)`` or a cell ending in ``a == b`` shows a bare ``True``: print a sentence with it."""
    name, nb = notebook
    for tree in _code_trees(nb):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                assert not (len(node.args) == 1 and _is_bare_truth(node.args[0])), (
                    f"{name}: {ast.unparse(node)}"
                )
        last = tree.body[-1] if tree.body else None
        assert not (isinstance(last, ast.Expr) and _is_bare_truth(last.value)), f"{name}: {ast.unparse(last)}"


def test_a_plot_drawn_in_a_lesson_has_a_title(notebook):
    name, nb = notebook
    for cell in nb.cells:
        if cell.cell_type == "code" and re.search(
            r"\bplt\.(show|figure|subplots|plot|semilogy)\(", cell.source
        ):
            assert re.search(r"\.(title|set_title|suptitle)\(", cell.source), f"{name}: {cell.source[:80]!r}"


def test_a_models_answer_is_shown_through_its_display(notebook):
    """``print(answer)`` shows every character of an answer, a wall of them from a confused model; ``display``
    shortens it on screen (``answer_display``) and the answer keeps them all. (A slice, ``answer[:200]``, is a
    part the lesson chose to show.)"""
    name, nb = notebook
    answers: set[str] = set()
    for tree in _code_trees(nb):
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                called = node.value.func
                called = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
                if called in ("chat", "run"):
                    answers.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                for arg in node.args:
                    assert not (isinstance(arg, ast.Name) and arg.id in answers), (
                        f"{name}: {ast.unparse(node)}"
                    )


def test_the_playgrounds_row_names_every_task():
    entry = next(e for e in CATALOG["notebooks"] if e["file"] == "07_playground.ipynb")
    row = next(line for line in README.splitlines() if "notebooks/07_playground.ipynb" in line)
    for task in TASKS:
        assert re.search(rf"\b{task}\b", entry["teaches"]), task
        assert re.search(rf"\b{task}\b", row), task


def test_the_readme_states_no_count_of_tests():
    """A count of tests is stale the day a test is added, and nothing could keep it true."""
    assert not re.search(r"\b\d[\d,]*\s+tests\b", README)


def _bound(package: str) -> str:
    """The lower bound of ``package`` in the ``colab`` extra, what Colab's set-up cell installs."""
    colab = re.search(r"^colab = \[(.*)\]$", (REPO_ROOT / "pyproject.toml").read_text(), re.M).group(1)
    return re.search(rf'"{package}>=([\d.]+)', colab).group(1)  # (tomllib is Python 3.11+)


def test_the_readmes_figures_are_the_codes():
    """Each figure the README gives about the code is the code's own, so a change there shows here."""
    facts = {
        f"{DEFAULT_FPS:g} per second and the end of the video, spread evenly past {DEFAULT_MAX_FRAMES}",
        f"Images over {MAX_IMAGE_PIXELS // 1_000_000} megapixels",
        f"Colab T4 ({T4_GIB:.2f} GiB usable, `T4_GIB`",
        f"image crops {VISION_CHUNK} at a time",
        f"tracking at {TRACKING_FPS:g} fps",
        f"transformers {_bound('transformers')} is the first with Molmo2",
        f"huggingface_hub {_bound('huggingface_hub')} or newer",
    }
    text = " ".join(README.split())  # line breaks as spaces
    assert [fact for fact in facts if fact not in text] == []
    assert 8160 * 6120 <= MAX_IMAGE_PIXELS and "a 50 MP phone photo loads in full" in text


def test_the_readmes_size_of_the_tiny_model(tiny_model_path):
    size = sum(p.stat().st_size for p in tiny_model_path.iterdir() if p.is_file())
    assert f"(about {size / 1e6:.1f} MB," in README
