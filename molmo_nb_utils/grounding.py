"""Read and write Molmo2's grounding answers: ``<points>`` and ``<tracks>`` tags.

Molmo2 answers pointing, counting and tracking prompts with tags such as::

    <points coords="1 1 308 305 2 752 377">curb ramp</points>
    <tracks coords="0.0 1 635 522;0.5 1 606 490 2 511 124">player</tracks>

``coords`` holds groups separated by ``;`` (older output used tabs; ``,`` and ``:`` are accepted
too). A group is ``PREFIX ID X Y [ID X Y ...]``. PREFIX is a 1-based image index ("2") or a video
time in seconds with one decimal ("2.5"). ID is an integer >= 1: a running counter when pointing
or counting, a persistent object id in tracks. X and Y are on a 0..1000 scale of the width and
height. An ``alt="..."`` attribute may come first, text may surround the tags, and an answer may
hold several tags or none ("There are none.").

The count of an answer is the number of distinct point ids (``count_points``). In a well-formed
counting answer the ids run 1..N and the text says "Counting the <points ...>label</points> shows a
total of N." (or "There are N ...", "There are none."), so id, text and count agree; when they do
not, for instance when a point was skipped as unreadable and the ids jump from 2 to 4, we count the
distinct ids that were read, never the last id. (03_pointing states this rule for the lessons.)

Model text is never trusted: the parsers skip what they cannot read (cut-off tags, junk, ids
below 1, coordinates beyond 1000, image indices with no image), keep the rest, and, given a
``skipped`` list, say why. Bad *arguments* (sizes, fps, file names) are programming errors and
raise ``ValueError``.

``parse_tracks`` reads only ``<tracks>``: a video pointing answer is a ``<points>`` tag with
time prefixes whose ids are a running counter, not object ids, so it is read with
``parse_points(text, size, video=True)`` instead of being passed off as tracks.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.paths import atomic_path


@dataclass(frozen=True)
class Point:
    """One point in pixels, on 1-based image ``image`` or at video time ``time`` (seconds)."""

    id: int  # running point id (pointing/counting) or persistent object id (tracks)
    x: float  # pixels
    y: float  # pixels
    image: int | None = None  # 1-based image index, for images
    time: float | None = None  # seconds, for video


Size = tuple[float, float]
RECORD_FIELDS = ["time", "frame", "id", "x", "y", "image"]

_TAG = re.compile(r"<(points?|tracks)\b", re.IGNORECASE)
_COORDS = re.compile(r"\bcoords\s*=\s*", re.IGNORECASE)
_GROUP_SEPARATOR = re.compile(r"[;,:\t\r\n]")
# Bounded digit counts keep int()/float() cheap on junk such as a 100 000-digit "number".
_INT = re.compile(r"\d{1,9}")
_NUMBER = re.compile(r"\d{1,9}(?:\.\d{1,9})?")


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def one_size(size: Any) -> Size:
    """(width, height) of a picture: given as a pair of positive numbers or a PIL image; else a ValueError."""
    if isinstance(getattr(size, "size", None), tuple):  # a PIL image
        size = size.size
    try:
        width, height = size
    except (TypeError, ValueError):
        raise ValueError(f"a size must be (width, height) or a PIL image, got {size!r}") from None
    for value in (width, height):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
            raise ValueError(f"a size must be (width, height) in pixels > 0, got {size!r}")
    return width, height


def _sizes(sizes: Any) -> tuple[list[Size], bool]:
    """The sizes as a list, and whether a list (several images) was given."""
    if isinstance(getattr(sizes, "size", None), tuple):
        return [one_size(sizes)], False
    try:
        items = list(sizes)
    except TypeError:
        raise ValueError(
            f"sizes must be (width, height), a PIL image or a list of them, got {sizes!r}"
        ) from None
    if len(items) == 2 and all(isinstance(v, numbers.Real) for v in items):
        return [one_size(items)], False
    if not items:
        raise ValueError("sizes is empty: give (width, height) or one size per image")
    return [one_size(item) for item in items], True


def _groups(text: str, tags: set[str], note: Callable[[str], None]) -> Iterator[str]:
    """The coordinate groups of the wanted tags, in the order written."""
    for match in _TAG.finditer(text):
        name = match.group(1).lower()
        if name not in tags:
            continue
        end = text.find("<", match.end())  # segments end at the next tag: total work stays linear
        segment = text[match.end() : len(text) if end < 0 else end]
        coords = _COORDS.search(segment)
        if coords is None:
            note(f"a <{name}> tag without coords")
            continue
        start = coords.end()
        quote = segment[start : start + 1] if segment[start : start + 1] in ('"', "'") else ""
        start += len(quote)
        stops = [i for i in (segment.find(c, start) for c in ">" + quote) if i >= 0]
        value = segment[start : min(stops)] if stops else segment[start:]
        if not stops:  # cut off: the last number may be cut off too ("15" of "154")
            i = len(value)
            while i and not (value[i - 1].isspace() or value[i - 1] in ";,:"):
                i -= 1
            if i < len(value):
                note(f"cut-off tag: ignored its last number {_short(value[i:])!r}, which may be incomplete")
                value = value[:i]
        yield from (group for group in _GROUP_SEPARATOR.split(value) if group.strip())


def _place(prefix: str, sizes: list[Size], video: bool | None) -> tuple[int | None, float | None, Size] | str:
    """(image, time, size) for a group prefix, or why it cannot be placed."""
    if video if video is not None else "." in prefix:
        if len(sizes) > 1:
            return f"time {prefix}: a timestamp needs one video size, but {len(sizes)} image sizes were given"
        return None, float(prefix), sizes[0]
    if "." in prefix:
        return f"image {prefix}: not an image index (pass video=True to read timestamps)"
    index, count = int(prefix), len(sizes)
    if index < 1:
        return f"image {index}: image indices start at 1"
    if index > count:
        return f"image {index}: only {count} image{' was' if count == 1 else 's were'} given"
    return index, None, sizes[index - 1]


def _parse(text: str, sizes: list[Size], tags: set[str], video: bool | None, skipped: list[str] | None):
    note = skipped.append if skipped is not None else (lambda reason: None)
    points: list[Point] = []
    for group in _groups(text, tags, note):
        prefix, *rest = group.split()
        if not _NUMBER.fullmatch(prefix):
            note(f"group {_short(group)!r}: {_short(prefix)!r} is neither an image index nor a time")
            continue
        place = _place(prefix, sizes, video)
        for k in range(0, len(rest) - len(rest) % 3, 3):
            pid, xs, ys = rest[k : k + 3]
            where = f"group {prefix}, point {_short(pid)}"
            if not _INT.fullmatch(pid) or int(pid) < 1:
                note(f"group {prefix}: id {_short(pid)!r} is not an integer >= 1")
            elif not (_NUMBER.fullmatch(xs) and _NUMBER.fullmatch(ys)):
                note(f"{where}: coordinates {_short(xs)!r} {_short(ys)!r} are not numbers")
            elif float(xs) > 1000 or float(ys) > 1000:
                note(f"{where}: coordinates {xs} {ys} are beyond the 0..1000 scale")
            elif isinstance(place, str):
                note(f"{place} (point {pid})")
            else:
                image, time, (width, height) = place
                x, y = float(xs) / 1000 * width, float(ys) / 1000 * height
                points.append(Point(int(pid), x, y, image, time))
        if len(rest) % 3:
            note(f"group {_short(group)!r}: {len(rest) % 3} number(s) left over, not a whole 'id x y' point")
    return points


def parse_points(
    text: str, sizes: Any, *, video: bool | None = None, skipped: list[str] | None = None
) -> list[Point]:
    """Points of the ``<points>``/``<point>`` tags in ``text``, in pixels, in the order written.

    ``sizes`` is ``(width, height)`` (or a PIL image) for one image or a video, or a list of them
    for several images. Prefixes with a "." are times, integers are image indices;
    ``video=True``/``False`` forces one reading. Never raises on model text.
    """
    size_list, _ = _sizes(sizes)
    if video and len(size_list) > 1:
        raise ValueError(f"video=True needs one (width, height) for the video, got {len(size_list)} sizes")
    return _parse(text, size_list, {"point", "points"}, video, skipped)


def parse_tracks(text: str, size: Any, *, skipped: list[str] | None = None) -> list[Point]:
    """Points of the ``<tracks>`` tags: every prefix is a time in seconds, ids are object ids."""
    size_list, several = _sizes(size)
    if several:
        raise ValueError(
            f"parse_tracks needs one (width, height) for the video, got a list of {len(size_list)}"
        )
    return _parse(text, size_list, {"tracks"}, True, skipped)


def count_points(points: Iterable[Point]) -> int:
    """The count of a pointing answer: the number of distinct ids among ``points``.

    Not the last id: ids 1, 2, 4 (point 3 skipped as unreadable) count 3. In a well-formed answer the
    ids run 1..N, so both agree. Points repeated under one id (an object pointed at in several
    frames) count once.
    """
    return len({p.id for p in points})


def _group(points: Iterable[Point], key: Callable[[Point], Any]) -> dict[Any, list[Point]]:
    groups: dict[Any, list[Point]] = {}
    for p in points:
        if key(p) is not None:
            groups.setdefault(key(p), []).append(p)
    return dict(sorted(groups.items()))


def group_by_image(points: Iterable[Point]) -> dict[int, list[Point]]:
    """Points per 1-based image index, indices ascending (points without an image are left out)."""
    return _group(points, lambda p: p.image)


def group_by_time(points: Iterable[Point]) -> dict[float, list[Point]]:
    """Points per video time, times ascending (points without a time are left out)."""
    return _group(points, lambda p: p.time)


def group_by_id(points: Iterable[Point]) -> dict[int, list[Point]]:
    """Points per id, ids ascending, each list sorted by time: for tracks, the trajectories."""
    groups = _group(points, lambda p: p.id)
    return {
        pid: sorted(group, key=lambda p: (p.time is None, p.time or 0.0)) for pid, group in groups.items()
    }


def time_to_frame(time: float, fps: float, num_frames: int | None = None) -> int:
    """Index of the video frame that starts nearest to ``time``: ``round(time * fps)``, clamped.

    For the points of an answer use ``FramePlan.frame_at`` instead (``answer.video.plan``): Molmo2
    writes the *sample* times of its prompt, and the frame shown at a sample time is the one on screen
    then (at 29.97 fps, 0.5 s shows frame 14, where this gives 15). This is for a truth file's own
    frame times (``i / fps``), with no frames shown.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}; read it from the video's metadata")
    if not time >= 0:
        raise ValueError(f"time must be >= 0 seconds, got {time!r}")
    frame = int(round(time * fps))
    if num_frames is not None:
        frame = min(frame, positive_int(num_frames, "num_frames") - 1)
    return frame


