"""Checkpoints and identity: what ``fine_tune`` wrote, which of it is whole, and on which base.

Why each rule is here:

* **Marked, in its own subfolders.** A run folder gets a manifest (``fine_tune.json``) naming what
  this code wrote: the Trainer's checkpoints live in ``checkpoints/`` and the final adapter in
  ``adapter/``, both created by us. Nothing else in the folder is ever read, replaced or removed, so
  a user's own ``checkpoint-000002`` or another program's ``checkpoint-5`` and ``.checkpoint-*``
  folders stay as they are.
* **Whole or not at all.** A checkpoint counts as finished only when its mark (``fine_tune_mark.json``,
  written last) lists every file with its size and each is there. A checkpoint is removed by first
  renaming it to a hidden name the manifest records, then deleting: killed half-way, it is no longer a
  checkpoint, and the next call finishes the removal.
* **On the right base.** The mark and the manifest carry the base model's identity
  (``fingerprint.weights_fingerprint``: the weights themselves, not their folder). ``load_adapter``
  and resuming refuse another base, saying what differs.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peft import PeftModel

from molmo_nb_utils.fingerprint import weights_fingerprint, weights_precision
from molmo_nb_utils.paths import atomic_path
from molmo_nb_utils.training.targets import TrainingError

__all__ = [
    "ADAPTER",
    "CHECKPOINTS",
    "MANIFEST",
    "MARK",
    "base_identity",
    "check_base",
    "clean_up",
    "finished_checkpoints",
    "is_whole",
    "latest_checkpoint",
    "load_adapter",
    "mark_folder",
    "open_run",
    "read_manifest",
    "read_mark",
    "remove_ours",
    "write_manifest",
]

MANIFEST = "fine_tune.json"  # in the run folder: what fine_tune wrote there
CHECKPOINTS = "checkpoints"  # the Trainer's output_dir, inside the run folder
ADAPTER = "adapter"  # the final (best) adapter, inside the run folder
MARK = "fine_tune_mark.json"  # in each checkpoint and adapter folder, written last
WRITER = "molmo_nb_utils.fine_tune"
FORMAT = 1
PEFT_WEIGHTS = "adapter_model.safetensors"


def base_identity(model: Any) -> dict[str, Any]:
    """What a base model is: its weights' fingerprint, its name, dtype and quantization."""
    return {
        "fingerprint": weights_fingerprint(model),
        "name_or_path": str(getattr(model, "name_or_path", "") or ""),
        **weights_precision(model),
    }


def check_base(recorded: Mapping[str, Any], identity: Mapping[str, Any], where: Path, doing: str) -> None:
    """Refuse ``doing`` on a base whose weights are not those ``where`` was trained on."""
    if recorded.get("fingerprint") == identity["fingerprint"]:
        return
    differs = [
        f"{key} {recorded.get(key)!r} there, {identity[key]!r} now"
        for key in ("name_or_path", "dtype", "quantization")
        if recorded.get(key) != identity[key]
    ]
    differs.append(f"weights fingerprint {recorded.get('fingerprint')} there, {identity['fingerprint']} now")
    raise TrainingError(
        f"{where} was trained on another base model than the one given ({'; '.join(differs)}). {doing} on other "
        f"weights would give a model nobody trained: load the base it was trained on "
        f"(load_model({recorded.get('name_or_path')!r}), same dtype and quantization)"
        + (
            ", or train a new adapter for this base in another folder."
            if doing == "Resuming"
            else ", or pass allow_other_base=True if this is the same base in another precision (e.g. the 16-bit "
            "base of a QLoRA adapter, to merge it)."
        )
    )


