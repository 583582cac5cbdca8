"""Run Molmo2 over a dataset of your own, resumably, and measure how good the answers are.

Why: after the lessons, the next step is a folder of your own images or videos and the question
"how good is it on *my* data?". Three things are easy to get wrong there, so they live here:

* **The run** (``run_dataset``) may take hours and will be interrupted. Each finished item is one
  JSON line in a results file, written with one ``write`` and forced to disk (``fsync``) before
  the next item starts, so a finished item is never lost. A process killed while writing leaves
  at most a partial last line (no newline at its end): the next run cuts it off before appending
  and readers ignore it, so it never counts as done. Items already in the file are skipped, so
  re-running resumes and never duplicates. An item that fails (unreadable file, out of memory) is
  recorded with its error and the run goes on. A lock stops two runs writing one file, and every
  line carries the run's settings: resuming with other settings raises instead of mixing answers.
* **The scores** (``score_results``) match predicted to true points one to one
  (``evaluation.match_points``) within 5% of the image diagonal (``evaluation.distance_threshold``),
  per image and, for videos, per frame shown, plus counting accuracy and, for tracks, whether
  each object kept one id.
* **The exports** (``export_csv``, ``export_points_csv``, ``export_coco``) are files that pandas,
  CVAT or FiftyOne read.

A dataset is a folder of images and videos, or a JSON or CSV list of them with optional ground
truth (see ``load_dataset``); ``input/coin_table.json`` is an example. The lesson is
``08_your_dataset.ipynb``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import numbers
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from molmo_nb_utils.asking import VIDEO_SUFFIXES, Answer, chat, user_message
from molmo_nb_utils.evaluation import (
    DIAGONAL_FRACTION,
    CountScore,
    GroundTruth,
    PointScore,
    TrackScore,
    count_scores,
    distance_threshold,
    load_ground_truth,
    point_scores,
    score_points,
    sum_scores,
)
from molmo_nb_utils.grounding import (
    Point,
    count_points,
    format_points,
    group_by_time,
    points_from_records,
    points_to_records,
)
from molmo_nb_utils.media import DEFAULT_FPS, DEFAULT_MAX_FRAMES, load_image, sample_frames
from molmo_nb_utils.paths import atomic_path, try_lock

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DatasetItem",
    "DatasetScore",
    "ItemResult",
    "ItemScore",
    "draw_result",
    "export_coco",
    "export_csv",
    "export_points_csv",
    "load_dataset",
    "load_results",
    "plot_counts",
    "results_from_answers",
    "run_dataset",
    "score_results",
    "score_table",
    "worked_answer",
    "worst_items",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
FIELDS = ("file", "label", "prompt", "count", "points", "truth")  # of one item in a JSON or CSV list

# ---------------------------------------------------------------------------------------------
# The dataset


@dataclass(frozen=True)
class DatasetItem:
    """One image or video of a dataset, with its ground truth where known."""

    key: str  # the file as listed (relative to the list or folder): names the item in results
    path: Path
    kind: str  # "image" or "video"
    label: str = "object"  # what is counted or pointed at: the category in exports
    prompt: str | None = None  # this item's own prompt; None: the run's
    count: int | None = None  # true count
    points: tuple[Point, ...] | None = None  # true points of an image (on image 1), in pixels
    truth: Path | None = None  # a video's ground-truth file (see evaluation.load_ground_truth)


def load_dataset(source: str | os.PathLike | Sequence[Any], *, label: str = "object") -> list[DatasetItem]:
    """The items of a folder, a ``.json``/``.csv`` list, or a Python list of paths or dicts.

    A folder gives every image and video in it (subfolders too), without ground truth. A list
    gives one item per entry with these fields (all but ``file`` optional):

    * ``file``: the image or video, relative to the list's folder (or to the working directory
      for a Python list);
    * ``label``: what to count (default: the JSON list's top-level ``label``, else ``label``);
    * ``prompt``: a prompt for this item only (e.g. "Track the coins." for one video);
    * ``count``: the true count;
    * ``points``: the true points of an image in pixels: in JSON ``[{"x": 10, "y": 20}, ...]`` or
      ``[[10, 20], ...]``, in CSV ``"10 20; 30 40"``; the count is then their number;
    * ``truth``: a video's ground-truth file (``input/ground_truth/*.json`` shows the format); the
      count is then its number of objects.

    A JSON list is a list of such entries, or ``{"label": ..., "items": [...]}``. Problems (a
    missing file, a typo in a field, a count that disagrees with the points) raise here, before
    any GPU time is spent.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if _kind(p) and p.is_file() and not _hidden(p.relative_to(path))
            )
            if not files:
                raise ValueError(
                    f"{path} holds no images or videos (looked for {', '.join(sorted(IMAGE_SUFFIXES))} and "
                    f"{', '.join(sorted(VIDEO_SUFFIXES))})"
                )
            entries, root, where = [{"file": p.relative_to(path).as_posix()} for p in files], path, str(path)
        elif path.suffix.lower() in (".json", ".csv"):
            entries, label = _read_list(path, label)
            root, where = path.parent, path.name
        elif not path.exists():
            raise FileNotFoundError(f"No dataset at {path}: pass a folder, or a .json or .csv list of files")
        else:
            raise ValueError(
                f"{path.name}: a dataset is a folder or a .json or .csv list, not a {path.suffix} file"
            )
    else:
        entries = [e if isinstance(e, Mapping) else {"file": e} for e in source]
        root, where = Path(), "the list"
    items = [_item(entry, root, label, f"{where}, item {n}") for n, entry in enumerate(entries, start=1)]
    _check_items(items, where)
    return items


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _read_list(path: Path, label: str) -> tuple[list[Any], str]:
    if not path.is_file():
        raise FileNotFoundError(f"No dataset list at {path}")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = list(csv.DictReader(file))
        # An empty cell means "not given"; the CSV module reads it as "".
        return [{k: v for k, v in row.items() if v not in ("", None)} for row in rows], label
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path.name} is not valid JSON ({err})") from None
    if isinstance(data, Mapping) and isinstance(data.get("items"), list):
        return data["items"], str(data.get("label", label))
    if isinstance(data, list):
        return data, label
    raise ValueError(
        f'{path.name} should hold a list of items, or {{"items": [...]}}, got {type(data).__name__}'
    )


