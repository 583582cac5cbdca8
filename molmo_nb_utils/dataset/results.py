"""The results file: one JSON line per answered item, append-only, never mixed, never lost.

Why: a run over a dataset takes hours and is interrupted. Each finished item is one line, written
with one ``write`` and forced to disk (``fsync``) before the next item starts. A process killed
while writing leaves at most a partial last line (no newline at its end): the next run cuts it off
before appending and readers ignore it; a whole last record without its newline (a file edited by
hand) is kept. Every line carries the run's settings, including the
model's full identity (its ``name_or_path`` and, for a fine-tuned model, a hash of its adapter
weights), and what the item's file held (size, time, sha256): answers of another model, prompt or
file never pass for this run's.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import torch
from peft import get_peft_model_state_dict

from molmo_nb_utils.fingerprint import weights_fingerprint, weights_precision
from molmo_nb_utils.grounding import Point, count_points, points_from_records, points_to_records
from molmo_nb_utils.media import FramePlan
from molmo_nb_utils.paths import try_lock


@dataclass(frozen=True)
class ItemResult:
    """What a run recorded for one item: one line of the results file (no pixels, no frames)."""

    key: str
    kind: str
    prompt: str
    settings: Mapping[str, Any]  # the run's: model, adapter, default prompt, max_new_tokens, fps, ...
    answer: str | None = None  # the model's text; None if the item failed
    points: tuple[Point, ...] = ()  # from <points>, in pixels (videos: at the times of the frames shown)
    tracks: tuple[Point, ...] = ()  # from <tracks> (videos only): ids are object ids
    size: tuple[int, int] | None = None  # (width, height) of the image or video
    times: tuple[float, ...] = ()  # videos: the prompt time of each frame shown
    frame_indices: tuple[int, ...] = ()  # videos: the video frame index of each frame shown
    prompt_tokens: int | None = None
    visual_tokens: int | None = None
    seconds: float = 0.0  # time to answer (in a batch: the batch's time over its items)
    error: str | None = None  # "ExceptionType: message" when the item failed
    skipped: tuple[str, ...] = ()  # what the parser skipped in the answer, and why
    finished: str = ""  # when, in UTC (ISO 8601)
    file: Mapping[str, Any] | None = None  # the file answered: bytes, mtime_ns, sha256 (None: unknown)

    @property
    def plan(self) -> FramePlan | None:
        """A video's frames as shown (times, indices, size), as the run recorded them; None for images."""
        if self.kind != "video" or self.size is None:
            return None
        return FramePlan(self.times, self.frame_indices, self.size)

    @property
    def count(self) -> int:
        """The predicted count: distinct ids of the points and tracks (the count rule of 03_pointing)."""
        return count_points((*self.points, *self.tracks))

    def to_record(self) -> dict[str, Any]:
        """The JSON line, as a dict."""
        return {
            "key": self.key,
            "kind": self.kind,
            "prompt": self.prompt,
            "settings": dict(self.settings),
            "answer": self.answer,
            "points": [_compact(r) for r in points_to_records(self.points)],
            "tracks": [_compact(r) for r in points_to_records(self.tracks)],
            "size": list(self.size) if self.size else None,
            "times": list(self.times),
            "frame_indices": list(self.frame_indices),
            "prompt_tokens": self.prompt_tokens,
            "visual_tokens": self.visual_tokens,
            "seconds": self.seconds,
            "error": self.error,
            "skipped": list(self.skipped),
            "finished": self.finished,
            "file": dict(self.file) if self.file else None,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ItemResult:
        """Read back a dict of ``to_record`` (raises KeyError, TypeError or ValueError on anything else)."""
        return cls(
            key=str(record["key"]),
            kind=str(record["kind"]),
            prompt=str(record["prompt"]),
            settings=dict(record["settings"]),
            answer=record["answer"],
            points=tuple(points_from_records(record["points"])),
            tracks=tuple(points_from_records(record["tracks"])),
            size=tuple(record["size"]) if record["size"] else None,
            times=tuple(float(t) for t in record["times"]),
            frame_indices=tuple(int(i) for i in record["frame_indices"]),
            prompt_tokens=record["prompt_tokens"],
            visual_tokens=record["visual_tokens"],
            seconds=float(record["seconds"]),
            error=record["error"],
            skipped=tuple(record["skipped"]),
            finished=str(record["finished"]),
            file=dict(record["file"]) if record.get("file") else None,  # older files have none
        )


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    """A point record without the empty fields (an image point has no time, a video point no image)."""
    return {k: v for k, v in record.items() if v is not None and k != "frame"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Which model answered


def model_identity(model: Any) -> tuple[str | None, dict[str, Any] | None]:
    """The model's full ``name_or_path`` and, if it carries a peft adapter, the adapter's identity.

    The whole name, never its last part: ``/ckpt/a/final`` and ``/ckpt/b/final``, or
    ``allenai/Molmo2-4B`` and ``someone/Molmo2-4B``, are different models. A fine-tuned model keeps
    its base model's name, so the adapter is named too: its names and a short sha256 of its weights
    (the same weights give the same identity, other weights another one).
    """
    name = getattr(model, "name_or_path", None)
    name = str(name) if name else None
    if getattr(model, "peft_config", None) is None:
        return name, None
    return name, adapter_identity(model)


def adapter_identity(model: Any) -> dict[str, Any]:
    """``{"names": [...], "sha256": <16 hex digits>}`` of every adapter the model carries."""
    names = sorted(model.peft_config)
    digest = hashlib.sha256()
    for name in names:
        state = get_peft_model_state_dict(model, adapter_name=name, save_embedding_layers=False)
        digest.update(f"adapter {name}\n".encode())
        for key in sorted(state):
            tensor = state[key].detach().cpu().contiguous().reshape(-1)
            digest.update(f"{key} {tensor.dtype} {tuple(state[key].shape)}\n".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return {"names": names, "sha256": digest.hexdigest()[:16]}


def weights_identity(model: Any) -> dict[str, Any]:
    """What the weights themselves are: their fingerprint, dtype and quantization (None: not a torch model).

    The path names a folder, not weights: another model saved into the same folder, a base model
    after ``merge_and_unload`` of a trained adapter, the same model in float32, bfloat16 or 4-bit
    each answer differently, and each gets another identity here.
    """
    if not isinstance(model, torch.nn.Module):  # a stand-in (tests) or no model (answers by hand)
        return {"weights": None, **weights_precision(model)}
    return {"weights": weights_fingerprint(model), **weights_precision(model)}


# What names the model that answered, in a run's settings: a difference is another model.
MODEL_KEYS = ("model", "adapter", "weights", "dtype", "quantization")


def check_settings(results: Iterable[ItemResult], settings: Mapping[str, Any], path: Path) -> None:
    """Refuse to add to a file whose answers came with other settings (another model, prompt, ...)."""
    for r in results:
        changed = [k for k in sorted({*settings, *r.settings}) if r.settings.get(k) != settings.get(k)]
        if changed:
            k = next((k for k in MODEL_KEYS if k in changed), changed[0])
            what = "another model" if k in MODEL_KEYS else "other settings"
            raise ValueError(
                f"{path} holds results made with {what} ({k}: {r.settings.get(k)!r} there, "
                f"{settings.get(k)!r} now). Resuming would mix them: give this run a new results file "
                "(one per model, adapter and prompt), or delete the file to start over."
            )


# ---------------------------------------------------------------------------------------------
# Reading and appending


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One JSON line in UTF-8. A file name that is not valid UTF-8 (Python keeps its bytes as
    surrogates) is written with ``\\u`` escapes, which read back as the same name."""
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")


def append_line(file: IO[bytes], line: bytes) -> None:
    """Write one whole line and force it to disk before going on: a finished item is never lost.

    If the disk is full (or fails) part-way, the file is cut back to where it was, so no partial
    line is left behind, and the error says what happened and what to do.
    """
    start = file.seek(0, os.SEEK_END)
    try:
        file.write(line)
        file.flush()
        os.fsync(file.fileno())
    except OSError as err:
        with contextlib.suppress(OSError):
            os.ftruncate(file.fileno(), start)
        full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        problem = "the disk is full" if full else f"writing failed ({err.strerror or err})"
        raise OSError(
            err.errno,
            f"Could not save an answer to {file.name}: {problem}. Every answer saved before is safe; "
            f"{'free some space' if full else 'fix the disk or choose another results file'}, then run the "
            "same call again to resume.",
        ) from None


def read_lines(data: bytes, path: Path) -> list[ItemResult]:
    """The records of the lines of ``data``: every line that ends in a newline, and a last line
    without one if it is a whole record (a file edited by hand or copied); a last line cut off by a
    killed run does not parse and is ignored."""
    lines = data.split(b"\n")
    results = []
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            results.append(ItemResult.from_record(json.loads(line)))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{path}, line {number} is not a result of run_dataset ({type(err).__name__}: {err}). The file "
                "was edited or written by something else: fix or delete that line, or use a new results file."
            ) from None
    last = _whole_record(lines[-1])
    return results + ([last] if last is not None else [])


def _whole_record(line: bytes) -> ItemResult | None:
    """The record of a line without its newline, or None if it is cut off (or empty)."""
    if not line.strip():
        return None
    try:
        return ItemResult.from_record(json.loads(line))
    except (ValueError, KeyError, TypeError):
        return None


def latest(results: Iterable[ItemResult]) -> dict[str, ItemResult]:
    """The last result of each key: a retried item's newer line replaces its failed one."""
    by_key: dict[str, ItemResult] = {}
    for r in results:
        by_key.pop(r.key, None)
        by_key[r.key] = r
    return by_key


def read_results(path: Path) -> list[ItemResult]:
    """Every complete line of a results file (all lines, not only the latest per item); [] if none."""
    try:
        return read_lines(path.read_bytes(), path)
    except FileNotFoundError:
        return []


def load_results(path: str | os.PathLike) -> list[ItemResult]:
    """The results in a results file, one per item (the latest), without changing the file.

    A partial last line, left by a run killed while writing, is ignored: that item is not done.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No results file at {path}: run_dataset writes it")
    return list(latest(read_lines(path.read_bytes(), path)).values())


@contextlib.contextmanager
def open_results(path: Path, *, wait_s: float = 0.0) -> Iterator[tuple[IO[bytes], list[ItemResult]]]:
    """The results file, locked for this run and cut back to its last whole line, and its results.

    Another process's lock is waited for up to ``wait_s`` seconds (a merge waits for a short
    write; a run refuses at once). The lock is held on the file that ``path`` names when it is
    taken: if another process replaced or removed that file meanwhile, the new one is opened, so
    no answer is ever appended to a file nobody will read.
    """
    deadline = time.monotonic() + wait_s
    while True:
        file = _open_for_append(path)
        locked = try_lock(file.fileno())  # released when the file closes; None: no locks (Windows)
        if locked is False:
            file.close()
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise RuntimeError(
                f"Another run is writing {path} right now. Wait for it to finish, or give this run "
                "another results file."
            )
        if same_open_file(file, path):
            break
        file.close()  # unlinked (merged) while we waited for its lock: open the file there now
    with file:
        file.seek(0)
        data = file.read()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            if _whole_record(data[complete:]) is not None:  # a whole last record without its newline
                file.seek(0, os.SEEK_END)
                file.write(b"\n")
                data += b"\n"
            else:  # a line cut off by a killed run: drop it, so the item runs again
                file.truncate(complete)
                data = data[:complete]
            file.flush()
            os.fsync(file.fileno())
        yield file, read_lines(data, path)


def _open_for_append(path: Path) -> IO[bytes]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a+b")  # noqa: SIM115 (closed by the caller)
    except OSError as err:
        raise PermissionError(
            err.errno,
            f"Cannot write the results file {path} ({err.strerror or err}). Choose a results file in a "
            "folder you can write to (e.g. output_path('results.jsonl')); the answers already in this one "
            "can still be read with load_results.",
        ) from None


def same_open_file(file: IO[bytes], path: Path) -> bool:
    """Is the open ``file`` still the one at ``path`` (not removed or replaced since it was opened)?"""
    try:
        return os.path.samestat(os.fstat(file.fileno()), os.stat(path))
    except OSError:
        return False
