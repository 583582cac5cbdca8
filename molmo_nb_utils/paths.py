"""Where things live: sample media, the download cache and outputs.

One place so that notebooks, tests and scripts agree. ``MOLMO_DATA_DIR`` moves the cache
(for example to a Google Drive folder on Colab).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file next to ``path``; it becomes ``path`` only if the block succeeds.

    The temporary name keeps the suffix, so writers that pick a format by suffix (video) still work.

    An interrupted download, render or export (an error, Ctrl-C) never leaves a half-written file:
    the temporary file is removed, and the final ``os.replace`` is an atomic rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
