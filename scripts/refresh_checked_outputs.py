"""Re-run notebooks on the tiny model and keep only the outputs nbval checks.

Notebooks are committed without outputs, except cells marked ``# NBVAL_CHECK_OUTPUT``: their
output is a deliberate, deterministic check (token counts, parsed worked examples) that
``make test`` compares. Run this after editing such a cell:

    .venv-dev/bin/python scripts/refresh_checked_outputs.py [notebooks/03_pointing.ipynb ...]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from molmo_nb_utils.paths import atomic_path

MARK = "NBVAL_CHECK_OUTPUT"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def refresh(path: Path) -> int:
    """Execute ``path`` and rewrite it with outputs on checked cells only; returns how many were kept."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    kept = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # the run's timestamps: noise in every diff
        if cell.cell_type != "code":
            continue
        if MARK in cell.source:
            # nbval skips a cell without an execution count, so checked cells keep theirs. Only stdout
            # is kept: stderr (library notices) is neither compared nor deterministic.
            cell.outputs = [
                o for o in cell.outputs if o.get("output_type") != "stream" or o.get("name") == "stdout"
            ]
            kept += 1
        else:
            cell.execution_count = None
            cell.outputs = []
    nb.metadata.pop("widgets", None)
    with atomic_path(path) as tmp:
        nbformat.write(nb, tmp)
    return kept


def main(argv: list[str]) -> int:
    from molmo_nb_utils.tiny import build_tiny_molmo2

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MOLMO_MODEL_ID"] = str(build_tiny_molmo2(Path(tmp) / "tiny-molmo2"))
        os.environ["HF_HUB_OFFLINE"] = "1"
        # what the kernels write is the throwaway tiny model's: into the temporary folder, not the checkout
        os.environ["MOLMO_DATA_DIR"] = str(Path(tmp) / "data")
        for name in argv or sorted(str(p) for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
            print(f"{name}: kept the output of {refresh(Path(name).resolve())} checked cell(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