def _item(entry: Any, root: Path, label: str, where: str) -> DatasetItem:
    if not isinstance(entry, Mapping) or not entry.get("file"):
        raise ValueError(f"{where}: every item needs a 'file', got {entry!r}")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; an item has {', '.join(FIELDS)}")
    key = str(entry["file"]).replace("\\", "/")
    where = f"{where} ({key})"
    path = root / key
    kind = _kind(path)
    if kind is None:
        raise ValueError(f"{where}: not an image or video file by its suffix ({path.suffix or 'none'})")
    count = _count(entry.get("count"), where)
    points = _points(entry["points"], where) if "points" in entry else None
    truth = root / str(entry["truth"]) if "truth" in entry else None
    if kind == "video" and points is not None:
        raise ValueError(
            f"{where}: give a video's true positions as a ground-truth file ('truth'), not 'points'"
        )
    if kind == "image" and truth is not None:
        raise ValueError(f"{where}: 'truth' files are for videos; give an image's true positions as 'points'")
    derived = len(points) if points is not None else _truth_count(truth, where) if truth is not None else None
    if count is not None and derived is not None and count != derived:
        source = "points" if points is not None else "objects in its truth file"
        raise ValueError(f"{where}: count {count} but {derived} {source}; fix one of them")
    return DatasetItem(
        key=key,
        path=path,
        kind=kind,
        label=str(entry.get("label", label)),
        prompt=str(entry["prompt"]) if entry.get("prompt") else None,
        count=count if count is not None else derived,
        points=points,
        truth=truth,
    )


def _count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{where}: count must be a whole number >= 0, got {value!r}")
    return int(value)


def _points(value: Any, where: str) -> tuple[Point, ...]:
    """True points from JSON (dicts or pairs) or a CSV cell ("x y; x y"), numbered 1, 2, ... unless given."""
    if isinstance(value, str):
        value = [pair.split() for pair in value.split(";") if pair.strip()]
    points = []
    try:
        for n, p in enumerate(value, start=1):
            if isinstance(p, Mapping):
                point = Point(int(p.get("id", n)), float(p["x"]), float(p["y"]), image=1)
            else:
                x, y = p
                point = Point(n, float(x), float(y), image=1)
            if not (math.isfinite(point.x) and math.isfinite(point.y)):
                raise ValueError("not finite")
            points.append(point)
    except (TypeError, ValueError, KeyError):
        raise ValueError(
            f"{where}: points must be pixel positions, in JSON [{{'x': 10, 'y': 20}}, ...] or [[10, 20], ...], "
            f"in CSV '10 20; 30 40'; got {value!r}"
        ) from None
    return tuple(points)


def _truth_count(path: Path, where: str) -> int:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: its ground-truth file {path} does not exist")
    return len({p.id for p in load_ground_truth(path).points})


