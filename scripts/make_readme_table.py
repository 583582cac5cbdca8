"""Write what ``notebooks/catalog.json`` decides into README.md and the notebooks, or check that it is current.

The catalog is the one place that describes the notebooks, so what follows from it is generated, never edited:

* README's table of notebooks. Its memory column comes from ``notebooks/gpu_check.json`` (``make gpu-check``):
  the figure measured on a GPU where one exists for the notebook's model, setting and precision, with the
  GPU's name, and the planner's estimate, said to be one, where none does. Each notebook's opening line
  ("GPU memory needed: ...") says the same (a test checks).
* Each notebook's Colab badge and Colab set-up cell, from the catalog's ``repository`` and ``branch`` (where
  the collection is published) and a notebook's ``colab_extras``: the pyproject.toml extras only it needs on
  top of the ``colab`` extra every notebook installs (e.g. ``quantization`` for 06's 4-bit section). Only those
  two cells change.

    .venv/bin/python scripts/make_readme_table.py           # rewrite README's table and every notebook's badge
                                                            # and set-up cell (make readme)
    .venv/bin/python scripts/make_readme_table.py --only 00_setup.ipynb   # README and these notebooks only
    .venv/bin/python scripts/make_readme_table.py --check   # exit 1 if README.md, a notebook or the catalog
                                                            # disagree
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from urllib.parse import quote

import tomllib

from molmo_nb_utils.paths import atomic_path

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
CATALOG = NOTEBOOKS_DIR / "catalog.json"
CHECKS = NOTEBOOKS_DIR / "gpu_check.json"
PYPROJECT = REPO_ROOT / "pyproject.toml"
START = "<!-- notebooks-table:start -->"
END = "<!-- notebooks-table:end -->"
FIELDS = ("file", "title", "teaches")
MEMORY_FIELDS = ("model", "precision", "settings")  # which gpu_check.json rows the memory column shows
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
# The set-up cell's first line. The cell itself is found by its google.colab check, which older cells have too.
SETUP_MARK = "# Colab only:"
_BADGE_LINE = re.compile(r"^\[!\[Open In Colab\]\([^)\s]*\)\]\([^)\s]*\)[ \t]*$", re.M)
_COLAB_URL = re.compile(r"https://colab\.research\.google\.com/github/[^)\s\"'`]+")
_CLONE_URL = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+")
HEADER = "| # | Notebook | What it teaches | GPU memory | Colab |\n|---|---|---|---|---|\n"
_BLOCK = re.compile(rf"^{re.escape(START)}[ \t]*\n(.*?)^{re.escape(END)}[ \t]*$", re.M | re.S)


def load_catalog(path: Path = CATALOG) -> dict:
    """Read catalog.json; a broken file is named with the JSON error so it can be fixed."""
    return _load_json(path, "the list of notebooks the README table is made from")


def load_checks(path: Path = CHECKS) -> dict:
    """Read gpu_check.json, the measured and estimated memory figures the table's memory column shows."""
    return _load_json(path, "written by `make gpu-check`, the memory figures of the README table")


def _load_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"{path} does not exist: it is {what}.") from None
    except json.JSONDecodeError as err:
        raise SystemExit(f"{path} is not valid JSON ({err}): fix it and run again.") from None


def catalog_problems(catalog: dict, extras: set[str] | None = None) -> list[str]:
    """What keeps the table from being rendered: missing keys, entries without a file, duplicates.

    ``extras``: the package's optional-dependency names a notebook's ``colab_extras`` may name (pyproject.toml's).
    """
    extras = package_extras() if extras is None else extras
    problems = [f"catalog.json has no {key!r}" for key in ("repository", "branch") if not catalog.get(key)]
    if catalog.get("repository") and not re.fullmatch(r"[\w.-]+/[\w.-]+", str(catalog["repository"])):
        problems.append(
            f"catalog.json 'repository' must be GitHub's 'owner/name', got {catalog['repository']!r}"
        )
    if "colab_packages" in catalog:
        problems.append(
            "catalog.json 'colab_packages' is no longer read: what Colab lacks is pyproject.toml's 'colab' "
            "extra; remove the key"
        )
    entries = catalog.get("notebooks")
    if not isinstance(entries, list):
        return [*problems, "catalog.json has no 'notebooks' list"]
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"catalog.json notebook #{i} is not an object with {', '.join(FIELDS)}")
            continue
        name = entry.get("file")
        where = f"catalog.json notebook #{i}" + (f" ({name})" if name else "")
        problems += [f"{where} has no {key!r}" for key in FIELDS if not str(entry.get(key) or "").strip()]
        memory = entry.get("memory")
        if not isinstance(memory, dict) or not all(memory.get(key) for key in MEMORY_FIELDS):
            problems.append(
                f"{where} needs 'memory': {{'model': ..., 'precision': ..., 'settings': [...]}} naming the "
                "gpu_check.json rows its memory column shows"
            )
        if "colab_extras" in entry and not _strings(entry["colab_extras"], empty_ok=True):
            problems.append(
                f"{where}: 'colab_extras' must be a list of pyproject.toml extras such as \"quantization\""
            )
        elif unknown := sorted(set(entry.get("colab_extras", [])) - set(extras)):
            problems.append(
                f"{where}: 'colab_extras' names {', '.join(unknown)}, not an extra of pyproject.toml "
                f"([project.optional-dependencies]: {', '.join(sorted(extras))})"
            )
        if name in seen:
            problems.append(f"{where}: {name} is listed twice")
        seen.add(name)
    return problems


