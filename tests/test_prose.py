"""Lesson prose is checked like code: a literal the markdown shows is what the notebook runs or prints.

The convention (README, "For maintainers"). In each notebook's markdown, these literals must appear
verbatim in a code cell or in a checked output (a ``# NBVAL_CHECK_OUTPUT`` cell, which ``make test``
compares) of the same notebook:

1. every ``coords="..."`` value, inline, in a fenced block or in plain text. A value may end in ``...``
   (``coords="0.5 1 141 222;1.0 2 828 833;..."``): the part before it is checked. A value that is only
   ``...`` is a placeholder.
2. every inline code span that reads as a printed value: two or more numbers separated only by spaces,
   commas, semicolons, colons or ``x`` (``1 4 114 650``, ``[2, 3, 3]``, ``640x360``), optionally after
   a one-word label (``ids [1, 2, 4]``); or a number with a unit (``36.7 px``, ``19.4 GB``, ``518 tokens``).
3. every memory size in plain prose (``19.4 GB``, ``~7 GiB``): the number and its unit, as a cell shows
   them ("a 16 GB GPU" names hardware and is not checked). The opening "GPU memory needed" line is left to
   test_notebooks, which checks it against the catalog.

Not checked, on purpose: a single bare number in backticks (``2.5``, a format example), code (``fps=2``,
``max_crops=2``), file names, and ordinary prose ("2 fps", "Image 2"). So to quote a figure a cell prints,
write it in backticks (or, for memory, as it is printed) and put its cell under ``# NBVAL_CHECK_OUTPUT``.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

_COORDS = re.compile(r"""coords\s*=\s*(?:\\?"|')(?P<value>[^"'\\]*)""")
_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_NUMBER = r"\d+(?:[.,]\d+)*"
_UNITS = r"(?:px|GB|GiB|MB|MiB|KB|KiB|tokens|frames|crops|s)"
# two or more numbers, bracketed or not, after an optional one-word label
_NUMBER_LIST = re.compile(rf"(?:[A-Za-z]+:? )?[\[(]?{_NUMBER}(?:(?:[ ,;:]+|x){_NUMBER})+[\])]?")
_WITH_UNIT = re.compile(rf"~?{_NUMBER} ?{_UNITS}")
_MEMORY = re.compile(
    r"(?<![\w.,])(\d+(?:\.\d+)?) ?(GB|GiB|MB|MiB)\b(?! GPU| card)"
)  # "a 16 GB GPU" names hardware


def literals(markdown: str) -> list[str]:
    """The literals of one markdown cell that must be backed by a cell (see the module docstring)."""
    found: list[str] = []
    for match in _COORDS.finditer(markdown):
        value = match.group("value").split("...")[0].rstrip(" ;")
        if value.strip(" .;"):
            found.append(value)
    plain = _FENCE.sub(" ", markdown)
    for match in _SPAN.finditer(plain):
        span = match.group(1).strip()
        if "coords" in span:
            continue  # rule 1 reads it
        if _NUMBER_LIST.fullmatch(span) or _WITH_UNIT.fullmatch(span):
            found.append(span.lstrip("~"))
    prose = _SPAN.sub(" ", plain)
    found.extend(f"{number} {unit}" for number, unit in _MEMORY.findall(prose))
    return found


def _backing(nb) -> str:
    """What the notebook runs and what its checked cells print, as one text to search."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts.append(cell.source)
        for output in cell.get("outputs", []):
            parts.append(str(output.get("text", "")))
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def _found(literal: str, backing: str) -> bool:
    if literal in backing:
        return True
    # a memory size may be printed without the space ("19.4GB") or the other way round
    match = _MEMORY.fullmatch(literal)
    return (
        bool(match)
        and re.search(rf"(?<![\d.]){re.escape(match.group(1))} ?{match.group(2)}\b", backing) is not None
    )


def unbacked(path: Path) -> list[str]:
    """``cell N: 'literal'`` for each literal of the notebook's markdown that no cell backs."""
    nb = nbformat.read(path, as_version=4)
    backing = _backing(nb)
    missing = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown" or index == 0:  # cell 0: the opening, checked by test_notebooks
            continue
        missing += [f"cell {index}: {lit!r}" for lit in literals(cell.source) if not _found(lit, backing)]
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_literal_the_prose_shows_is_run_or_printed(path):
    missing = unbacked(path)
    assert not missing, (
        f"{path.name}: the markdown shows literals that no code cell or checked output has "
        f"(fix the text, or print the value in a # NBVAL_CHECK_OUTPUT cell):\n  " + "\n  ".join(missing)
    )


# --- the checker itself ----------------------------------------------------------------------------


def test_literals_reads_coords_number_lists_and_sizes_but_not_ordinary_prose():
    md = (
        'The answer `<points coords="0.5 1 241 406;1.0 2 531 361;...">coins</points>` and\n'
        '```\n<points coords="1 1 117 410 2 266 414;1 3 114 650">coins</points>\n```\n'
        "So `1 3 114 650` is point 3; crops `[2, 3, 3]`; `ids [1, 2, 4]`; `36.7 px`; `640x360`.\n"
        "The download is about 10 GB.\n"
        'A placeholder `<points coords="...">label</points>`, a time like `2.5`, `fps=2`, `max_crops=2`,\n'
        "`05_video_tracking.ipynb`, `allenai/Molmo2-4B`, 2 fps, Image 2, 24 coins, a 16 px patch, a 24 GB GPU."
    )
    assert literals(md) == [
        "0.5 1 241 406;1.0 2 531 361",
        "1 1 117 410 2 266 414;1 3 114 650",
        "1 3 114 650",
        "[2, 3, 3]",
        "ids [1, 2, 4]",
        "36.7 px",
        "640x360",
        "10 GB",
    ]


def _notebook(tmp_path: Path, markdown: str, code: str, output: str = "") -> Path:
    cell = nbformat.v4.new_code_cell(code)
    if output:
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_markdown_cell(markdown), cell]
    )
    path = tmp_path / "99_x.ipynb"
    nbformat.write(nb, path)
    return path


