"""Targets: the exact text Molmo2 writes for a prompt, built from the ground truth.

With the grammar writer the lessons use (``grounding.format_points``) and the rules of AllenAI's
training code (``olmo/preprocessing/point_formatter.py`` in allenai/molmo2): coordinates on the
0..1000 scale written ``%03d``, points sorted by (x, y) after scaling and numbered 1, 2, ... in that
order; a pointing prompt is answered ``<points coords="1 1 x y 2 x y">label</points>``, a counting
prompt "Counting the <points ...>label</points> shows a total of N.", and nothing there "There are
none.". Training on any other spelling teaches the model a second grammar. The prompt of an item is
``dataset.item_prompt``'s (the one rule ``run_dataset`` asks with), and a video is trained on its
truth at the frames ``run_dataset`` shows for the same ``fps`` and ``max_frames``.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from molmo_nb_utils.dataset.items import item_prompt
from molmo_nb_utils.evaluation import load_ground_truth
from molmo_nb_utils.grounding import Point, format_points, on_scale
from molmo_nb_utils.media import DEFAULT_MEDIA, FramePlan, MediaSettings, load_image

__all__ = [
    "TrainingError",
    "TrainingExample",
    "is_counting_prompt",
    "split_items",
    "target_text",
    "tracks_text",
    "training_examples",
]

# A counting question, after AllenAI's detect_counting_question (its main patterns): Molmo2 answers those with
# "Counting the <points ...> shows a total of N." instead of the bare points.
_COUNTING = re.compile(r"\bhow ?many\b|\b(count|tally)\b|\b(total|number) of\b", re.IGNORECASE)
# A tracking prompt ("Track the coins."): a video item is trained on its tracks.
_TRACKING = re.compile(r"\btrack", re.IGNORECASE)


class TrainingError(ValueError):
    """Fine-tuning cannot start (or an adapter cannot load) as asked; the message says what to change."""


@dataclass(frozen=True)
class TrainingExample:
    """One training pair: the media, the prompt, and the answer Molmo2 should write.

    ``media`` says how it is shown (``MediaSettings``); a video carries ``frames``, the frames those
    settings show (``media.plan``): its target is the truth there, and ``encode_example`` shows exactly those.
    """

    key: str  # the item's key in the dataset
    kind: str  # "image" or "video"
    path: Path
    prompt: str
    target: str  # the answer in Molmo2's own words and grammar
    size: tuple[int, int]  # (width, height) of the image or video, which the coordinates are relative to
    frames: FramePlan | None = None  # a video's frames shown
    media: MediaSettings = DEFAULT_MEDIA  # how its media are shown (as run_dataset shows them)


def is_counting_prompt(prompt: str) -> bool:
    """Whether Molmo2 answers ``prompt`` with a count ("How many ...?", "Count the ...") or with points."""
    return bool(_COUNTING.search(prompt))


def target_text(points: Sequence[Point], size: tuple[float, float], label: str, *, counting: bool) -> str:
    """The answer Molmo2 writes for ``points`` (pixels on one image of ``size``) as AllenAI trains it.

    Points are sorted by their (x, y) on the 0..1000 scale (after rounding, so ties sort as the text reads)
    and numbered from 1; the given ids are not kept. No points: "There are none.".
    """
    width, height = size
    points = list(points)
    if not points:
        return "There are none."
    ordered = sorted(points, key=lambda p: on_scale(p, width, height))
    ordered = [replace(p, id=n, image=1, time=None) for n, p in enumerate(ordered, 1)]
    tag = format_points(ordered, (width, height), label=label.lower())
    return f"Counting the {tag} shows a total of {len(ordered)}." if counting else tag


def tracks_text(points: Sequence[Point], size: tuple[float, float], label: str) -> str:
    """The ``<tracks>`` answer for the true positions at the frames shown, as AllenAI trains it.

    Frame by frame in time order, each frame's points sorted by (x, y) on the 0..1000 scale; objects are
    numbered 1, 2, ... in the order they are first met that way, and each frame lists them by that number.
    Nothing to track: "No tracks available.".
    """
    width, height = size
    numbers: dict[int, int] = {}
    ordered: list[Point] = []
    for moment in sorted({p.time for p in points if p.time is not None}):
        frame = sorted((p for p in points if p.time == moment), key=lambda p: on_scale(p, width, height))
        for p in frame:
            numbers.setdefault(p.id, len(numbers) + 1)
        ordered += sorted((replace(p, id=numbers[p.id], image=None) for p in frame), key=lambda p: p.id)
    if not ordered:
        return "No tracks available."
    return format_points(ordered, (width, height), label=label.lower(), tag="tracks")


def training_examples(
    items: Sequence[Any],
    *,
    prompt: str | None = None,
    media: MediaSettings = DEFAULT_MEDIA,
) -> list[TrainingExample]:
    """One example per item with ground truth: its prompt and the answer Molmo2 should give.

    ``items`` are ``load_dataset``'s. The prompt is ``item_prompt(item, prompt)``, the rule
    ``run_dataset`` asks with. A counting prompt ("How many ...") gets the counting answer, any other
    the points. An image needs its true points (or a count of 0). A video needs its ground-truth file
    and a tracking prompt ("Track the coins."): its target is the tracks at the frames ``run_dataset``
    shows with the same ``media`` (``MediaSettings``), which every example carries. Items without these
    are left out with a warning that names them; none left raises ``TrainingError``.
    """
    items = list(items)
    if not items:
        raise TrainingError("no items to train on: pass load_dataset(...)'s items with points")
    examples, left_out = [], []
    for item in items:
        if not all(hasattr(item, field) for field in ("key", "kind", "path", "points", "count", "label")):
            raise TrainingError(f"{item!r} is not a dataset item: pass the items of load_dataset(...)")
        text = item_prompt(item, prompt)
        if item.kind == "video":
            if getattr(item, "truth", None) is None or not _TRACKING.search(text):
                left_out.append(item.key)
                continue
            shown = media.plan(item.path)  # what run_dataset shows with these settings
            target = tracks_text(load_ground_truth(item.truth).at_plan(shown), shown.size, item.label)
            examples.append(
                TrainingExample(item.key, item.kind, Path(item.path), text, target, shown.size, shown, media)
            )
            continue
        points = item.points if item.points is not None else () if item.count == 0 else None
        if points is None:
            left_out.append(item.key)
            continue
        size = load_image(item.path).size
        target = target_text(points, size, item.label, counting=is_counting_prompt(text))
        examples.append(
            TrainingExample(item.key, item.kind, Path(item.path), text, target, size, media=media)
        )
    if left_out:
        names = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        message = (
            f"{len(left_out)} item(s) have no true points to write an answer from (videos: a ground-truth "
            f"file and a tracking prompt, such as 'Track the {{label}}.', are needed): {names}"
        )
        if not examples:
            raise TrainingError(
                f"{message}. Nothing is left to train on: give images with 'points' (or 'count': 0) in the list."
            )
        warnings.warn(f"{message}; left out of training.", stacklevel=2)
    return examples


def split_items(items: Sequence[Any], *, validation: float = 0.25, seed: int = 0) -> tuple[list, list]:
    """(training, validation) items: a seeded shuffle of the items by key, ``validation`` of them held out.

    Splitting by item keeps every image on one side; the same keys and seed give the same split whatever
    the order of ``items``. At least one item goes to each side when there are two or more.
    """
    items = list(items)
    if not 0 <= validation < 1:
        raise ValueError(f"validation is the share of items held out, from 0 to below 1, got {validation!r}")
    keys = sorted(item.key for item in items)
    random.Random(seed).shuffle(keys)
    held = min(max(round(len(keys) * validation), 1 if validation > 0 else 0), max(len(keys) - 1, 0))
    held_out = set(keys[:held])
    return [i for i in items if i.key not in held_out], [i for i in items if i.key in held_out]
