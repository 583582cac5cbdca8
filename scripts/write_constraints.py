"""Write constraints.txt from virtual environments that just passed `make test` (``make lock`` runs it).

A fresh clone installs whatever the requirements allow on the day; a new release of a dependency once
broke a test nobody had changed. ``make test``, ``make lab`` and CI therefore install with
``pip install -c constraints.txt``: the versions of every package that were installed when the whole
suite last passed. ``make lock`` refreshes it: it builds new environments from the newest releases the
requirements allow, runs the whole suite in them and, only if it passes, calls this script.

The pins carry a ``python_version`` marker: they are what passed on that Python. On another Python,
pip ignores them and installs the newest releases the requirements allow (as ``make test-latest`` does).

    python scripts/write_constraints.py VENV [VENV ...] [--out constraints.txt]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# Ours (installed editable), and pip's own tools, which constraints must not hold back.
SKIP = {"molmo-nb-utils", "pip", "setuptools", "wheel"}
HEADER = """\
# Versions known to pass: every package installed when `make test` last passed in fresh environments
# (Python {python}). `make test`, `make lab` and CI install with `pip install -c constraints.txt`; a
# constraint only pins a package that something asks for, and only on that Python (other Pythons get
# the newest releases the requirements allow). Refresh: `make lock` (newest releases, whole suite, then
# this file, written only when the suite passes). Written by scripts/write_constraints.py; do not edit.
"""


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed(venv: Path) -> dict[str, str]:
    """Name -> version of what pip lists in ``venv`` (editable installs left out)."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{venv}: no virtual environment there (no {python}); run `make lock` to build one.")
    listed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "list",
            "--format=json",
            "--exclude-editable",
            "--disable-pip-version-check",
        ],
        capture_output=True,
        text=True,
    )
    if listed.returncode:
        raise SystemExit(f"{venv}: pip list failed:\n{listed.stderr}")
    return {
        _normal(p["name"]): p["version"] for p in json.loads(listed.stdout) if _normal(p["name"]) not in SKIP
    }


def python_version(venv: Path) -> str:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def constraints(venvs: list[Path]) -> str:
    """One pin per package across ``venvs``; they were resolved from the same ranges, so they must agree."""
    pins: dict[str, str] = {}
    pythons = {python_version(v) for v in venvs}
    if len(pythons) != 1:
        raise SystemExit(f"the environments run different Pythons ({sorted(pythons)}); build them with one")
    (python,) = pythons
    for venv in venvs:
        for name, version in installed(venv).items():
            if pins.setdefault(name, version) != version:
                raise SystemExit(
                    f"{name} is {pins[name]} in one environment and {version} in {venv}: they were not resolved "
                    "from the same releases; run `make lock` again."
                )
    marker = f'python_version == "{python}"'
    lines = [f"{name}=={version}; {marker}" for name, version in sorted(pins.items())]
    return HEADER.format(python=python) + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venvs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("constraints.txt"))
    args = parser.parse_args(argv)
    text = constraints(args.venvs)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)  # whole or not at all
    print(f"wrote {args.out}: {text.count(chr(10)) - HEADER.count(chr(10))} pins", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