def file_problems(catalog: dict, notebook_files: list[str]) -> list[str]:
    """Where the catalog and the notebooks/*.ipynb files disagree, in both directions."""
    entries = catalog.get("notebooks") if isinstance(catalog.get("notebooks"), list) else []
    listed = [e["file"] for e in entries if isinstance(e, dict) and e.get("file")]
    missing = [
        f"catalog.json lists {name} but notebooks/{name} does not exist: remove the entry or add the notebook"
        for name in listed
        if name not in notebook_files
    ]
    unlisted = [
        f"notebooks/{name} is not in catalog.json: add an entry with {', '.join(FIELDS)}"
        for name in sorted(notebook_files)
        if name not in listed
    ]
    return missing + unlisted


def package_extras(path: Path = PYPROJECT) -> set[str]:
    """The names of pyproject.toml's optional dependencies (``pip install -e .[name]``)."""
    return set(tomllib.loads(path.read_text(encoding="utf-8"))["project"].get("optional-dependencies", {}))


def _strings(value, *, empty_ok: bool = False) -> bool:
    return (
        isinstance(value, list)
        and (empty_ok or bool(value))
        and all(isinstance(v, str) and v.strip() for v in value)
    )


def _cell(text: str) -> str:
    """One table cell: a '|' or a line break would break the Markdown row."""
    return " ".join(str(text).split()).replace("|", r"\|")


def _figures(checks: dict, model: str, precision: str, setting: str) -> tuple[float, str | None]:
    """(GiB, GPU name) measured on a GPU for this row, or (the planner's whole estimate, None)."""
    key = (model, precision, setting)
    gpu = checks.get("cuda") or {}
    for row in gpu.get("rows", []):
        if (row["model"], row["precision"], row["setting"]) == key and "error" not in row:
            return row["measured_gib"], gpu["device"].split(",")[0]
    for row in checks.get("lesson_estimates", []):
        if (row["model"], row["precision"], row["setting"]) == key:
            return row["estimated_total_gib"], None
    raise ValueError(
        f"gpu_check.json has no figure for {model}, {precision}, {setting!r}: use a setting of "
        "scripts/gpu_check.py's LESSONS, or run `make gpu-check` (--estimates-only) after adding one"
    )


def memory_cell(spec: dict, checks: dict) -> str:
    """The memory column for one notebook: measured (with the GPU) where every setting was, else estimated."""
    found = [_figures(checks, spec["model"], spec["precision"], s) for s in spec["settings"]]
    low, high = min(gib for gib, _ in found), max(gib for gib, _ in found)
    figure = f"{low:.1f} GiB" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f} GiB"
    devices = {device for _, device in found}
    how = f"measured on {devices.pop()}" if len(devices) == 1 and None not in devices else "estimated"
    what = f"{spec['model'].split('Molmo2-')[-1]}, {' to '.join(spec['settings'])}, {spec['precision']}"
    text = f"{figure} {how}" if how != "estimated" else f"~{figure} {how}"
    return " ".join(filter(None, [spec.get("before", ""), f"{text} ({what})"]))


def colab_url(catalog: dict, file: str) -> str:
    """Where Colab opens ``notebooks/<file>`` of the published repository and branch."""
    return (
        f"https://colab.research.google.com/github/{catalog['repository']}/blob/{catalog['branch']}"
        f"/notebooks/{quote(file)}"
    )


def colab_badge(catalog: dict, file: str) -> str:
    """The "Open In Colab" badge, one Markdown line, for the README table and the notebook's opening."""
    return f"[![Open In Colab]({BADGE})]({colab_url(catalog, file)})"


