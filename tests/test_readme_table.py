"""The README's notebook table is generated from notebooks/catalog.json and kept current."""

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


def _catalog(*files: str) -> dict:
    return {
        "repository": "someone/repo",
        "branch": "dev",
        "notebooks": [
            {"file": f, "title": f"Title {f[:2]}", "teaches": f"Lesson {f[:2]}", "gpu_memory": "~1 GB"}
            for f in files
        ],
    }


def _readme(block: str) -> str:
    return f"# Title\n\nIntro.\n\n{START}\n{block}{END}\n\nMore text.\n"


# Written out by hand: what the table for _catalog("00_a.ipynb", "01_b.ipynb") must be.
EXPECTED = (
    "| # | Notebook | What it teaches | GPU memory | Colab |\n"
    "|---|---|---|---|---|\n"
    f"| 00 | [Title 00](notebooks/00_a.ipynb) | Lesson 00 | ~1 GB | [![Open In Colab]({BADGE})]"
    "(https://colab.research.google.com/github/someone/repo/blob/dev/notebooks/00_a.ipynb) |\n"
    f"| 01 | [Title 01](notebooks/01_b.ipynb) | Lesson 01 | ~1 GB | [![Open In Colab]({BADGE})]"
    "(https://colab.research.google.com/github/someone/repo/blob/dev/notebooks/01_b.ipynb) |\n"
)


# --- the committed files -------------------------------------------------------------------------


def test_committed_readme_table_matches_catalog():
    catalog = json.loads((REPO / "notebooks" / "catalog.json").read_text(encoding="utf-8"))
    block = mrt.current_block((REPO / "README.md").read_text(encoding="utf-8"))
    assert block == mrt.render_table(catalog), "README.md's table is stale: run `make readme`"


def test_every_notebook_is_in_the_catalog_and_back():
    catalog = json.loads((REPO / "notebooks" / "catalog.json").read_text(encoding="utf-8"))
    listed = sorted(entry["file"] for entry in catalog["notebooks"])
    on_disk = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    assert listed == on_disk
    assert mrt.check((REPO / "README.md").read_text(encoding="utf-8"), catalog, on_disk) == []


def test_check_command_passes_on_the_repo(capsys):
    assert mrt.main(["--check"]) == 0
    assert "current" in capsys.readouterr().out


# --- render_table ----------------------------------------------------------------------------------


def test_render_table_exact():
    assert mrt.render_table(_catalog("00_a.ipynb", "01_b.ipynb")) == EXPECTED


def test_render_table_escapes_pipes_and_line_breaks():
    catalog = _catalog("03_x.ipynb")
    catalog["notebooks"][0]["teaches"] = "A | B\nC"
    row = mrt.render_table(catalog).splitlines()[2]
    assert r"| A \| B C |" in row
    assert row.count(" | ") == 4  # still five cells


# --- check -----------------------------------------------------------------------------------------


def test_check_good_readme_has_no_problems():
    files = ["00_a.ipynb", "01_b.ipynb"]
    assert mrt.check(_readme(EXPECTED), _catalog(*files), files) == []


def test_check_reports_stale_table():
    files = ["00_a.ipynb", "01_b.ipynb"]
    stale = EXPECTED.replace("Lesson 01", "Old lesson")
    problems = mrt.check(_readme(stale), _catalog(*files), files)
    assert len(problems) == 1 and "make readme" in problems[0]


def test_check_reports_empty_block_as_stale():
    problems = mrt.check(_readme(""), _catalog("00_a.ipynb"), ["00_a.ipynb"])
    assert any("differs" in p for p in problems)


def test_check_reports_notebook_missing_from_catalog():
    problems = mrt.check(
        _readme(EXPECTED), _catalog("00_a.ipynb", "01_b.ipynb"), ["00_a.ipynb", "01_b.ipynb", "02_c.ipynb"]
    )
    assert problems == [
        "notebooks/02_c.ipynb is not in catalog.json: add an entry with file, title, teaches, gpu_memory"
    ]


def test_check_reports_catalog_entry_without_notebook():
    problems = mrt.check(_readme(EXPECTED), _catalog("00_a.ipynb", "01_b.ipynb"), ["00_a.ipynb"])
    assert len(problems) == 1 and "lists 01_b.ipynb but notebooks/01_b.ipynb does not exist" in problems[0]


def test_check_reports_entry_without_file():
    catalog = _catalog("00_a.ipynb")
    del catalog["notebooks"][0]["file"]
    problems = mrt.check(_readme(EXPECTED), catalog, ["00_a.ipynb"])
    assert "catalog.json notebook #0 has no 'file'" in problems
    assert "notebooks/00_a.ipynb is not in catalog.json" in " ".join(problems)


def test_check_reports_missing_fields_and_duplicates():
    catalog = _catalog("00_a.ipynb", "00_a.ipynb")
    catalog["notebooks"][1]["gpu_memory"] = " "
    del catalog["branch"]
    problems = mrt.check(_readme(EXPECTED), catalog, ["00_a.ipynb"])
    assert "catalog.json has no 'branch'" in problems
    assert "catalog.json notebook #1 (00_a.ipynb) has no 'gpu_memory'" in problems
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
    problems = mrt.check(text, _catalog("00_a.ipynb"), ["00_a.ipynb"])
    assert len(problems) == 1 and START in problems[0] and found in problems[0]
    with pytest.raises(ValueError, match=found):
        mrt.replace_block(text, EXPECTED)


# --- writing ---------------------------------------------------------------------------------------


def test_write_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(_readme("| old table |\n\nwith text\n"), encoding="utf-8")
    mrt.write_readme(readme, _catalog("00_a.ipynb", "01_b.ipynb"))
    assert readme.read_text(encoding="utf-8") == _readme(EXPECTED)
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temporary file left behind
    mrt.write_readme(readme, _catalog("00_a.ipynb", "01_b.ipynb"))  # idempotent
    assert readme.read_text(encoding="utf-8") == _readme(EXPECTED)


def test_write_readme_without_markers_leaves_file_untouched(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must contain the line"):
        mrt.write_readme(readme, _catalog("00_a.ipynb"))
    assert readme.read_text(encoding="utf-8") == "# no markers\n"


def test_load_catalog_bad_json(tmp_path):
    path = tmp_path / "catalog.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(SystemExit, match="catalog.json is not valid JSON"):
        mrt.load_catalog(path)
    with pytest.raises(SystemExit, match="does not exist"):
        mrt.load_catalog(tmp_path / "missing.json")
