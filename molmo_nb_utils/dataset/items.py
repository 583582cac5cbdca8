"""The items of a dataset: a folder, or a JSON, CSV or TSV list of images and videos with ground truth.

Why here: every problem in a list (a missing file, a typo in a field, a point outside its image, a
list saved by a spreadsheet in another encoding, one file listed under two spellings) is cheap to
catch before the first GPU minute and expensive after it. So ``load_dataset`` refuses or warns,
naming the item, and the run that follows can trust its items.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import posixpath
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molmo_nb_utils.asking import VIDEO_SUFFIXES
from molmo_nb_utils.dataset.coco import coco_entries, is_coco
from molmo_nb_utils.evaluation import load_ground_truth
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.masks.geometry import Mask, check_mask_sizes, masks_of_points
from molmo_nb_utils.media import image_size
from molmo_nb_utils.paths import file_sha256

# Asked of an item that has no prompt of its own when the run gives none; "{label}" is the item's label.
DEFAULT_PROMPT = "Point to the {label}."
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
FIELDS = ("file", "label", "prompt", "count", "points", "truth")  # of one item in a JSON or CSV list
LIST_SUFFIXES = (".json", ".csv", ".tsv")
# Column separators spreadsheets write: commas; tabs (Excel's "Unicode text", .tsv); semicolons (Excel
# where the comma is the decimal mark: most of Europe).
DELIMITERS = (",", "\t", ";")


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
    masks: tuple[Mask, ...] | None = None  # points' object masks, one per point (masks.py); None: points only


def item_prompt(item: DatasetItem, prompt: str | None = None) -> str:
    """THE prompt an item is asked (by ``run_dataset``) and trained on (by ``fine_tune``).

    The item's own prompt wins, then the run's ``prompt``, then ``DEFAULT_PROMPT``; ``{label}`` in
    it becomes the item's label ("Point to the {label}." asks a coin item "Point to the coin.").
    One rule, so that a fine-tuned model is asked what it was taught.
    """
    text = item.prompt or prompt or DEFAULT_PROMPT
    return text.replace("{label}", item.label)


def load_dataset(source: str | os.PathLike | Sequence[Any], *, label: str = "object") -> list[DatasetItem]:
    """The items of a folder, a ``.json``/``.csv``/``.tsv`` list, or a Python list of paths or dicts.

    A folder gives every image and video in it (subfolders too, linked ones included), without
    ground truth. A list
    gives one item per entry with these fields (all but ``file`` optional):

    * ``file``: the image or video, relative to the list's folder (or to the working directory
      for a Python list);
    * ``label``: what to count (default: the JSON list's top-level ``label``, else ``label``);
    * ``prompt``: a prompt for this item only (e.g. "Track the coins." for one video);
    * ``count``: the true count;
    * ``points``: the true points of an image in pixels: in JSON ``[{"x": 10, "y": 20}, ...]`` or
      ``[[10, 20], ...]``, in CSV ``"10 20; 30 40"``; the count is then their number. In JSON each
      point may carry its object's ``"mask"`` (COCO polygons or RLE, see ``masks``): then it is
      scored by Molmo2's in-mask rule;
    * ``truth``: a video's ground-truth file (``input/ground_truth/*.json`` shows the format); the
      count is then its number of objects.

    A JSON list is a list of such entries (or of file names), or ``{"label": ..., "items": [...]}``,
    or a COCO instances file (CVAT, Label Studio, Roboflow; ``label`` picks its category, see
    ``dataset.coco``).
    Lists saved as UTF-8, UTF-16 (with its byte-order mark) or Windows-1252/Latin-1 (what
    spreadsheet programs write) are read; a CSV list's columns are separated by commas, tabs or
    semicolons (its header tells which). Problems (a missing file, a typo in a field, a count that
    disagrees with the points, a point outside its image, one file listed twice under different
    spellings such as ``a.png`` and ``./a.png``) raise here, before any GPU time is spent. Truth that lists nothing
    is a count of 0; without ``"count": 0`` beside it, a warning names the item (its truth may be
    missing).
    """
    if label is None or not str(label).strip():
        raise ValueError(f"label must be a non-empty text (what to count), got {label!r}")
    encoding = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = _folder_files(path)
            if not files:
                raise ValueError(
                    f"{path} holds no images or videos (looked for {', '.join(sorted(IMAGE_SUFFIXES))} and "
                    f"{', '.join(sorted(VIDEO_SUFFIXES))})"
                )
            entries, root, where = [{"file": p.relative_to(path).as_posix()} for p in files], path, str(path)
        elif path.suffix.lower() in LIST_SUFFIXES:
            entries, label, encoding = _read_list(path, label)
            root, where = path.parent, path.name
        elif not path.exists():
            raise FileNotFoundError(
                f"No dataset at {path}: pass a folder, or a .json, .csv or .tsv list of files"
            )
        else:
            hint = (
                " (Excel's 'Unicode text' is a tab-separated list: rename it to .tsv)"
                if path.suffix.lower() == ".txt"
                else ""
            )
            raise ValueError(
                f"{path.name}: a dataset is a folder or a .json, .csv or .tsv list, not a {path.suffix} "
                f"file{hint}"
            )
    else:
        entries = [e if isinstance(e, Mapping) else {"file": e} for e in source]
        root, where = Path(), "the list"
    items = [_item(entry, root, label, f"{where}, item {n}") for n, entry in enumerate(entries, start=1)]
    check_items(items, where, encoding)
    for n, item in enumerate(items, start=1):
        _check_truth(item, f"{where}, item {n}")
    return items


def _folder_files(root: Path) -> list[Path]:
    """Every image and video under ``root``, linked subfolders included, each real file once.

    Why follow links: people link a camera folder or a mounted drive into a dataset folder, and a
    folder left out without a word is an answer missing from every score. The folders themselves
    are walked first, then the linked ones, each real folder once (a link back to a parent is no
    loop). A file reached twice keeps its own name, not the link's: adding a link never renames
    an item already answered. Hidden files and folders are left out.
    """
    found: dict[Path, Path] = {}
    seen: set[Path] = set()
    tops, links = [root], []
    while tops:
        for folder, subfolders, names in os.walk(tops.pop(0)):
            real = Path(folder).resolve()
            if real in seen:
                subfolders[:] = []
                continue
            seen.add(real)
            visible = sorted(d for d in subfolders if not d.startswith("."))
            links += [Path(folder) / d for d in visible if (Path(folder) / d).is_symlink()]
            subfolders[:] = [d for d in visible if not (Path(folder) / d).is_symlink()]
            for name in sorted(names, key=lambda n: ((Path(folder) / n).is_symlink(), n)):
                path = Path(folder) / name
                if not name.startswith(".") and _kind(path) and path.is_file():
                    found.setdefault(path.resolve(), path)
        if not tops:  # every real folder reached so far is walked: now the linked ones
            tops, links = links, []
    return sorted(found.values(), key=lambda p: p.relative_to(root).as_posix())


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def _decode(path: Path) -> tuple[str, str]:
    """The text of a list and the encoding it was read in.

    Spreadsheet programs save lists as UTF-8 (with or without a byte-order mark), UTF-16 (with one:
    Excel's "Unicode text") or Windows-1252 (Excel's "CSV" on Windows); Latin-1 differs from
    Windows-1252 only in control characters nobody types, so the bytes Windows-1252 leaves
    undefined are read as Latin-1.
    """
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "UTF-16"
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\0" in data:  # no text list holds NUL characters; UTF-16 holds one in every ASCII letter
        raise ValueError(
            f"{path} looks like UTF-16 without a byte-order mark, which cannot be read reliably: save it "
            "again as 'CSV UTF-8' (or JSON in UTF-8)"
        )
    try:
        return data.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        pass
    return "".join(_cp1252_or_latin1(data)), "Windows-1252"


def _cp1252_or_latin1(data: bytes):
    for byte in data:
        try:
            yield bytes([byte]).decode("cp1252")
        except UnicodeDecodeError:
            yield chr(byte)


def _read_list(path: Path, label: str) -> tuple[list[Any], str, str]:
    if not path.is_file():
        raise FileNotFoundError(f"No dataset list at {path}")
    text, encoding = _decode(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=_delimiter(text, path)))
        # An empty cell means "not given"; the CSV module reads it as "".
        return [{k: v for k, v in row.items() if v not in ("", None)} for row in rows], label, encoding
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path.name} is not valid JSON ({err})") from None
    if is_coco(data):  # a COCO instances file (CVAT, Label Studio, Roboflow): see dataset/coco.py
        return (*coco_entries(data, path.name, label, path.parent), encoding)
    if isinstance(data, Mapping) and isinstance(data.get("items"), list):
        top = data.get("label", label)
        if top is None or not str(top).strip():
            raise ValueError(f"{path.name}: the top-level 'label' must be a non-empty text, got {top!r}")
        data, label = data["items"], str(top)
    if isinstance(data, list):
        return [{"file": e} if isinstance(e, str) else e for e in data], label, encoding
    raise ValueError(
        f'{path.name} should hold a list of items, or {{"items": [...]}}, got {type(data).__name__}'
    )


def _delimiter(text: str, path: Path) -> str:
    """The separator of a CSV list: the one that splits its header into the most names, one of them ``file``.

    Why the header: its names are known (``FIELDS``), so it tells commas, tabs and semicolons apart
    where a guess from the rows would not (a file name may hold ";" or ","). An unknown name (a
    typo) is then refused by name for each item, with the fields an item has.
    """
    header = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    split = {d: [n.strip() for n in next(csv.reader([header], delimiter=d), [])] for d in DELIMITERS}
    found = [d for d, names in split.items() if "file" in names]
    if found:
        return max(found, key=lambda d: len(split[d]))
    raise ValueError(
        f"{path.name}: its first line {header[:80]!r} is not a header with a 'file' column, separated by "
        f"commas, tabs or semicolons. Put the column names on the first line ({', '.join(FIELDS)}; "
        "e.g. 'file,count'), and save the list as 'CSV UTF-8'."
    )


def normalise_key(key: str) -> str:
    """One spelling per file: ``./a.png`` and ``sub/../a.png`` are ``a.png``; backslashes are slashes."""
    return posixpath.normpath(str(key).replace("\\", "/"))


def _item(entry: Any, root: Path, label: str, where: str) -> DatasetItem:
    if not isinstance(entry, Mapping) or not entry.get("file"):
        raise ValueError(f"{where}: every item needs a 'file', got {entry!r}")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; an item has {', '.join(FIELDS)}")
    key = normalise_key(entry["file"])
    where = f"{where} ({key})"
    path = root / key
    kind = _kind(path)
    if kind is None:
        raise ValueError(f"{where}: not an image or video file by its suffix ({path.suffix or 'none'})")
    if "label" in entry and (entry["label"] is None or not str(entry["label"]).strip()):
        raise ValueError(f"{where}: label must be a non-empty text (what to count), got {entry['label']!r}")
    count = _count(entry.get("count"), where)
    points = _points(entry["points"], where) if "points" in entry else None
    masks = masks_of_points(entry["points"], where) if "points" in entry else None
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
    if derived == 0 and count is None:
        source = "points list" if points is not None else "ground-truth file lists"
        warnings.warn(
            f"{where}: its {source} nothing and it gives no count. If there is nothing to count, say so "
            'with "count": 0; if there is, its ground truth is missing.',
            stacklevel=4,
        )
    return DatasetItem(
        key=key,
        path=path,
        kind=kind,
        label=str(entry.get("label", label)),
        prompt=str(entry["prompt"]) if entry.get("prompt") else None,
        count=count if count is not None else derived,
        points=points,
        truth=truth,
        masks=masks,
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


def _check_truth(item: DatasetItem, where: str) -> None:
    """Points outside the picture are refused (swapped x and y, or another scale); no truth is warned of."""
    if item.points is not None:
        width, height = image_size(item.path)  # the header only; upright, as the model sees it
        check_mask_sizes(item.masks, (width, height), f"{where} ({item.key})")
        found = next((p for p in item.points if not (0 <= p.x <= width and 0 <= p.y <= height)), None)
    elif item.truth is not None:
        truth = load_ground_truth(item.truth)
        width, height = truth.width, truth.height
        found = next((p for p in truth.points if not (0 <= p.x <= width and 0 <= p.y <= height)), None)
    else:
        return
    if found is not None:
        at = f"at {found.time:g} s " if found.time is not None else ""
        raise ValueError(
            f"{where} ({item.key}): true point {found.id} {at}at ({found.x:g}, {found.y:g}) lies outside the "
            f"{width}x{height} picture. Points are pixels from the top-left corner: are x and y swapped, or "
            "in another scale (0-1, 0-100, 0-1000)? Fix the ground truth."
        )


def check_items(items: list[DatasetItem], where: str, encoding: str | None = None) -> None:
    """Every file exists, and each is listed once (whatever its spelling)."""
    missing = [item.key for item in items if not item.path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        hint = (
            f" The list is not UTF-8, so it was read as {encoding}: if the names look wrong, save it as "
            "'CSV UTF-8'."
            if encoding == "Windows-1252"
            else ""
        )
        raise FileNotFoundError(
            f"{where}: {len(missing)} file(s) not found: {shown}. Check the paths in the list.{hint}"
        )
    seen: dict[Path, str] = {}
    for item in items:
        real = item.path.resolve()
        if real in seen:
            also = "" if seen[real] == item.key else f" (as {seen[real]} and as {item.key})"
            raise ValueError(f"{where}: {item.key} is listed twice{also}; list each file once")
        seen[real] = item.key


# ---------------------------------------------------------------------------------------------
# What a file held when it was answered


def file_identity(path: Path) -> dict[str, Any]:
    """Size, modification time and sha256 of a file: what tells that it was replaced."""
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(path)}


def same_file(path: Path, identity: Mapping[str, Any] | None) -> bool:
    """Does ``path`` still hold what ``identity`` recorded? Unknown (older results): assumed so.

    Size and time decide when they agree or the size differs; a copy with a new time but the same
    bytes (another folder, a restored backup) is the same file, which the hash tells.
    """
    if not identity:
        return True
    try:
        stat = path.stat()
    except OSError:
        return False
    if stat.st_size != identity.get("bytes"):
        return False
    if stat.st_mtime_ns == identity.get("mtime_ns"):
        return True
    return file_sha256(path) == identity.get("sha256")


def check_unchanged(item: DatasetItem, identity: Mapping[str, Any] | None, use: str) -> None:
    """Refuse to ``use`` ("drawn", "scored") an answer about a file that has changed since it was asked."""
    if not same_file(item.path, identity):
        raise ValueError(
            f"{item.key} changed since it was answered: its answer is about another file, so it cannot be "
            f"{use}. Run run_dataset again (it asks changed items again)."
        )