def setup_cell(catalog: dict, entry: dict) -> str:
    """The source of a notebook's Colab set-up cell: clone, install the package with its Colab extras.

    Why this shape: on Colab a failed ``!git clone`` or ``%pip`` only prints, so "Run all" went on and the
    next cell failed with ``ModuleNotFoundError``; here each step raises, with git's or pip's own message.
    What Colab lacks is named once, in pyproject.toml's ``colab`` extra (and a lesson's own extras, from
    the catalog's ``colab_extras``), so the cell only says which extras. ``sys.path`` gets the clone for this
    session (a new editable install is seen only after a restart). Short and plain on purpose: it is the
    first code a reader meets in every lesson.
    """
    repository, branch = catalog["repository"], catalog["branch"]
    extras = ",".join(["colab", *entry.get("colab_extras", [])])
    return f"""{SETUP_MARK} fetch this collection and install what Colab lacks; elsewhere it does nothing.
# Written by `make readme` from notebooks/catalog.json: change the catalog, not this cell.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    folder, url = "/content/{repository.split("/")[1]}", "https://github.com/{repository}"
    clone = ["git", "clone", "-q", "--depth=1", "-b", "{branch}", url, folder]
    install = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{{folder}}[{extras}]"]
    for command in [install] if os.path.isdir(folder) else [clone, install]:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:  # stop "Run all" here, with git's or pip's own message
            raise RuntimeError(f"{{' '.join(command)}} failed; online? Then rerun this cell.\\n{{done.stderr}}")
    sys.path.insert(0, folder)  # importable now; an editable install is seen only after a restart"""


def render_table(catalog: dict, checks: dict) -> str:
    """The Markdown table, one row per catalog entry in catalog order, ending with a newline."""
    rows = []
    for entry in catalog["notebooks"]:
        file = entry["file"]
        number = file.split("_", 1)[0] if "_" in file else ""
        badge = colab_badge(catalog, file)
        link = f"[{_cell(entry['title'])}](notebooks/{quote(file)})"
        cells = [number, link, _cell(entry["teaches"]), _cell(memory_cell(entry["memory"], checks)), badge]
        rows.append("| " + " | ".join(cells) + " |\n")
    return HEADER + "".join(rows)


def current_block(readme_text: str) -> str:
    """The text between the two marker lines; a clear error when they are missing, repeated or reversed."""
    found = list(_BLOCK.finditer(readme_text))
    if len(found) != 1 or readme_text.count(START) != 1 or readme_text.count(END) != 1:
        raise ValueError(
            f"README.md must contain the line {START} followed later by the line {END}, once each "
            f"(found {readme_text.count(START)} start and {readme_text.count(END)} end marker(s))"
        )
    return found[0].group(1)


def replace_block(readme_text: str, table: str) -> str:
    """README text with the block between the markers replaced by ``table``."""
    current_block(readme_text)  # validates the markers
    return _BLOCK.sub(lambda _: f"{START}\n{table}{END}", readme_text, count=1)


def check(readme_text: str, catalog: dict, notebook_files: list[str], checks: dict) -> list[str]:
    """Every reason the README table or the catalog is out of date; empty when all is current."""
    broken = catalog_problems(catalog)
    problems = broken + file_problems(catalog, list(notebook_files))
    try:
        block = current_block(readme_text)
        table = None if broken else render_table(catalog, checks)
    except ValueError as err:
        return [*problems, str(err)]
    if table is not None and block != table:
        problems.append(
            "README.md's notebooks table differs from notebooks/catalog.json and notebooks/gpu_check.json: "
            "run `make readme`"
        )
    return problems