def _check_items(items: list[DatasetItem], where: str) -> None:
    missing = [item.key for item in items if not item.path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(
            f"{where}: {len(missing)} file(s) not found: {shown}. Check the paths in the list."
        )
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            raise ValueError(f"{where}: {item.key} is listed twice; list each file once")
        seen.add(item.key)


# ---------------------------------------------------------------------------------------------
# One result per item


@dataclass(frozen=True)
class ItemResult:
    """What a run recorded for one item: one line of the results file (no pixels, no frames)."""

    key: str
    kind: str
    prompt: str
    settings: Mapping[str, Any]  # the run's: model, default prompt, max_new_tokens, fps, ...
    answer: str | None = None  # the model's text; None if the item failed
    points: tuple[Point, ...] = ()  # from <points>, in pixels (videos: at the times of the frames shown)
    tracks: tuple[Point, ...] = ()  # from <tracks> (videos only): ids are object ids
    size: tuple[int, int] | None = None  # (width, height) of the image or video
    times: tuple[float, ...] = ()  # videos: the prompt time of each frame shown
    frame_indices: tuple[int, ...] = ()  # videos: the video frame index of each frame shown
    prompt_tokens: int | None = None
    visual_tokens: int | None = None
    seconds: float = 0.0  # time to answer
    error: str | None = None  # "ExceptionType: message" when the item failed
    skipped: tuple[str, ...] = ()  # what the parser skipped in the answer, and why
    finished: str = ""  # when, in UTC (ISO 8601)

    @property
    def count(self) -> int:
        """The predicted count: distinct ids of the points and tracks (pointing numbers them 1, 2, ...)."""
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
        )


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    """A point record without the empty fields (an image point has no time, a video point no image)."""
    return {k: v for k, v in record.items() if v is not None and k != "frame"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _result(
    item: DatasetItem, prompt: str, settings: Mapping[str, Any], answer: Answer, seconds: float
) -> ItemResult:
    """The record of an answer: its text, its points in pixels, and what the model was shown."""
    skipped: list[str] = []
    video = answer.video
    if video is not None:
        extra = {
            "tracks": tuple(answer.tracks(skipped=skipped)),
            "size": video.size,
            "times": tuple(video.timestamps),
            "frame_indices": tuple(video.indices),
        }
    elif answer.images:
        extra = {"size": answer.image_sizes[0]}
    else:
        raise ValueError("the answer carries no image or video: ask with chat(), which keeps what it showed")
    return ItemResult(
        key=item.key,
        kind=item.kind,
        prompt=prompt,
        settings=dict(settings),
        answer=str.__str__(answer),
        points=tuple(answer.points(skipped=skipped)),
        prompt_tokens=getattr(answer, "prompt_tokens", None),
        visual_tokens=getattr(answer, "visual_tokens", None),
        seconds=seconds,
        skipped=tuple(skipped),
        finished=_now(),
        **extra,
    )


# ---------------------------------------------------------------------------------------------
# The results file: one JSON line per item, append-only


def _append_line(file: IO[bytes], line: bytes) -> None:
    """Write one whole line and force it to disk before going on: a finished item is never lost."""
    file.write(line)
    file.flush()
    os.fsync(file.fileno())


def _read_lines(data: bytes, path: Path) -> list[ItemResult]:
    """The records of the complete lines of ``data`` (everything after the last newline is ignored)."""
    results = []
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            results.append(ItemResult.from_record(json.loads(line)))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{path}, line {number} is not a result of run_dataset ({type(err).__name__}: {err}). The file "
                "was edited or written by something else: fix or delete that line, or use a new results file."
            ) from None
    return results


def _latest(results: Iterable[ItemResult]) -> dict[str, ItemResult]:
    """The last result of each key: a retried item's newer line replaces its failed one."""
    latest: dict[str, ItemResult] = {}
    for r in results:
        latest.pop(r.key, None)
        latest[r.key] = r
    return latest


def load_results(path: str | os.PathLike) -> list[ItemResult]:
    """The results in a results file, one per item (the latest), without changing the file.

    A partial last line, left by a run killed while writing, is ignored: that item is not done.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No results file at {path}: run_dataset writes it")
    return list(_latest(_read_lines(path.read_bytes(), path)).values())


@contextlib.contextmanager
def _open_results(path: Path) -> Iterator[tuple[IO[bytes], list[ItemResult]]]:
    """The results file, locked for this run and cut back to its last complete line, and its results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as file:
        if try_lock(file.fileno()) is False:  # released when the file closes; no locks on Windows
            raise RuntimeError(
                f"Another run is writing {path} right now. Wait for it to finish, or give this run "
                "another results file."
            )
        file.seek(0)
        data = file.read()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a line cut off by a killed run: drop it, so the item runs again
            file.truncate(complete)
            file.flush()
            os.fsync(file.fileno())
        yield file, _read_lines(data[:complete], path)


def _model_name(model: Any) -> str | None:
    """The last part of the model's name ("Molmo2-4B" for "allenai/Molmo2-4B", a local folder's name)."""
    name = getattr(model, "name_or_path", None)
    return Path(str(name)).name if name else None


def _check_settings(results: Iterable[ItemResult], settings: Mapping[str, Any], path: Path) -> None:
    for r in results:
        changed = [k for k in sorted({*settings, *r.settings}) if r.settings.get(k) != settings.get(k)]
        if changed:
            k = changed[0]
            raise ValueError(
                f"{path} holds results made with other settings ({k}: {r.settings.get(k)!r} there, "
                f"{settings.get(k)!r} now). Resuming would mix them: give this run a new results file "
                "(one per model and prompt), or delete the file to start over."
            )


