"""Every notebook follows the collection's lesson structure (nbval runs them; this checks their shape)."""

from __future__ import annotations

import json
import re
import sys

import nbformat
import pytest

from molmo_nb_utils.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from make_readme_table import memory_cell  # noqa: E402

CATALOG = json.loads((REPO_ROOT / "notebooks" / "catalog.json").read_text())
CHECKS = json.loads((REPO_ROOT / "notebooks" / "gpu_check.json").read_text())
ENTRIES = {entry["file"]: entry for entry in CATALOG["notebooks"]}


@pytest.fixture(params=sorted(ENTRIES), ids=lambda f: f)
def notebook(request):
    path = REPO_ROOT / "notebooks" / request.param
    return ENTRIES[request.param], nbformat.read(path, as_version=4)


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_opening_matches_the_catalog(notebook):
    entry, nb = notebook
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith(f"# {entry['title']}\n")
    badge = f"colab.research.google.com/github/{CATALOG['repository']}/blob/{CATALOG['branch']}/notebooks/{entry['file']}"
    assert badge in first.source
    # the same memory figure as the README's table: measured where make gpu-check measured it, else estimated
    assert f"**GPU memory needed:** {memory_cell(entry['memory'], CHECKS)}." in first.source
    assert "You will learn" in first.source


def test_installs_only_on_colab_and_checks_the_hardware(notebook):
    entry, nb = notebook
    code = _code(nb)
    # the set-up cell comes first; make_readme_table writes it from the catalog (tests/test_colab.py runs it)
    assert code[0].startswith("# Colab only:") and 'if "google.colab" in sys.modules' in code[0], (
        "the Colab set-up cell is written from notebooks/catalog.json: run "
        f"`.venv/bin/python scripts/make_readme_table.py --only {entry['file']}` (or `make readme` for all)"
    )
    assert any("hardware_report()" in src for src in code[:3])


def test_model_comes_from_one_place(notebook):
    _, nb = notebook
    for src in _code(nb):
        for call in re.findall(r"load_model\(([^)]*)\)", src):
            assert call.startswith("model_id("), call
        assert not re.search(r"""from_pretrained\(\s*["']allenai/""", src)


def test_ends_with_things_to_try_and_has_no_stray_outputs(notebook):
    _, nb = notebook
    assert nb.cells[-1].cell_type == "markdown" and "## Things to try" in nb.cells[-1].source
    for cell in nb.cells:
        assert "execution" not in cell.metadata, f"a run's timestamps in {cell.source[:60]!r}"
        if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" not in cell.source:
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]


def test_things_to_try_ends_with_the_next_lesson(notebook):
    """Each lesson but the last ends by naming the one after it in the catalog; the last names none."""
    entry, nb = notebook
    order = [e["file"] for e in CATALOG["notebooks"]]
    following = order[order.index(entry["file"]) + 1 :]
    named = re.findall(r"^- Next: `([^`]+)`", nb.cells[-1].source, flags=re.M)
    assert named == following[:1], f"{entry['file']} should end with '- Next: `{following[:1]}`'"


def test_checked_outputs_do_not_depend_on_where_the_repo_lives(notebook):
    _, nb = notebook
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
            assert not re.search(r"PosixPath|/(work|tmp|home|content|Users)/", text), text[:120]