def _read_notebook(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def _setup_index(nb) -> int | None:
    """Index of the notebook's Colab set-up cell: the code cell that runs only on Colab."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and 'if "google.colab" in sys.modules' in cell.source:
            return index
    return None


def sync_notebook(nb, catalog: dict, entry: dict) -> list[str]:
    """Put the catalog's badge and set-up cell into ``nb`` (in place); returns what could not be done."""
    file = entry["file"]
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown" or len(_BADGE_LINE.findall(first.source)) != 1:
        return [
            f"notebooks/{file}: its first cell needs one line with the Colab badge, [![Open In Colab](...)](...)"
        ]
    index = _setup_index(nb)
    if index is None:
        return [
            f'notebooks/{file}: no Colab set-up cell (a code cell with `if "google.colab" in sys.modules`)'
        ]
    badge = colab_badge(catalog, file)
    first.source = _BADGE_LINE.sub(lambda _: badge, first.source)
    nb.cells[index].source = setup_cell(catalog, entry)
    return []


def _url_problems(text: str, catalog: dict, where: str) -> list[str]:
    """Colab links in ``text`` that point at another repository or branch than the catalog's."""
    prefix = colab_url(catalog, "")
    return [
        f"{where} links {url}, not the catalog's {catalog['repository']} (branch {catalog['branch']}): "
        "run `make readme`"
        for url in dict.fromkeys(_COLAB_URL.findall(text))
        if not url.startswith(prefix)
    ]


def notebook_problems(
    catalog: dict, folder: Path = NOTEBOOKS_DIR, only: list[str] | None = None
) -> list[str]:
    """Where a notebook's badge, set-up cell or Colab links disagree with the catalog."""
    problems = []
    for entry in catalog["notebooks"]:
        file = entry["file"]
        if (only is not None and file not in only) or not (folder / file).is_file():
            continue  # a missing file is file_problems' to report
        nb = _read_notebook(folder / file)
        expected = _read_notebook(folder / file)
        if broken := sync_notebook(expected, catalog, entry):
            problems += broken
            continue
        if nb.cells[0].source != expected.cells[0].source:
            problems.append(
                f"notebooks/{file}: its Colab badge is not the catalog's: run `make readme` (or --only {file})"
            )
        index = _setup_index(nb)
        if nb.cells[index].source != expected.cells[index].source:
            problems.append(
                f"notebooks/{file}: its Colab set-up cell differs from the one the catalog gives "
                f"(repository, branch, packages): run `make readme` (or this script with --only {file})"
            )
        text = "\n".join(cell.source for cell in nb.cells[1:])  # the badge was checked above
        problems += _url_problems(
            _BADGE_LINE.sub("", nb.cells[0].source) + text, catalog, f"notebooks/{file}"
        )
    return problems


def write_notebooks(catalog: dict, folder: Path = NOTEBOOKS_DIR, only: list[str] | None = None) -> list[str]:
    """Rewrite the badge and set-up cell of each catalog notebook (or of ``only``); returns those changed.

    Idempotent, and nothing else in a notebook changes; a notebook that cannot be synced is left alone.
    """
    import nbformat

    changed = []
    for entry in catalog["notebooks"]:
        path = folder / entry["file"]
        if (only is not None and entry["file"] not in only) or not path.is_file():
            continue
        nb = _read_notebook(path)
        before = nbformat.writes(nb)
        if sync_notebook(nb, catalog, entry):
            continue  # notebook_problems says why
        if nbformat.writes(nb) != before:
            with atomic_path(path) as tmp:
                nbformat.write(nb, tmp)
            changed.append(entry["file"])
    return changed


def write_readme(readme_path: Path, catalog: dict, checks: dict) -> None:
    """Rewrite the table block in place, atomically (temporary file in the same folder, then os.replace)."""
    text = replace_block(readme_path.read_text(encoding="utf-8"), render_table(catalog, checks))
    with atomic_path(readme_path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def notebook_files(folder: Path = NOTEBOOKS_DIR) -> list[str]:
    return sorted(p.name for p in folder.glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if anything is stale")
    parser.add_argument(
        "--only", nargs="+", metavar="NOTEBOOK", help="rewrite and check only these notebooks (file names)"
    )
    args = parser.parse_args(argv)
    catalog, checks = load_catalog(), load_checks()
    only = [Path(name).name for name in args.only] if args.only else None
    if only and (unknown := sorted(set(only) - {e.get("file") for e in catalog.get("notebooks") or []})):
        print(f"Not in notebooks/catalog.json: {', '.join(unknown)}", file=sys.stderr)
        return 1
    if not args.check:
        if broken := catalog_problems(catalog):
            print("Cannot write the table:\n- " + "\n- ".join(broken), file=sys.stderr)
            return 1
        try:
            write_readme(README, catalog, checks)
        except ValueError as err:
            print(f"{README}: {err}", file=sys.stderr)
            return 1
        print(f"Wrote the table of {len(catalog['notebooks'])} notebooks into {README}")
        changed = write_notebooks(catalog, only=only)
        print(
            f"Rewrote the Colab badge and set-up cell of {', '.join(changed) or 'no notebook (all current)'}"
        )
    readme = README.read_text(encoding="utf-8")
    problems = check(readme, catalog, notebook_files(), checks)
    if not catalog_problems(catalog):
        problems += _url_problems(readme, catalog, "README.md")
        problems += notebook_problems(catalog, only=only)
    if problems:
        print("README/catalog/notebook problems:\n- " + "\n- ".join(problems), file=sys.stderr)
        return 1
    if args.check:
        print("README.md's notebooks table and the notebooks' Colab cells are current.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
