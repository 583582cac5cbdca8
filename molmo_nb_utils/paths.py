"""Where things live: sample media, the download cache and outputs.

One place so that notebooks, tests and scripts agree. ``MOLMO_DATA_DIR`` moves the cache
(for example to a Google Drive folder on Colab).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
INPUT_DIR = REPO_ROOT / "input"
DATA_DIR = Path(os.environ.get("MOLMO_DATA_DIR", REPO_ROOT / "downloaded_data"))
OUTPUT_DIR = DATA_DIR / "outputs"


def output_path(name: str) -> Path:
    """A path under ``downloaded_data/outputs/``, with its folder created."""
    path = OUTPUT_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