def nearest_index(time: float, timestamps: Iterable[float]) -> int:
    """Index of the timestamp nearest to ``time`` (the first on a tie): the rule under ``FramePlan.position``."""
    values = [float(t) for t in timestamps]
    if not values:
        raise ValueError("timestamps is empty: pass the times of the sampled frames")
    return min(range(len(values)), key=lambda i: abs(values[i] - time))


def snap_times(points: Iterable[Point], timestamps: Iterable[float]) -> list[Point]:
    """Replace each point's time by the nearest of ``timestamps`` (the frames the model was shown).

    Molmo2 sees frame times written with one decimal, so at 8 fps the frame at 0.25 s reads "0.2".
    Snapping to the sampled times recovers the exact frame; points without a time are kept as they are.
    """
    times = [float(t) for t in timestamps]
    return [p if p.time is None else replace(p, time=times[nearest_index(p.time, times)]) for p in points]


def on_scale(p: Point, width: float, height: float) -> tuple[int, int]:
    """A point's (x, y) on Molmo2's 0..1000 scale, rounded and clipped as ``format_points`` writes them."""
    return min(max(round(p.x / width * 1000), 0), 1000), min(max(round(p.y / height * 1000), 0), 1000)


def format_points(points: Iterable[Point], sizes: Any, label: str = "", tag: str = "points") -> str:
    """Write points in Molmo2's grammar, e.g. for worked examples; consecutive equal prefixes share a group."""
    if tag not in ("points", "tracks"):
        raise ValueError(f"tag must be 'points' or 'tracks', got {tag!r}")
    size_list, _ = _sizes(sizes)
    groups: list[tuple[str, list[str]]] = []
    for p in points:
        if p.id < 1:
            raise ValueError(f"{p}: ids start at 1")
        if p.time is not None and len(size_list) == 1:
            prefix, (width, height) = f"{p.time:.1f}", size_list[0]
        elif p.time is None and p.image is not None and 1 <= p.image <= len(size_list):
            prefix, (width, height) = str(p.image), size_list[p.image - 1]
        else:
            raise ValueError(
                f"{p}: needs a time (with one size) or an image index within the {len(size_list)} sizes"
            )
        x, y = on_scale(p, width, height)
        if groups and groups[-1][0] == prefix:
            groups[-1][1].append(f"{p.id} {x:03d} {y:03d}")
        else:
            groups.append((prefix, [f"{p.id} {x:03d} {y:03d}"]))
    coords = ";".join(" ".join([prefix, *triples]) for prefix, triples in groups)
    return f'<{tag} coords="{coords}">{label}</{tag}>'


