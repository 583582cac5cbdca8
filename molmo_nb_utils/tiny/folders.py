"""Where the tiny models live, and how a build knows its own folders: written whole, replacing only its own.

Every folder a build writes holds a marker with the files it wrote, so a later build can tell its own
folders from anyone else's, rebuild the ones made before the weights were last redrawn, and never
delete a file it did not write. A build is moved in file by file, ``config.json`` last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from molmo_nb_utils.paths import DATA_DIR, REPO_ROOT

__all__ = [
    "MARKER",
    "TINY_NAME",
    "TinyModelError",
    "is_tiny_molmo2",
    "reusable",
    "save_built",
    "tiny_model_dir",
    "tiny_segmenter_dir",
]

# The tiny Molmo2's marker: written into every folder its build makes, with the files it wrote.
MARKER = "tiny_molmo2.json"
# What a build wrote before the marker existed.
_UNMARKED_FILES = frozenset({"chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
                             "processor_config.json", "tokenizer.json", "tokenizer_config.json"})  # fmt: skip


class TinyModelError(ValueError):
    """The tiny model cannot be written where asked; the message says what to do instead."""


def _read_marker(folder: Path, marker: str) -> dict | None:
    try:
        found = json.loads((folder / marker).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("files"), list) else None


def _built_here(folder: Path, marker: str = MARKER) -> bool:
    """Whether ``folder`` holds only plain files a build of this module wrote (an empty folder counts)."""
    found = _read_marker(folder, marker)
    if found is not None:
        names = {*map(str, found["files"]), marker}
    elif marker != MARKER:  # only the tiny Molmo2 was ever built without a marker
        names = set()
    else:  # an older build: its files, and a 32-wide Molmo2 in config.json (or no config.json: unfinished)
        names = set(_UNMARKED_FILES)
        try:
            config = json.loads((folder / "config.json").read_text())
            if config.get("model_type") != "molmo2" or config.get("text_config", {}).get("hidden_size") != 32:
                return False
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError):
            return False
    return all(e.name in names and e.is_file() and not e.is_symlink() for e in folder.iterdir())


def _is_current(folder: Path, seed: int, marker: str, version: int) -> bool:
    """A finished build (config.json is moved in last) of today's weights with this seed."""
    found = _read_marker(folder, marker) or {}
    finished = (folder / "config.json").is_file()
    return finished and found.get("weights_version") == version and found.get("seed") == seed


def reusable(path: Path, seed: int, overwrite: bool, marker: str, version: int, example: str) -> bool:
    """True when ``path`` holds a model to use as it is; raises when it may not be written; False: build."""
    if path.exists() and not path.is_dir():
        raise TinyModelError(f"{path} is a file, not a folder: give a new folder for the tiny model")
    if path.is_dir():
        ours = _built_here(path, marker)
        if (
            (path / "config.json").is_file()
            and not overwrite
            and (_is_current(path, seed, marker, version) or not ours)
        ):
            return True  # a finished build, or another model the caller chose: use it as it is
        if not ours:
            raise TinyModelError(
                f"{path} holds files this builder did not write, so it will not replace them: nothing was "
                f"changed. Give a new or empty folder for the tiny model (e.g. {example})."
            )
    return False


def _move_in(path: Path, save, marker: str, info: dict[str, Any]) -> Path:
    """``save(folder)`` into a temporary folder beside ``path``, then move the files in, ``config.json`` last.

    An interrupted build never leaves a folder that looks like a finished model; files only an older
    build of ours wrote are removed, nothing else is.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        tmp.chmod(0o755)
        save(tmp)
        names = sorted(entry.name for entry in tmp.iterdir())
        (tmp / marker).write_text(json.dumps({**info, "files": names}, indent=1) + "\n")
        if not path.exists():
            try:
                os.replace(tmp, path)
            except OSError:  # another process (a parallel test worker) finished the same build first
                if not (path / "config.json").is_file():
                    raise
            return path
        (path / "config.json").unlink(missing_ok=True)  # from here on the folder is no model until done
        for entry in path.iterdir():
            if entry.name not in names and entry.name != marker:  # a file only an older build wrote
                entry.unlink()
        for name in [marker, *(n for n in names if n != "config.json"), "config.json"]:
            os.replace(tmp / name, path / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def save_built(path: Path, model, processor, marker: str, version: int, seed: int) -> Path:
    """Save a freshly built model and processor into ``path`` through ``_move_in`` (whole or not at all),
    marked as ours so a later build may replace it and nothing else."""

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    info = {"built_by": "molmo_nb_utils.tiny", "weights_version": version, "seed": seed}
    return _move_in(path, save, marker, info)


# ``load_model("tiny")`` and ``MOLMO_MODEL_ID=tiny`` mean the tiny model in ``tiny_model_dir()``;
# ``load_segmenter("tiny")`` and ``MOLMO_SEGMENTER_ID=tiny`` the tiny SAM 2 in ``tiny_segmenter_dir()``.
TINY_NAME = "tiny"


def _tiny_dir(name: str) -> Path:
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "molmo_nb_utils").is_dir():
        return DATA_DIR / name  # downloaded_data/, unless $MOLMO_DATA_DIR moves it (the tests do)
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache"
    return Path(cache).expanduser() / "molmo_nb_utils" / name


def tiny_model_dir() -> Path:
    """Where ``"tiny"`` lives: ``downloaded_data/tiny-molmo2`` in a checkout (where ``make tiny`` builds it;
    ``$MOLMO_DATA_DIR/tiny-molmo2`` when that variable moves the data folder), else a per-user cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``), so an installed package never writes into site-packages."""
    return _tiny_dir("tiny-molmo2")


def tiny_segmenter_dir() -> Path:
    """Where the segmenter ``"tiny"`` lives: ``downloaded_data/tiny-sam2``, or the cache as ``tiny_model_dir``."""
    return _tiny_dir("tiny-sam2")


def is_tiny_molmo2(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a tiny Molmo2 built here (it holds this module's marker)."""
    return _read_marker(Path(folder), MARKER) is not None