# ---------------------------------------------------------------------------------------------
# The manifest


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The run folder's manifest, None if there is none; one that is not ours is refused."""
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TrainingError(
            f"{path} is not a readable fine_tune manifest ({err}): give fine_tune another folder"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("written_by") != WRITER:
        raise TrainingError(f"{path} was not written by fine_tune: give fine_tune another folder")
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest in one rename: a killed write leaves the previous one."""
    with atomic_path(root / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")


def open_run(root: Path) -> dict[str, Any]:
    """The run folder's manifest, made (with our two subfolders) on first use.

    A ``checkpoints`` or ``adapter`` folder that the manifest does not account for is another
    program's: refused, never written into.
    """
    root.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(root)
    if manifest is None:
        foreign = [name for name in (CHECKPOINTS, ADAPTER) if (root / name).exists()]
        if foreign:
            raise TrainingError(
                f"{root} already holds {' and '.join(foreign)}, which fine_tune did not write (no {MANIFEST}): "
                "give fine_tune another folder, or move them away"
            )
        manifest = {"written_by": WRITER, "format": FORMAT, "run": uuid.uuid4().hex, "checkpoints": [],
                    "writing": [], "removing": {}, "adapter": None}  # fmt: skip
        write_manifest(root, manifest)
    (root / CHECKPOINTS).mkdir(exist_ok=True)
    ours = set(manifest["checkpoints"]) | set(manifest["writing"])
    foreign = sorted(p.name for p in (root / CHECKPOINTS).glob("checkpoint-*") if p.name not in ours)
    if foreign:
        raise TrainingError(
            f"{root / CHECKPOINTS} holds {', '.join(foreign)}, which fine_tune did not write: the Trainer would "
            "write into them. Move them away, or give fine_tune another folder."
        )
    return manifest


# ---------------------------------------------------------------------------------------------
# Marks: a folder is whole when its mark lists every file, with its size, and each is there


def mark_folder(folder: Path, run: str, **record: Any) -> None:
    """Write ``folder``'s mark, last: the run, ``record`` and every file with its size."""
    files = {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARK
    }
    with atomic_path(folder / MARK) as tmp:
        tmp.write_text(
            json.dumps({"written_by": WRITER, "run": run, **record, "files": files}, indent=1) + "\n"
        )


def read_mark(folder: Path) -> dict[str, Any] | None:
    """``folder``'s mark, None if it has none of ours."""
    try:
        mark = json.loads((folder / MARK).read_text())
    except (OSError, ValueError):
        return None
    return mark if isinstance(mark, dict) and mark.get("written_by") == WRITER else None


def is_whole(folder: Path, run: str | None = None) -> bool:
    """Whether ``folder`` is a finished checkpoint or adapter of ours (of ``run``): marked, every file there."""
    mark = read_mark(folder)
    if (
        mark is None
        or (run is not None and mark.get("run") != run)
        or PEFT_WEIGHTS not in mark.get("files", {})
    ):
        return False
    for name, size in mark["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def _step(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def finished_checkpoints(root: Path, manifest: Mapping[str, Any]) -> list[Path]:
    """The run's whole checkpoints, oldest first."""
    names = sorted(manifest["checkpoints"], key=_step)
    return [root / CHECKPOINTS / n for n in names if is_whole(root / CHECKPOINTS / n, manifest["run"])]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The last whole checkpoint ``fine_tune`` wrote under ``output_dir``, or None."""
    root = Path(output_dir)
    manifest = read_manifest(root) if root.is_dir() else None
    found = finished_checkpoints(root, manifest) if manifest else []
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------------
# Removing only what we wrote, so that a kill half-way leaves no checkpoint without weights


def remove_ours(root: Path, manifest: dict[str, Any], folder: Path) -> None:
    """Remove ``folder`` (our checkpoint or adapter): recorded, renamed to a hidden name, then deleted."""
    if not folder.exists():  # recorded as being written, never begun
        _forget(
            manifest,
            folder.name if folder.parent.name == CHECKPOINTS else None,
            adapter=folder.name == ADAPTER,
        )
        write_manifest(root, manifest)
        return
    trash = f".removing-{folder.name}-{uuid.uuid4().hex[:8]}"
    manifest["removing"][trash] = str(folder.relative_to(root))
    write_manifest(root, manifest)
    os.replace(folder, folder.parent / trash)
    _forget(
        manifest, folder.name if folder.parent.name == CHECKPOINTS else None, adapter=folder.name == ADAPTER
    )
    write_manifest(root, manifest)
    shutil.rmtree(folder.parent / trash)
    del manifest["removing"][trash]
    write_manifest(root, manifest)


def _forget(manifest: dict[str, Any], checkpoint: str | None, *, adapter: bool) -> None:
    if checkpoint is not None:
        for key in ("checkpoints", "writing"):
            manifest[key] = [n for n in manifest[key] if n != checkpoint]
    if adapter:
        manifest["adapter"] = None


def clean_up(root: Path, manifest: dict[str, Any]) -> None:
    """Finish what a killed call left: removals under way, checkpoints whose writing never finished."""
    for trash, original in list(manifest["removing"].items()):
        where = (root / original).parent
        if (root / original).exists() and not (where / trash).exists():  # killed before the rename
            os.replace(root / original, where / trash)
        _forget(
            manifest, Path(original).name if where.name == CHECKPOINTS else None, adapter=original == ADAPTER
        )
        write_manifest(root, manifest)
        shutil.rmtree(where / trash, ignore_errors=True)
        del manifest["removing"][trash]
        write_manifest(root, manifest)
    for name in list(manifest["writing"]):
        folder = root / CHECKPOINTS / name
        if name in manifest["checkpoints"] and is_whole(folder, manifest["run"]):
            manifest["writing"].remove(name)
        else:
            remove_ours(root, manifest, folder)
    for name in list(manifest["checkpoints"]):  # ours, but no longer whole (a file lost): not a checkpoint
        if not is_whole(root / CHECKPOINTS / name, manifest["run"]):
            remove_ours(root, manifest, root / CHECKPOINTS / name)


# ---------------------------------------------------------------------------------------------
# Loading


def _adapter_folder(path: Path) -> Path:
    """The adapter a path names: a run folder's final adapter (its best checkpoint), else its last whole
    checkpoint; or a checkpoint or adapter folder itself."""
    manifest = read_manifest(path) if path.is_dir() and (path / MANIFEST).is_file() else None
    if manifest is not None:
        if is_whole(path / ADAPTER, manifest["run"]):
            return path / ADAPTER
        found = finished_checkpoints(path, manifest)
        if found:
            return found[-1]
        raise TrainingError(
            f"{path} holds no finished adapter yet (the training was interrupted before its first checkpoint): "
            "run fine_tune with this folder again to train"
        )
    if (path / "adapter_config.json").is_file():
        if read_mark(path) is not None and not is_whole(path):
            raise TrainingError(
                f"{path} is an incomplete checkpoint (files are missing): give its run folder, which loads the "
                "last whole one"
            )
        return path
    raise TrainingError(
        f"No adapter at {path}: give the folder fine_tune wrote (with {MANIFEST}), or a folder with "
        "adapter_config.json"
    )


def load_adapter(
    model: Any, path: str | os.PathLike, *, trainable: bool = False, allow_other_base: bool = False
) -> PeftModel:
    """``model`` with the LoRA adapter saved at ``path``; it answers as the model ``fine_tune`` returned.

    ``path`` is the folder given to ``fine_tune`` (its final adapter: the best checkpoint by validation
    loss when there were validation items, else the last), or one checkpoint or adapter folder. The
    adapter's base is checked against ``model``'s weights: another base is refused unless
    ``allow_other_base`` (the same base in another precision, e.g. to merge a QLoRA adapter into the
    16-bit model). Returns the peft ``PeftModel``, in eval mode.
    """
    if hasattr(model, "peft_config"):
        raise TrainingError(
            "this model already carries a LoRA adapter: load the base model again (load_model) and pass that"
        )
    folder = _adapter_folder(Path(path))
    mark = read_mark(folder)
    if mark is None:
        warnings.warn(
            f"{folder} records no base model (not written by fine_tune): loaded without checking its base",
            stacklevel=2,
        )
    elif not allow_other_base:
        check_base(mark["base"], base_identity(model), folder, "Loading it")
    with warnings.catch_warnings():
        # peft 0.21 still reads transformers' deprecated `is_gradient_checkpointing` while wrapping a model
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        adapted = PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)
    return adapted.eval()