def points_to_records(
    points: Iterable[Point], fps: float | None = None, *, video: Any = None
) -> list[dict[str, Any]]:
    """Plain dicts (time, frame, id, x, y, image) for CSV/JSON.

    ``frame`` is the video frame a point's time names: exact with ``video``, the ``VideoFrames``
    the model was shown (``answer.video``); ``round(time * fps)`` with only ``fps``; else empty.
    """

    def frame(p: Point) -> int | None:
        if p.time is None:
            return None
        if video is not None:
            return video.frame_at(p.time)
        return None if fps is None else time_to_frame(p.time, fps)

    return [
        {"time": p.time, "frame": frame(p), "id": p.id, "x": p.x, "y": p.y, "image": p.image} for p in points
    ]


def _optional(value: Any, kind: type) -> Any:
    return None if value is None or value == "" else kind(value)


def points_from_records(records: Iterable[dict[str, Any]]) -> list[Point]:
    """Points from records of ``points_to_records`` (values may be strings, as read from CSV)."""
    points = []
    for i, record in enumerate(records):
        try:
            point = Point(
                int(record["id"]),
                float(record["x"]),
                float(record["y"]),
                _optional(record.get("image"), int),
                _optional(record.get("time"), float),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(
                f"record {i} is not a point with id, x, y[, image, time]: {record!r} ({error})"
            ) from None
        points.append(point)
    return points


def _suffix(path: Path, verb: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"{verb} handles .csv or .json files, not {path.name!r}: change the suffix")
    return suffix


def save_points(
    points: Iterable[Point], path: str | os.PathLike, fps: float | None = None, *, video: Any = None
) -> Path:
    """Write points to a .csv or .json file (by suffix), atomically, so no half-written file remains.

    ``video`` (the ``VideoFrames`` shown) or ``fps`` fills the frame column, see ``points_to_records``.
    """
    path = Path(path)
    suffix = _suffix(path, "save_points")
    records = points_to_records(points, fps, video=video)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as file:
        if suffix == ".json":
            json.dump(records, file, indent=1)
        else:
            writer = csv.DictWriter(file, fieldnames=RECORD_FIELDS)
            writer.writeheader()
            writer.writerows(records)
    return path


def load_points(path: str | os.PathLike) -> list[Point]:
    """Read points written by ``save_points`` (.csv or .json)."""
    path = Path(path)
    suffix = _suffix(path, "load_points")
    with open(path, newline="", encoding="utf-8") as file:
        if suffix == ".csv":
            return points_from_records(csv.DictReader(file))
        records = json.load(file)
    if not isinstance(records, list):
        raise ValueError(f"{path} should hold a JSON list of point records, got {type(records).__name__}")
    return points_from_records(records)
