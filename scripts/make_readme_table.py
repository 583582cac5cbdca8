"""Write the README's table of notebooks from ``notebooks/catalog.json``, or check that it is current.

The catalog is the one place that describes the notebooks, so the table is generated, never edited. Its memory
column comes from ``notebooks/gpu_check.json`` (``make gpu-check``): the figure measured on a GPU where one
exists for the notebook's model, setting and precision, with the GPU's name, and the planner's estimate, said
to be one, where none does. Each notebook's opening line ("GPU memory needed: ...") says the same (a test checks).

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
CHECKS = NOTEBOOKS_DIR / "gpu_check.json"
START = "<!-- notebooks-table:start -->"
END = "<!-- notebooks-table:end -->"
FIELDS = ("file", "title", "teaches")
MEMORY_FIELDS = ("model", "precision", "settings")  # which gpu_check.json rows the memory column shows
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
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
        memory = entry.get("memory")
        if not isinstance(memory, dict) or not all(memory.get(key) for key in MEMORY_FIELDS):
            problems.append(
                f"{where} needs 'memory': {{'model': ..., 'precision': ..., 'settings': [...]}} naming the "
                "gpu_check.json rows its memory column shows"
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


def render_table(catalog: dict, checks: dict) -> str:
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
    args = parser.parse_args(argv)
    catalog, checks = load_catalog(), load_checks()
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
    problems = check(README.read_text(encoding="utf-8"), catalog, notebook_files(), checks)
    if problems:
        print("README/catalog problems:\n- " + "\n- ".join(problems), file=sys.stderr)
        return 1
    if args.check:
        print("README.md's notebooks table is current.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
