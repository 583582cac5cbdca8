"""The README's notebook table is generated from notebooks/catalog.json and notebooks/gpu_check.json."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_readme_table", REPO / "scripts" / "make_readme_table.py")
mrt = importlib.util.module_from_spec(_spec)
sys.modules["make_readme_table"] = mrt  # dataclasses look their module up there
_spec.loader.exec_module(mrt)

START, END = "<!-- notebooks-table:start -->", "<!-- notebooks-table:end -->"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


SPEC = {"model": "allenai/Molmo2-4B", "precision": "bf16", "settings": ["one image"]}
# What gpu_check.json holds: the planner's figures for each lesson setting ...
CHECKS = {
    "lesson_estimates": [
        {"model": "allenai/Molmo2-4B", "precision": p, "setting": s, "estimated_total_gib": gib}
        for p, s, gib in [("bf16", "one image", 1.04), ("bf16", "video", 2.16), ("4bit", "one image", 0.5)]
    ]
}
# ... and, after `make gpu-check` on a GPU, what was measured there
MEASURED = {
    "device": "NVIDIA L4, 22.0 GiB",
    "rows": [
        {"model": "allenai/Molmo2-4B", "precision": "bf16", "setting": "one image", "measured_gib": 0.96},
        {"model": "allenai/Molmo2-4B", "precision": "bf16", "setting": "video", "error": "OutOfMemoryError"},
    ],
}


def _catalog(*files: str) -> dict:
    return {
        "repository": "someone/repo",
        "branch": "dev",
        "notebooks": [
            {"file": f, "title": f"Title {f[:2]}", "teaches": f"Lesson {f[:2]}"} | {"memory": SPEC}
            for f in files
        ],
    }


def _readme(block: str) -> str:
    return f"# Title\n\nIntro.\n\n{START}\n{block}{END}\n\nMore text.\n"


# Written out by hand: what the table for _catalog("00_a.ipynb", "01_b.ipynb") must be.
EXPECTED = (
    "| # | Notebook | What it teaches | GPU memory | Colab |\n"
    "|---|---|---|---|---|\n"
    "| 00 | [Title 00](notebooks/00_a.ipynb) | Lesson 00 | ~1.0 GiB estimated (4B, one image, bf16) | "
    f"[![Open In Colab]({BADGE})]"
    "(https://colab.research.google.com/github/someone/repo/blob/dev/notebooks/00_a.ipynb) |\n"
    "| 01 | [Title 01](notebooks/01_b.ipynb) | Lesson 01 | ~1.0 GiB estimated (4B, one image, bf16) | "
    f"[![Open In Colab]({BADGE})]"
    "(https://colab.research.google.com/github/someone/repo/blob/dev/notebooks/01_b.ipynb) |\n"
)


# --- the committed files -------------------------------------------------------------------------


def _committed() -> tuple[dict, dict]:
    catalog = json.loads((REPO / "notebooks" / "catalog.json").read_text(encoding="utf-8"))
    return catalog, json.loads((REPO / "notebooks" / "gpu_check.json").read_text(encoding="utf-8"))


def test_committed_readme_table_matches_catalog_and_measurements():
    catalog, checks = _committed()
    block = mrt.current_block((REPO / "README.md").read_text(encoding="utf-8"))
    assert block == mrt.render_table(catalog, checks), "README.md's table is stale: run `make readme`"


def test_committed_memory_column_says_where_each_figure_comes_from():
    catalog, checks = _committed()
    block = mrt.current_block((REPO / "README.md").read_text(encoding="utf-8"))
    gpu_rows = checks.get("cuda", {}).get("rows", [])
    measured = {(r["model"], r["precision"], r["setting"]) for r in gpu_rows if "error" not in r}
    for entry in catalog["notebooks"]:
        spec, cell = entry["memory"], mrt.memory_cell(entry["memory"], checks)
        assert cell in block
        if all((spec["model"], spec["precision"], s) in measured for s in spec["settings"]):
            assert " measured on " in cell
        else:  # no GPU measurement: the planner's figure, and the cell says so
            assert " estimated (" in cell and "measured" not in cell


def test_every_notebook_is_in_the_catalog_and_back():
    catalog, checks = _committed()
    listed = sorted(entry["file"] for entry in catalog["notebooks"])
    on_disk = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    assert listed == on_disk
    assert mrt.check((REPO / "README.md").read_text(encoding="utf-8"), catalog, on_disk, checks) == []


def test_check_command_passes_on_the_repo(capsys):
    assert mrt.main(["--check"]) == 0
    assert "current" in capsys.readouterr().out


# --- render_table ----------------------------------------------------------------------------------


def test_render_table_exact():
    assert mrt.render_table(_catalog("00_a.ipynb", "01_b.ipynb"), CHECKS) == EXPECTED


def test_render_table_escapes_pipes_and_line_breaks():
    catalog = _catalog("03_x.ipynb")
    catalog["notebooks"][0]["teaches"] = "A | B\nC"
    row = mrt.render_table(catalog, CHECKS).splitlines()[2]
    assert r"| A \| B C |" in row
    assert row.count(" | ") == 4  # still five cells


# --- the memory column ---------------------------------------------------------------------------


def test_memory_cell_says_estimated_without_a_gpu_measurement():
    assert mrt.memory_cell(SPEC, CHECKS) == "~1.0 GiB estimated (4B, one image, bf16)"
    both = SPEC | {"settings": ["one image", "video"]}
    assert mrt.memory_cell(both, CHECKS) == "~1.0-2.2 GiB estimated (4B, one image to video, bf16)"
    lead = {"before": "none for the planner; to try 4-bit:", **SPEC, "precision": "4bit"}
    assert (
        mrt.memory_cell(lead, CHECKS)
        == "none for the planner; to try 4-bit: ~0.5 GiB estimated (4B, one image, 4bit)"
    )


def test_memory_cell_shows_the_measured_figure_and_the_gpu():
    checks = CHECKS | {"cuda": MEASURED}
    assert mrt.memory_cell(SPEC, checks) == "1.0 GiB measured on NVIDIA L4 (4B, one image, bf16)"
    # a row that failed on the GPU (out of memory) is no measurement: the estimate stands, and says so
    assert mrt.memory_cell(SPEC | {"settings": ["video"]}, checks) == "~2.2 GiB estimated (4B, video, bf16)"
    # measured and estimated together would hide which is which: the whole cell is an estimate
    mixed = mrt.memory_cell(SPEC | {"settings": ["one image", "video"]}, checks)
    assert mixed == "~1.0-2.2 GiB estimated (4B, one image to video, bf16)"
    catalog = _catalog("00_a.ipynb")
    assert "| 1.0 GiB measured on NVIDIA L4 (4B, one image, bf16) |" in mrt.render_table(catalog, checks)


def test_memory_cell_for_a_setting_without_figures_says_what_to_run():
    with pytest.raises(
        ValueError, match="no figure for allenai/Molmo2-4B, bf16, 'two hours'.*make gpu-check"
    ):
        mrt.memory_cell(SPEC | {"settings": ["two hours"]}, CHECKS)
    catalog = _catalog("00_a.ipynb")
    catalog["notebooks"][0]["memory"] = SPEC | {"settings": ["two hours"]}
    problems = mrt.check(_readme(EXPECTED), catalog, ["00_a.ipynb"], CHECKS)
    assert len(problems) == 1 and "no figure for" in problems[0]


def test_check_reports_an_entry_without_memory_rows():
    catalog = _catalog("00_a.ipynb")
    del catalog["notebooks"][0]["memory"]
    problems = mrt.check(_readme(EXPECTED), catalog, ["00_a.ipynb"], CHECKS)
    assert problems == [
        "catalog.json notebook #0 (00_a.ipynb) needs 'memory': {'model': ..., 'precision': ..., 'settings': "
        "[...]} naming the gpu_check.json rows its memory column shows"
    ]


# --- check -----------------------------------------------------------------------------------------


def test_check_good_readme_has_no_problems():
    files = ["00_a.ipynb", "01_b.ipynb"]
    assert mrt.check(_readme(EXPECTED), _catalog(*files), files, CHECKS) == []


def test_check_reports_stale_table():
    files = ["00_a.ipynb", "01_b.ipynb"]
    stale = EXPECTED.replace("Lesson 01", "Old lesson")
    problems = mrt.check(_readme(stale), _catalog(*files), files, CHECKS)
    assert len(problems) == 1 and "make readme" in problems[0]


def test_check_reports_empty_block_as_stale():
    problems = mrt.check(_readme(""), _catalog("00_a.ipynb"), ["00_a.ipynb"], CHECKS)
    assert any("differs" in p for p in problems)


def test_check_reports_notebook_missing_from_catalog():
    problems = mrt.check(
        _readme(EXPECTED),
        _catalog("00_a.ipynb", "01_b.ipynb"),
        ["00_a.ipynb", "01_b.ipynb", "02_c.ipynb"],
        CHECKS,
    )
    assert problems == ["notebooks/02_c.ipynb is not in catalog.json: add an entry with file, title, teaches"]


def test_check_reports_catalog_entry_without_notebook():
    problems = mrt.check(_readme(EXPECTED), _catalog("00_a.ipynb", "01_b.ipynb"), ["00_a.ipynb"], CHECKS)
    assert len(problems) == 1 and "lists 01_b.ipynb but notebooks/01_b.ipynb does not exist" in problems[0]


def test_check_reports_entry_without_file():
    catalog = _catalog("00_a.ipynb")
    del catalog["notebooks"][0]["file"]
    problems = mrt.check(_readme(EXPECTED), catalog, ["00_a.ipynb"], CHECKS)
    assert "catalog.json notebook #0 has no 'file'" in problems
    assert "notebooks/00_a.ipynb is not in catalog.json" in " ".join(problems)


def test_check_reports_missing_fields_and_duplicates():
    catalog = _catalog("00_a.ipynb", "00_a.ipynb")
    catalog["notebooks"][1]["teaches"] = " "
    del catalog["branch"]
    problems = mrt.check(_readme(EXPECTED), catalog, ["00_a.ipynb"], CHECKS)
    assert "catalog.json has no 'branch'" in problems
    assert "catalog.json notebook #1 (00_a.ipynb) has no 'teaches'" in problems
    assert "catalog.json notebook #1 (00_a.ipynb): 00_a.ipynb is listed twice" in problems


@pytest.mark.parametrize(
    "text, found",
    [
        ("# README without markers\n", "found 0 start and 0 end"),
        (f"{END}\n{START}\n", "found 1 start and 1 end"),
        (f"{START}\n{START}\n{END}\n", "found 2 start and 1 end"),
    ],
)
def test_check_reports_bad_markers(text, found):
    problems = mrt.check(text, _catalog("00_a.ipynb"), ["00_a.ipynb"], CHECKS)
    assert len(problems) == 1 and START in problems[0] and found in problems[0]
    with pytest.raises(ValueError, match=found):
        mrt.replace_block(text, EXPECTED)


# --- writing ---------------------------------------------------------------------------------------


def test_write_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(_readme("| old table |\n\nwith text\n"), encoding="utf-8")
    mrt.write_readme(readme, _catalog("00_a.ipynb", "01_b.ipynb"), CHECKS)
    assert readme.read_text(encoding="utf-8") == _readme(EXPECTED)
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temporary file left behind
    mrt.write_readme(readme, _catalog("00_a.ipynb", "01_b.ipynb"), CHECKS)  # idempotent
    assert readme.read_text(encoding="utf-8") == _readme(EXPECTED)


def test_write_readme_without_markers_leaves_file_untouched(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must contain the line"):
        mrt.write_readme(readme, _catalog("00_a.ipynb"), CHECKS)
    assert readme.read_text(encoding="utf-8") == "# no markers\n"


def test_load_catalog_bad_json(tmp_path):
    path = tmp_path / "catalog.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(SystemExit, match="catalog.json is not valid JSON"):
        mrt.load_catalog(path)
    with pytest.raises(SystemExit, match="does not exist"):
        mrt.load_catalog(tmp_path / "missing.json")


# --- the notebooks' Colab badge and set-up cell ----------------------------------------------------

OLD_SETUP = (
    "import sys\n\n"
    'if "google.colab" in sys.modules:  # only on Colab\n'
    "    !git clone -q --depth 1 https://github.com/old/place /content/place\n"
)


def _write_notebook(folder: Path, file: str, badge_repo: str = "old/place") -> Path:
    import nbformat

    cells = [
        nbformat.v4.new_markdown_cell(
            f"# Title\n\n[![Open In Colab]({BADGE})](https://colab.research.google.com/github/{badge_repo}"
            f"/blob/main/notebooks/{file})\n\nWhat it teaches."
        ),
        nbformat.v4.new_markdown_cell("## Setup"),
        nbformat.v4.new_code_cell(OLD_SETUP),
        nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)"),
        nbformat.v4.new_markdown_cell("## Things to try\n\nOpen 01 on Colab."),
    ]
    cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    cells[3].execution_count = 1
    path = folder / file
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def _colab_catalog(*files: str) -> dict:
    catalog = _catalog(*files)
    catalog["notebooks"][-1]["colab_extras"] = ["quantization"]
    return catalog


def test_write_notebooks_rewrites_only_the_badge_and_the_set_up_cell(tmp_path):
    import nbformat

    catalog = _colab_catalog("00_a.ipynb", "01_b.ipynb")
    for file in ("00_a.ipynb", "01_b.ipynb"):
        _write_notebook(tmp_path, file)
    before = nbformat.read(tmp_path / "01_b.ipynb", as_version=4)
    assert len(mrt.notebook_problems(catalog, tmp_path)) == 4  # two stale badges, two stale cells
    assert mrt.write_notebooks(catalog, tmp_path, only=["01_b.ipynb"]) == ["01_b.ipynb"]
    assert len(mrt.notebook_problems(catalog, tmp_path)) == 2  # 00_a was left alone
    after = nbformat.read(tmp_path / "01_b.ipynb", as_version=4)
    assert "github/someone/repo/blob/dev/notebooks/01_b.ipynb" in after.cells[0].source
    assert after.cells[0].source.startswith("# Title\n\n") and after.cells[0].source.endswith(
        "What it teaches."
    )
    setup = after.cells[2].source
    assert '"/content/repo", "https://github.com/someone/repo"' in setup and '"-b", "dev"' in setup
    assert 'f"{folder}[colab,quantization]"' in setup  # every notebook's extra, plus 01's own
    assert [c.source for c in after.cells[1:2] + after.cells[3:]] == [
        c.source for c in before.cells[1:2] + before.cells[3:]
    ]
    assert after.cells[3].outputs == before.cells[3].outputs and after.cells[3].execution_count == 1
    assert mrt.write_notebooks(catalog, tmp_path) == ["00_a.ipynb"]
    assert mrt.write_notebooks(catalog, tmp_path) == []  # idempotent
    assert mrt.notebook_problems(catalog, tmp_path) == []


def test_notebook_problems_name_a_badge_a_clone_url_or_a_link_that_disagree(tmp_path):
    import nbformat

    catalog = _colab_catalog("00_a.ipynb")
    path = _write_notebook(tmp_path, "00_a.ipynb")
    mrt.write_notebooks(catalog, tmp_path)
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].source = nb.cells[2].source.replace("someone/repo", "someone/fork")
    nb.cells[4].source += " https://colab.research.google.com/github/someone/fork/blob/dev/notebooks/01.ipynb"
    nbformat.write(nb, path)
    problems = mrt.notebook_problems(catalog, tmp_path)
    assert problems == [
        "notebooks/00_a.ipynb: its Colab set-up cell differs from the one the catalog gives (repository, "
        "branch, packages): run `make readme` (or this script with --only 00_a.ipynb)",
        "notebooks/00_a.ipynb links https://colab.research.google.com/github/someone/fork/blob/dev/notebooks/"
        "01.ipynb, not the catalog's someone/repo (branch dev): run `make readme`",
    ]
    catalog["branch"] = "main"  # the maintainer moved the branch: every badge is now stale
    assert any("its Colab badge is not the catalog's" in p for p in mrt.notebook_problems(catalog, tmp_path))


def test_readme_links_outside_the_table_must_follow_the_catalog_too():
    catalog = _colab_catalog("00_a.ipynb")
    text = (
        _readme(EXPECTED)
        + "[open](https://colab.research.google.com/github/old/place/blob/dev/notebooks/x)\n"
    )
    assert len(mrt._url_problems(text, catalog, "README.md")) == 1
    assert mrt._url_problems(_readme(EXPECTED), catalog, "README.md") == []


def test_a_notebook_without_badge_or_set_up_cell_is_named_not_rewritten(tmp_path):
    import nbformat

    catalog = _colab_catalog("00_a.ipynb")
    path = tmp_path / "00_a.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title")]), path)
    before = path.read_text()
    assert mrt.write_notebooks(catalog, tmp_path) == [] and path.read_text() == before
    assert "needs one line with the Colab badge" in mrt.notebook_problems(catalog, tmp_path)[0]


def test_catalog_needs_an_owner_name_repository_and_extras_that_pyproject_has():
    catalog = _colab_catalog("00_a.ipynb")
    assert mrt.catalog_problems(catalog) == []
    catalog["repository"] = "https://github.com/someone/repo"
    catalog["notebooks"][0]["colab_extras"] = ["peft>=0.18"]  # a requirement, not an extra's name
    catalog["colab_packages"] = ["molmo-utils>=0.0.1"]  # the old place for what Colab lacks
    problems = mrt.catalog_problems(catalog)
    assert any("must be GitHub's 'owner/name'" in p for p in problems)
    assert any("names peft>=0.18, not an extra of pyproject.toml" in p for p in problems)
    assert any("'colab_packages' is no longer read" in p for p in problems)


def test_every_extra_the_catalog_names_is_one_of_pyprojects():
    catalog = mrt.load_catalog()
    assert mrt.catalog_problems(catalog) == []
    assert {"colab", "quantization", "supervision"} <= mrt.package_extras()
