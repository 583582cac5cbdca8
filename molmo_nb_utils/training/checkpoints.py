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
* **Removed only when every file is proven ours.** The mark also holds each file's sha256, so a file the
  user put into ``adapter/`` or a checkpoint (notes, an evaluation), or one of ours they edited (peft's
  model card), is told apart from what we wrote: such a folder is never removed; starting over is refused
  with the files to move, and the rotation keeps that checkpoint. A checkpoint the Trainer was writing
  when the call was killed has no mark yet: it is ours because the manifest names it *before* the
  Trainer makes it (``Molmo2Trainer`` announces every checkpoint, whatever the save strategy), so it is
  removed whole.
* **One call at a time.** A run folder is locked (``fine_tune.lock``) by the process training in it; a
  second call (another notebook kernel, a job submitted twice) is refused, naming that process, instead
  of resuming from checkpoints still being written. The lock is the operating system's, released however
  the process ends, so a killed run never leaves the folder blocked.
* **On the right base.** The mark and the manifest carry the base model's identity
  (``fingerprint.weights_fingerprint``: the weights themselves, not their folder). ``load_adapter``
  and resuming refuse another base, saying what differs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from peft import PeftModel

from molmo_nb_utils.dataset.results import same_open_file
from molmo_nb_utils.fingerprint import weights_fingerprint, weights_precision
from molmo_nb_utils.paths import atomic_path, file_sha256, try_lock
from molmo_nb_utils.training.targets import TrainingError

__all__ = [
    "ADAPTER",
    "CHECKPOINTS",
    "LOCK",
    "MANIFEST",
    "MARK",
    "base_identity",
    "check_base",
    "clean_up",
    "finished_checkpoints",
    "is_whole",
    "latest_checkpoint",
    "load_adapter",
    "locked_run",
    "mark_folder",
    "not_ours",
    "open_run",
    "read_manifest",
    "read_mark",
    "refuse_theirs",
    "remove_ours",
    "write_manifest",
]

MANIFEST = "fine_tune.json"  # in the run folder: what fine_tune wrote there
CHECKPOINTS = "checkpoints"  # the Trainer's output_dir, inside the run folder
ADAPTER = "adapter"  # the final (best) adapter, inside the run folder
MARK = "fine_tune_mark.json"  # in each checkpoint and adapter folder, written last
LOCK = "fine_tune.lock"  # in the run folder while a call works there: the process's id
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


def _contents(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()]


def mark_folder(folder: Path, run: str, **record: Any) -> None:
    """Write ``folder``'s mark, last: the run, ``record``, and every file with its size and sha256."""
    found = [p for p in _contents(folder) if p.relative_to(folder) != Path(MARK)]
    files = {str(p.relative_to(folder)): p.stat().st_size for p in found}
    sha256 = {str(p.relative_to(folder)): file_sha256(p) for p in found}
    with atomic_path(folder / MARK) as tmp:
        tmp.write_text(
            json.dumps(
                {"written_by": WRITER, "run": run, **record, "files": files, "sha256": sha256}, indent=1
            )
            + "\n"
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


def not_ours(folder: Path, run: str) -> list[str]:
    """The files in ``folder`` its mark does not prove ``run`` wrote: not listed, or changed since (size,
    sha256).

    A mark from before sha256 was recorded proves by size alone. A folder without a mark of ``run`` (none,
    or another run's, copied in) proves nothing: all its files are listed.
    """
    mark = read_mark(folder)
    if mark is not None and mark.get("run") != run:
        mark = None
    sizes, digests = (mark or {}).get("files", {}), (mark or {}).get("sha256")
    theirs = []
    for path in _contents(folder):
        name = str(path.relative_to(folder))
        if mark is not None and name == MARK:
            continue
        if (
            name not in sizes
            or path.is_symlink()
            or path.stat().st_size != sizes[name]
            or (digests is not None and file_sha256(path) != digests.get(name))
        ):
            theirs.append(name)
    return theirs


def refuse_theirs(root: Path, folders: list[Path], run: str, doing: str) -> None:
    """Refuse ``doing`` if any of ``folders`` holds files we cannot prove ``run`` wrote, naming them."""
    found = [f"{(folder / name).relative_to(root)}" for folder in folders for name in not_ours(folder, run)]
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise TrainingError(
            f"{root} holds files that fine_tune did not write, or changed since it wrote them: {shown}. {doing} "
            "would remove them with fine_tune's own, and fine_tune removes only what it wrote: move them out of "
            f"{root}, then call fine_tune again."
        )


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


def remove_ours(root: Path, manifest: dict[str, Any], folder: Path, *, checked: bool = False) -> None:
    """Remove ``folder`` (our checkpoint or adapter): recorded, renamed to a hidden name, then deleted.

    Refused (``TrainingError``) if it holds a file its mark does not prove ours. ``checked``: the caller
    has proven every file ours (``not_ours``), or the folder is a checkpoint the manifest named before
    the Trainer began it, which has no mark yet.
    """
    if folder.exists() and not checked:
        refuse_theirs(root, [folder], manifest["run"], f"Removing {folder.name}")
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
        else:  # named before the Trainer began it: ours, whole or not
            remove_ours(root, manifest, folder, checked=read_mark(folder) is None)
    for name in list(manifest["checkpoints"]):  # ours, but no longer whole (a file lost): not a checkpoint
        if not is_whole(root / CHECKPOINTS / name, manifest["run"]):
            remove_ours(root, manifest, root / CHECKPOINTS / name)


# ---------------------------------------------------------------------------------------------
# One call at a time


@contextlib.contextmanager
def locked_run(root: Path) -> Iterator[None]:
    """Hold the run folder for this process while the block runs; another holder is refused, by its id.

    The lock is ``flock`` on ``root/fine_tune.lock``, which the operating system releases when the process
    ends, however it ends (a file left by a killed process locks nothing). Where there are no locks
    (Windows, some network file systems) the folder is used unlocked.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK
    while True:
        file = open(path, "a+")  # noqa: SIM115 (closed below)
        locked = try_lock(file.fileno())
        if locked is False:
            file.seek(0)
            holder = file.read().strip()
            file.close()
            raise TrainingError(
                f"{root} is in use by {f'process {holder}' if holder else 'another process'}: another fine_tune "
                "is training there (another notebook kernel, or a job still running). Wait for it to finish or "
                "stop it, then call fine_tune again; or give this training another folder."
            )
        if locked is None or same_open_file(file, path):
            break
        file.close()  # removed by its holder while we waited for it: lock the file there now
    try:
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()} on {socket.gethostname()}\n")
        file.flush()
        yield
    finally:
        if locked:  # removed while still held: nobody can take a lock on a file about to vanish
            path.unlink(missing_ok=True)
        file.close()
        if not locked:
            with contextlib.suppress(OSError):
                path.unlink()


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