def test_the_issue_examples_fail_and_their_fixes_pass(tmp_path):
    # 03 before the fix: the prose named (114, 650) point 3, the code made it point 4.
    code = "EXAMPLE = 'I see <points coords=\"1 1 117 410 2 266 414 3 400 420;1 4 114 650 5 265 645\">coins</points>'"
    bad = _notebook(
        tmp_path,
        'Like `<points coords="1 1 117 410 2 266 414;1 3 114 650">coins</points>`: `1 3 114 650`',
        code,
    )
    assert unbacked(bad) == ["cell 1: '1 1 117 410 2 266 414;1 3 114 650'", "cell 1: '1 3 114 650'"]
    good = _notebook(tmp_path, "So `1 4 114 650 5 265 645` holds points 4 and 5.", code)
    assert unbacked(good) == []
    # 04 before the fix: the prose showed other coordinates than the cell printed.
    printed = 'I count <points coords="0.5 1 141 222;1.0 2 828 833;1.5 3 875 250">coins</points>\n'
    bad = _notebook(tmp_path, '`coords="0.5 1 241 406;1.0 2 531 361;..."`', "print(EXAMPLE)", printed)
    assert unbacked(bad) == ["cell 1: '0.5 1 241 406;1.0 2 531 361'"]
    good = _notebook(tmp_path, '`coords="0.5 1 141 222;1.0 2 828 833;..."`', "print(EXAMPLE)", printed)
    assert unbacked(good) == []
    # 00 before the fix: "about 10 GB" where the cell prints 19.4 GB.
    assert unbacked(_notebook(tmp_path, "downloads about 10 GB", "", "float32: 19.4 GB\n")) == [
        "cell 1: '10 GB'"
    ]
    assert unbacked(_notebook(tmp_path, "downloads about 19.4 GB", "", "float32: 19.4 GB\n")) == []


def test_a_literal_must_be_shown_whole():
    backing = "crops per image [2, 3]\nfloat32: 19.4GB\n"
    assert not _found("[2, 3, 3]", backing)
    assert _found("19.4 GB", backing) and not _found("9.4 GB", backing)
