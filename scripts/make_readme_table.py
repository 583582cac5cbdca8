"""Write the README's table of notebooks from ``notebooks/catalog.json``, or check that it is current.

The catalog is the one place that describes the notebooks, so the table is generated, never edited:

    .venv/bin/python scripts/make_readme_table.py           # rewrite the block in README.md (make readme)
    .venv/bin/python scripts/make_readme_table.py --check   # exit 1 if README.md or the catalog is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from urllib.parse import quote

from molmo_nb_utils.paths import atomic_path

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
CATALOG = NOTEBOOKS_DIR / "catalog.json"
START = "<!-- notebooks-table:start -->"
END = "<!-- notebooks-table:end -->"
FIELDS = ("file", "title", "teaches", "gpu_memory")
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
HEADER = "| # | Notebook | What it teaches | GPU memory | Colab |\n|---|---|---|---|---|\n"
_BLOCK = re.compile(rf"^{re.escape(START)}[ \t]*\n(.*?)^{re.escape(END)}[ \t]*$", re.M | re.S)


def load_catalog(path: Path = CATALOG) -> dict:
    """Read catalog.json; a broken file is named with the JSON error so it can be fixed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(
            f"{path} does not exist: it is the list of notebooks the README table is made from."
        ) from None
    except json.JSONDecodeError as err:
        raise SystemExit(f"{path} is not valid JSON ({err}): fix it and run again.") from None


def catalog_problems(catalog: dict) -> list[str]:
    """What keeps the table from being rendered: missing keys, entries without a file, duplicates."""
    problems = [f"catalog.json has no {key!r}" for key in ("repository", "branch") if not catalog.get(key)]
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


def _cell(text: str) -> str:
    """One table cell: a '|' or a line break would break the Markdown row."""
    return " ".join(str(text).split()).replace("|", r"\|")


def render_table(catalog: dict) -> str:
    """The Markdown table, one row per catalog entry in catalog order, ending with a newline."""
    base = (
        f"https://colab.research.google.com/github/{catalog['repository']}/blob/{catalog['branch']}/notebooks"
    )
    rows = []
    for entry in catalog["notebooks"]:
        file = entry["file"]
        number = file.split("_", 1)[0] if "_" in file else ""
        badge = f"[![Open In Colab]({BADGE})]({base}/{quote(file)})"
        link = f"[{_cell(entry['title'])}](notebooks/{quote(file)})"
        cells = [number, link, _cell(entry["teaches"]), _cell(entry["gpu_memory"]), badge]
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


def check(readme_text: str, catalog: dict, notebook_files: list[str]) -> list[str]:
    """Every reason the README table or the catalog is out of date; empty when all is current."""
    broken = catalog_problems(catalog)
    problems = broken + file_problems(catalog, list(notebook_files))
    try:
        block = current_block(readme_text)
    except ValueError as err:
        return [*problems, str(err)]
    if not broken and block != render_table(catalog):
        problems.append("README.md's notebooks table differs from notebooks/catalog.json: run `make readme`")
    return problems


def write_readme(readme_path: Path, catalog: dict) -> None:
    """Rewrite the table block in place, atomically (temporary file in the same folder, then os.replace)."""
    text = replace_block(readme_path.read_text(encoding="utf-8"), render_table(catalog))
    with atomic_path(readme_path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def notebook_files(folder: Path = NOTEBOOKS_DIR) -> list[str]:
    return sorted(p.name for p in folder.glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if anything is stale")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    if not args.check:
        if broken := catalog_problems(catalog):
            print("Cannot write the table:\n- " + "\n- ".join(broken), file=sys.stderr)
            return 1
        try:
            write_readme(README, catalog)
        except ValueError as err:
            print(f"{README}: {err}", file=sys.stderr)
            return 1
        print(f"Wrote the table of {len(catalog['notebooks'])} notebooks into {README}")
    problems = check(README.read_text(encoding="utf-8"), catalog, notebook_files())
    if problems:
        print("README/catalog problems:\n- " + "\n- ".join(problems), file=sys.stderr)
        return 1
    if args.check:
        print("README.md's notebooks table is current.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