def run_dataset(
    model: Any,
    processor: Any,
    items: Sequence[DatasetItem],
    results_path: str | os.PathLike,
    *,
    prompt: str | None = None,
    max_new_tokens: int = 256,
    fps: float | None = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_crops: int | None = None,
    limit: int | None = None,
    retry_failed: bool = False,
    ask: Callable[..., Answer] = chat,
) -> list[ItemResult]:
    """Ask about every item, appending one JSON line per item to ``results_path``; return all results.

    ``prompt`` is asked of every item that has no prompt of its own. Items already in the file are
    skipped, so after an interruption the same call resumes; ``limit`` answers at most that many
    new items (to try a prompt first). A failed item is recorded with its error and skipped on
    later runs unless ``retry_failed``. ``ask`` is called like ``chat`` (tests pass a stand-in).
    The results come back in the order of ``items``, one per item answered so far.
    """
    results_path = Path(results_path)
    items = list(items)
    _check_items(items, "items")
    unasked = [item.key for item in items if not (item.prompt or prompt)]
    if unasked:
        raise ValueError(
            f"{len(unasked)} item(s) have no prompt of their own ({unasked[0]}, ...): pass prompt=..."
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a whole number >= 0 or None, got {limit!r}")
    settings = {
        "model": _model_name(model),
        "prompt": prompt,
        "max_new_tokens": max_new_tokens,
        "fps": fps,
        "max_frames": max_frames,
        "max_crops": max_crops,
    }
    with _open_results(results_path) as (file, earlier):
        _check_settings(earlier, settings, results_path)
        done = _latest(earlier)
        for item in items:
            if item.key in done and done[item.key].prompt != (item.prompt or prompt):
                raise ValueError(
                    f"{results_path} answered {item.key} to {done[item.key].prompt!r}, but its prompt is now "
                    f"{item.prompt or prompt!r}: use a new results file, or delete this one to start over."
                )
        todo = [i for i in items if i.key not in done or (retry_failed and done[i.key].error is not None)]
        finished = len(items) - len(todo)
        todo = todo[:limit] if limit is not None else todo
        failed = 0
        # The bar starts at the items done before; its rate and time left count this run's items only.
        with tqdm(total=finished + len(todo), initial=finished, desc="items", unit="item") as bar:
            for item in todo:
                result = _ask_one(model, processor, item, item.prompt or prompt, settings, ask)
                line = json.dumps(result.to_record(), ensure_ascii=False) + "\n"
                _append_line(file, line.encode("utf-8"))
                done.pop(item.key, None)
                done[item.key] = result
                failed += result.error is not None
                bar.update()
                if failed:
                    bar.set_postfix(failed=failed)
    return [done[item.key] for item in items if item.key in done]


def _ask_one(model, processor, item: DatasetItem, prompt: str, settings, ask) -> ItemResult:
    """One item's result; an exception becomes a recorded error (Ctrl-C still stops the run)."""
    start = time.perf_counter()
    try:
        answer = ask(
            model,
            processor,
            [user_message(item.path, text=prompt)],
            max_new_tokens=settings["max_new_tokens"],
            fps=settings["fps"],
            max_frames=settings["max_frames"],
            max_crops=settings["max_crops"],
        )
        return _result(item, prompt, settings, answer, time.perf_counter() - start)
    except Exception as error:
        return ItemResult(
            key=item.key,
            kind=item.kind,
            prompt=prompt,
            settings=dict(settings),
            seconds=time.perf_counter() - start,
            error=f"{type(error).__name__}: {error}",
            finished=_now(),
        )


# ---------------------------------------------------------------------------------------------
# Answers written by hand (worked examples, tests)


def _truth_at(item: DatasetItem, times: Sequence[float], indices: Sequence[int]) -> list[Point]:
    """The true positions of a video item on the frames shown."""
    return load_ground_truth(item.truth).at_frames(list(indices), list(times))


def worked_answer(
    item: DatasetItem,
    *,
    drop: Iterable[int] = (),
    add: Iterable[tuple[float, float]] = (),
    shift: tuple[float, float] = (0.0, 0.0),
    swap: tuple[int, int, float] | None = None,
    tag: str = "points",
    fps: float | None = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> str:
    """An answer in Molmo2's format written from the item's ground truth, with known mistakes.

    ``drop``: true ids left out (missed objects); ``add``: extra points (x, y) in pixels (on every
    frame shown, for a video); ``shift``: (dx, dy) pixels added to every true point; ``swap``:
    ``(a, b, t)``: ids a and b trade places from time t on (an identity switch in tracks).
    Videos are written at the frames ``fps`` and ``max_frames`` show. With nothing left to point
    at, the answer is "There are none.".
    """
    dropped = set(drop)
    dx, dy = shift
    if item.kind == "image":
        if item.points is None:
            raise ValueError(f"{item.key} has no true points to write an answer from")
        size = load_image(item.path).size
        places: list[tuple[int | None, float | None]] = [(1, None)]
        truth = list(item.points)
    else:
        if item.truth is None:
            raise ValueError(f"{item.key} has no ground-truth file to write an answer from")
        shown = sample_frames(item.path, max_frames, fps)
        size = shown.size
        places = [(None, t) for t in dict.fromkeys(shown.timestamps)]
        truth = _truth_at(item, shown.timestamps, shown.indices)
    points = [replace(p, x=p.x + dx, y=p.y + dy) for p in truth if p.id not in dropped]
    if swap is not None:
        a, b, since = swap
        swapped = {a: b, b: a}
        points = [replace(p, id=swapped.get(p.id, p.id)) if (p.time or 0.0) >= since else p for p in points]
    extras = list(add)
    first_extra = max((p.id for p in truth), default=0) + 1
    for image, t in places:
        points += [Point(first_extra + k, x, y, image, t) for k, (x, y) in enumerate(extras)]
    if not points:
        return "There are none."
    points.sort(key=lambda p: (p.time or 0.0, p.id))
    return format_points(points, size, label=item.label, tag=tag)


def results_from_answers(
    items: Sequence[DatasetItem],
    answers: Mapping[str, str],
    *,
    prompt: str = "(answers written by hand)",
    fps: float | None = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> list[ItemResult]:
    """The results a run would record if the model had answered ``answers`` (item key -> text).

    The images are loaded and the video frames sampled as a run would, so sizes, times and frame
    indices are the real ones. For worked examples and for checking scores by hand.
    """
    by_key = {item.key: item for item in items}
    unknown = [key for key in answers if key not in by_key]
    if unknown:
        raise ValueError(f"answers for items not in the dataset: {unknown}")
    settings = {"model": None, "prompt": prompt, "max_new_tokens": None, "fps": fps, "max_frames": max_frames}
    results = []
    for key, text in answers.items():
        item = by_key[key]
        if item.kind == "image":
            answer = Answer(text, images=[load_image(item.path)])
        else:
            answer = Answer(text, videos=[sample_frames(item.path, max_frames, fps)])
        results.append(_result(item, prompt, settings, answer, 0.0))
    return results


# ---------------------------------------------------------------------------------------------
# Scores


@dataclass(frozen=True)
class ItemScore:
    """How one item's answer compares with its ground truth (None where there is nothing to compare)."""

    key: str
    kind: str
    true_count: int | None
    predicted_count: int | None  # None if the item failed
    points: PointScore | None = None  # images: the image; videos: pooled over the frames shown
    tracks: TrackScore | None = None  # videos answered with <tracks> and with a truth file
    threshold_px: float | None = None  # a predicted point this close to a true one can match it
    error: str | None = None  # the run's error, if the item failed

    @property
    def count_error(self) -> int | None:
        """Predicted minus true count: > 0 counted too many."""
        if self.true_count is None or self.predicted_count is None:
            return None
        return self.predicted_count - self.true_count


@dataclass(frozen=True)
class DatasetScore:
    """Scores over a dataset: per item, and pooled.

    ``image_points`` and ``video_points`` add up matched, extra and missed points over the images,
    or over the frames shown of the videos (a micro average); ``mean_image_f1`` averages each
    image's F1 instead, as the Molmo2 paper does. ``id_consistency`` is the share of true objects
    followed by one id, averaged over the videos answered with tracks (pointing ids only count).
    """

    items: tuple[ItemScore, ...]
    counts: CountScore | None
    image_points: PointScore | None
    video_points: PointScore | None
    mean_image_f1: float | None
    id_consistency: float | None
    not_run: tuple[str, ...] = ()
    fraction: float = DIAGONAL_FRACTION

    @property
    def failed(self) -> tuple[ItemScore, ...]:
        return tuple(s for s in self.items if s.error is not None)

    def __str__(self) -> str:
        scored = len(self.items) - len(self.failed)
        lines = [f"{scored} item(s) scored, {len(self.failed)} failed, {len(self.not_run)} not run yet"]
        if self.counts:
            lines.append(f"counting: {self.counts}")
        threshold = f"{self.fraction:.0%} of the diagonal"
        if self.image_points:
            images = sum(s.kind == "image" and s.points is not None for s in self.items)
            lines.append(f"points in {images} image(s), within {threshold}: {self.image_points}")
            lines.append(f"  mean F1 per image: {self.mean_image_f1:.2f}")
        if self.video_points:
            videos = sum(s.kind == "video" and s.points is not None for s in self.items)
            lines.append(
                f"points in {videos} video(s), per frame shown, within {threshold}: {self.video_points}"
            )
        if self.id_consistency is not None:
            tracked = sum(s.tracks is not None for s in self.items)
            lines.append(
                f"tracks: {self.id_consistency:.0%} of objects followed by one id ({tracked} video(s) with tracks)"
            )
        return "\n".join(lines)


class _Shown(NamedTuple):
    """The frames a video answer was given, as ``score_points`` reads them (times and frame indices)."""

    timestamps: list[float]
    indices: list[int]


def _score_item(item: DatasetItem, result: ItemResult, fraction: float) -> ItemScore:
    if result.error is not None:
        return ItemScore(item.key, item.kind, item.count, None, error=result.error)
    if result.size is None:
        raise ValueError(f"the result of {item.key} has no image size: was it written by run_dataset?")
    threshold = distance_threshold(*result.size, fraction=fraction)
    predicted = [*result.points, *result.tracks]
    points = tracks = None
    if item.kind == "image" and item.points is not None:
        points = point_scores(predicted, item.points, threshold)
    elif item.kind == "video" and item.truth is not None:
        truth = load_ground_truth(item.truth)
        _check_size(item, truth, result.size)
        shown = dict(zip(result.times, result.frame_indices, strict=True))  # a repeated time is one entry
        truth_at = group_by_time(truth.at_frames(list(shown.values()), list(shown)))
        predicted_at = group_by_time(predicted)
        points = sum_scores(
            point_scores(predicted_at.get(t, []), truth_at.get(t, []), threshold) for t in shown
        )
        if result.tracks:
            tracks = score_points(
                result.tracks, truth, _Shown(list(shown), list(shown.values())), radius=threshold
            )
    return ItemScore(item.key, item.kind, item.count, result.count, points, tracks, threshold)


def _check_size(item: DatasetItem, truth: GroundTruth, size: tuple[int, int]) -> None:
    if (truth.width, truth.height) != tuple(size):
        raise ValueError(
            f"{item.key}: its truth file is for a {truth.width}x{truth.height} video, but the video is "
            f"{size[0]}x{size[1]}: is it the right truth file?"
        )


def score_results(
    items: Sequence[DatasetItem], results: Iterable[ItemResult], *, fraction: float = DIAGONAL_FRACTION
) -> DatasetScore:
    """Score each item's result against its ground truth, and pool the scores.

    A predicted point counts when it can be paired with a true point within ``fraction`` of the
    image diagonal, each true point paired at most once (``evaluation.match_points``). Failed
    items are listed, not scored; items without a result are counted as not run.
    """
    by_key = _latest(results)
    scores, not_run = [], []
    for item in items:
        if item.key in by_key:
            scores.append(_score_item(item, by_key[item.key], fraction))
        else:
            not_run.append(item.key)
    ok = [s for s in scores if s.error is None]
    counted = [s for s in ok if s.true_count is not None]
    images = [s.points for s in ok if s.kind == "image" and s.points is not None]
    videos = [s.points for s in ok if s.kind == "video" and s.points is not None]
    tracked = [s.tracks.id_consistency for s in ok if s.tracks is not None]
    return DatasetScore(
        items=tuple(scores),
        counts=count_scores([s.predicted_count for s in counted], [s.true_count for s in counted])
        if counted
        else None,
        image_points=sum_scores(images) if images else None,
        video_points=sum_scores(videos) if videos else None,
        mean_image_f1=sum(p.f1 for p in images) / len(images) if images else None,
        id_consistency=sum(tracked) / len(tracked) if tracked else None,
        not_run=tuple(not_run),
        fraction=fraction,
    )


def worst_items(score: DatasetScore, n: int = 5, *, by: str = "f1") -> list[ItemScore]:
    """The ``n`` worst scored items: lowest F1 first (``by="f1"``) or largest count error (``"count"``).

    Ties go to the larger count error (or the lower F1); failed items are not ranked (see
    ``score.failed``).
    """
    if by not in ("f1", "count"):
        raise ValueError(f"by must be 'f1' or 'count', got {by!r}")
    ok = [s for s in score.items if s.error is None]

    def f1(s: ItemScore) -> float:
        return s.points.f1 if s.points is not None else 1.0

    def miss(s: ItemScore) -> int:
        return abs(s.count_error) if s.count_error is not None else 0

    if by == "f1":
        ranked = sorted((s for s in ok if s.points is not None), key=lambda s: (f1(s), -miss(s)))
    else:
        ranked = sorted((s for s in ok if s.true_count is not None), key=lambda s: (-miss(s), f1(s)))
    return ranked[:n]


def score_table(scores: Iterable[ItemScore]) -> str:
    """A plain-text table of item scores, one row per item; failed items' errors are listed below it."""

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [("item", "true", "answer", "error", "precision", "recall", "F1", "one id")]
    errors = []
    for s in scores:
        p, t = s.points, s.tracks
        answer = "failed" if s.error is not None else num(s.predicted_count, "d")
        rows.append(
            (
                s.key,
                num(s.true_count, "d"),
                answer,
                num(s.count_error, "+d"),
                num(p and p.precision, ".2f"),
                num(p and p.recall, ".2f"),
                num(p and p.f1, ".2f"),
                num(t and t.id_consistency, ".0%"),
            )
        )
        if s.error is not None:
            errors.append(f"{s.key} failed: {s.error}")
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if k == 0 else cell.rjust(w)
            for k, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join([*lines, *errors])


# ---------------------------------------------------------------------------------------------
# Pictures


def _draw_rings(image: Image.Image, points: Iterable[Point], radius: float) -> Image.Image:
    """A copy of ``image`` with a ring of ``radius`` around each true point: a prediction inside can match."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 320))
    for p in points:
        box = (p.x - radius, p.y - radius, p.x + radius, p.y + radius)
        draw.ellipse(box, outline=(0, 0, 0), width=width + 2)
        draw.ellipse((box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1), outline=(255, 255, 255), width=width)
    return out


def draw_result(
    item: DatasetItem, result: ItemResult, *, fraction: float = DIAGONAL_FRACTION, cols: int = 3
) -> Image.Image:
    """The item with its truth as white rings (the matching distance) and the answer's points as dots.

    A video shows the frames the model was given, in a grid, each with its truth and points.
    """
    from molmo_nb_utils.drawing import draw_points, frame_grid, with_header

    if result.error is not None:
        raise ValueError(f"{item.key} failed ({result.error}): there is no answer to draw")
    radius = distance_threshold(*result.size, fraction=fraction)
    predicted = [*result.points, *result.tracks]
    true = "?" if item.count is None else item.count
    if item.kind == "image":
        picture = _draw_rings(load_image(item.path), item.points or (), radius)
        return draw_points(picture, predicted, label=f"{item.key} ({true} true, in rings), answer")
    shown = sample_frames(
        item.path, result.settings.get("max_frames") or DEFAULT_MAX_FRAMES, result.settings.get("fps")
    )
    if tuple(shown.indices) != result.frame_indices:
        raise ValueError(
            f"{item.key}: the video's frames differ from those the run recorded; was the file changed?"
        )
    truth_at = group_by_time(_truth_at(item, shown.timestamps, shown.indices) if item.truth else [])
    ringed = [
        np.asarray(_draw_rings(Image.fromarray(frame), truth_at.get(t, []), radius))
        for frame, t in zip(shown.frames, shown.timestamps, strict=True)
    ]
    grid = frame_grid(replace(shown, frames=np.stack(ringed)), points=predicted, cols=cols)
    return with_header(grid, f"{item.key} ({true} true, in rings), answer: {result.count} ids")


def plot_counts(score: DatasetScore) -> Figure:
    """Predicted against true counts, one dot per item (bigger where several coincide), the diagonal exact.

    Closed in pyplot before it is returned, so a notebook shows it once.
    """
    import matplotlib.pyplot as plt

    pairs = [(s.true_count, s.predicted_count, s.key) for s in score.items if s.count_error is not None]
    if not pairs:
        raise ValueError("no item has both a true and a predicted count: give counts in the dataset")
    fig, ax = plt.subplots(figsize=(5, 5))
    top = max(max(t, p) for t, p, _ in pairs) + 1
    ax.plot([0, top], [0, top], color="0.6", linestyle="--", label="exact")
    tally: dict[tuple[int, int], list[str]] = {}
    for t, p, key in pairs:
        tally.setdefault((t, p), []).append(key)
    for (t, p), keys in tally.items():
        ax.scatter([t], [p], s=40 * len(keys), color="tab:red" if t != p else "tab:blue", zorder=3)
        if t != p:
            ax.annotate(
                ", ".join(Path(k).stem for k in keys),
                (t, p),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=8,
            )
    ax.set_xlim(-0.5, top)
    ax.set_ylim(-0.5, top)
    ax.set_xlabel("true count")
    ax.set_ylabel("predicted count")
    c = score.counts
    ax.set_title(f"{c.exact}/{c.n} exact, mean absolute error {c.mean_abs_error:.2f}" if c else "counts")
    ax.legend(loc="upper left")
    fig.tight_layout()
    plt.close(fig)
    return fig


# ---------------------------------------------------------------------------------------------
# Exports

CSV_FIELDS = [
    "key", "kind", "prompt", "true_count", "predicted_count", "count_error", "tp", "fp", "fn",
    "precision", "recall", "f1", "mean_error_px", "threshold_px", "id_consistency", "seconds", "error", "answer",
]  # fmt: skip
POINT_FIELDS = ["key", "kind", "tag", "image", "time", "frame", "id", "x", "y"]


def _write_csv(path: str | os.PathLike, fields: list[str], rows: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def export_csv(score: DatasetScore, results: Iterable[ItemResult], path: str | os.PathLike) -> Path:
    """One row per item: counts, matched/extra/missed points, precision, recall, F1, time, error, answer.

    Read it with ``csv.DictReader`` or ``pandas.read_csv``; empty cells are values that do not apply.
    """
    by_key = _latest(results)
    rows = []
    for s in score.items:
        r, p = by_key.get(s.key), s.points
        rows.append(
            {
                "key": s.key,
                "kind": s.kind,
                "prompt": r.prompt if r else None,
                "true_count": s.true_count,
                "predicted_count": s.predicted_count,
                "count_error": s.count_error,
                "tp": p and p.tp,
                "fp": p and p.fp,
                "fn": p and p.fn,
                "precision": p and round(p.precision, 4),
                "recall": p and round(p.recall, 4),
                "f1": p and round(p.f1, 4),
                "mean_error_px": p and p.mean_error_px and round(p.mean_error_px, 2),
                "threshold_px": s.threshold_px and round(s.threshold_px, 2),
                "id_consistency": s.tracks and round(s.tracks.id_consistency, 4),
                "seconds": r.seconds if r else None,
                "error": s.error,
                "answer": r.answer if r else None,
            }
        )
    return _write_csv(path, CSV_FIELDS, rows)


def export_points_csv(results: Iterable[ItemResult], path: str | os.PathLike) -> Path:
    """One row per predicted point: item, tag (points or tracks), image or time and frame index, id, x, y."""
    rows = []
    for r in _latest(results).values():
        frame_of = dict(zip(r.times, r.frame_indices, strict=True))
        for tag, points in (("points", r.points), ("tracks", r.tracks)):
            for p in points:
                rows.append(
                    {
                        "key": r.key,
                        "kind": r.kind,
                        "tag": tag,
                        "image": p.image,
                        "time": p.time,
                        "frame": frame_of.get(p.time) if p.time is not None else None,
                        "id": p.id,
                        "x": round(p.x, 2),
                        "y": round(p.y, 2),
                    }
                )
    return _write_csv(path, POINT_FIELDS, rows)


def export_coco(items: Sequence[DatasetItem], results: Iterable[ItemResult], path: str | os.PathLike) -> Path:
    """The predicted points as COCO keypoints JSON (CVAT, FiftyOne and pycocotools read it).

    One category per label, with one keypoint; each point is an annotation with
    ``keypoints: [x, y, 2]`` (2: visible). Images are listed with ``file_name`` (the item's key),
    ``width`` and ``height``. Each frame a video answer was given is an image
    ``<video without suffix>/<frame index, 6 digits>.jpg`` (as ``ffmpeg -start_number 0`` would
    name the extracted frames) with ``video``, ``frame_index`` and ``time``. ``point_id`` keeps the
    answer's id; tracks add ``track_id``. Failed items are left out.
    """
    by_key = {key: r for key, r in _latest(results).items() if r.error is None}
    labels = sorted({item.label for item in items if item.key in by_key})
    categories = [
        {"id": k, "name": label, "supercategory": label, "keypoints": [label], "skeleton": []}
        for k, label in enumerate(labels, start=1)
    ]
    category_of = {c["name"]: c["id"] for c in categories}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []

    def annotate(image_id: int, item: DatasetItem, point: Point, track: bool) -> None:
        annotation = {
            "id": len(annotations) + 1,
            "image_id": image_id,
            "category_id": category_of[item.label],
            "keypoints": [round(point.x, 2), round(point.y, 2), 2],
            "num_keypoints": 1,
            "iscrowd": 0,
            "point_id": point.id,
        }
        if track:
            annotation["track_id"] = point.id
        annotations.append(annotation)

    for item in items:
        r = by_key.get(item.key)
        if r is None:
            continue
        width, height = r.size
        if item.kind == "image":
            images.append({"id": len(images) + 1, "file_name": item.key, "width": width, "height": height})
            for p in r.points:
                annotate(len(images), item, p, track=False)
            continue
        stem = item.key.rsplit(".", 1)[0]
        image_of = {}
        for t, index in zip(r.times, r.frame_indices, strict=True):
            if t in image_of:
                continue
            images.append(
                {
                    "id": len(images) + 1,
                    "file_name": f"{stem}/{index:06d}.jpg",
                    "width": width,
                    "height": height,
                    "video": item.key,
                    "frame_index": index,
                    "time": t,
                }
            )
            image_of[t] = len(images)
        for track, points in ((False, r.points), (True, r.tracks)):
            for p in points:
                if p.time in image_of:
                    annotate(image_of[p.time], item, p, track)
    coco = {
        "info": {
            "description": "Molmo2 answers, from molmo_nb_utils.dataset.export_coco",
            "date_created": _now(),
        },
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(coco, indent=1), encoding="utf-8")
    return Path(path)
