"""``score_benchmark``: a benchmark's answers scored by AllenAI's rules, under AllenAI's metric names.

The rules, read in allenai/molmo2 (``olmo/eval/evaluators.py``, ``olmo/eval/inf_evaluator.py``):

* ``PointCountEval`` (countbench, pixmo_count): the predicted count is the **number of points** in
  the answer; the count the answer states ("shows a total of 4") is parsed and then overridden, and
  "There are none." has no point, so counts 0. ``correct``: count == truth; ``close``: within 1;
  ``valid``: the answer gave a count, which every answer does, so only a failed item is not valid.
* ``PointingEval`` (pixmo_points): predicted and true points paired by optimal assignment on
  distance; a pair is a hit when the predicted point, rounded to a pixel, is inside its true object's
  mask (``evaluation.mask_point_scores``, the package's rule). Precision, recall and F1 per image,
  averaged over the images; an image with no true object scores 1 if no point was given, else 0.
* ``PointBenchEval`` (point_bench): an item passes when the answer has at least one point and
  **every** point is inside the mask, the pixel being ``(int(x), int(y))``: truncated, not rounded,
  and outside the picture is outside. Each category's pass rate, and ``average``, their mean.

Points are read by the package's parser (``grounding.parse_points``), in the picture's own pixels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from molmo_nb_utils.benchmarks.specs import POINT_BENCH_CATEGORIES, benchmark
from molmo_nb_utils.dataset.items import DatasetItem
from molmo_nb_utils.dataset.results import ItemResult
from molmo_nb_utils.evaluation import mask_point_scores
from molmo_nb_utils.grounding import Point, parse_points
from molmo_nb_utils.media import image_size

__all__ = ["BenchmarkScore", "ItemOutcome", "score_benchmark"]


@dataclass(frozen=True)
class ItemOutcome:
    """One item's scores (0..1) by its benchmark's rule, and what they rest on."""

    key: str
    values: Mapping[str, float]  # metric -> this item's value ("correct": 1.0, "f1": 0.67, ...)
    category: str | None = None  # Point-Bench's
    predicted_count: int | None = None  # counting: the answer's number of points (None: no answer)
    true_count: int | None = None


@dataclass(frozen=True, eq=False)  # compared as a mapping: score == {"correct": 0.9, ..., "n": 50}
class BenchmarkScore(Mapping):
    """AllenAI's metrics of one benchmark (fractions 0..1) and ``n``, the items scored: a mapping, so
    ``score["correct"]`` and ``dict(score)`` work. ``rules`` says how each metric was computed;
    ``outcomes`` holds each item's; ``sampled``/``total``/``left_out`` where the items came from
    (when they came from ``load_benchmark``)."""

    name: str
    scores: Mapping[str, float]  # metric -> value, and "n"
    rules: Mapping[str, str]
    outcomes: tuple[ItemOutcome, ...] = ()  # each item's, in the items' order
    sampled: int | None = None  # items asked for (before those whose image is gone or changed were left out)
    total: int | None = None  # rows in the split
    left_out: int = 0
    categories: Mapping[str, int] = field(default_factory=dict)  # Point-Bench: items per category

    def __getitem__(self, key: str) -> float:
        return self.scores[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scores)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def n(self) -> int:
        return int(self.scores["n"])

    def of_items(self) -> str:
        """ "48 of 50 items" (with how many were left out and the split's size, when known)."""
        if self.sampled is None:
            return f"{self.n} items"
        out = f"{self.n} of {self.sampled} items"
        return out + (f", {self.left_out} left out (image gone or changed)" if self.left_out else "")

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.of_items()}"]
        for metric, rule in self.rules.items():
            value = self.scores[metric]
            shown = "-" if math.isnan(value) else f"{value:.1%}"
            n = self.categories.get(metric)
            extra = "" if n is None else f" ({n} item{'' if n == 1 else 's'})"
            lines.append(f"  {metric:10} {shown:>6}{extra}  rule: {rule}")
        return "\n".join(lines)


def _texts(items: Sequence[DatasetItem], answers: Sequence[Any]) -> list[str | None]:
    """Each item's answer text (None: the item failed), from texts, ``Answer``s or ``ItemResult``s."""
    answers = list(answers)
    if answers and all(isinstance(a, ItemResult) for a in answers):
        by_key = {r.key: r for r in answers}
        missing = [item.key for item in items if item.key not in by_key]
        if missing:
            raise ValueError(
                f"no result for {len(missing)} of {len(items)} items ({', '.join(missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}): run them first (run_dataset), or score the items answered"
            )
        return [by_key[item.key].answer for item in items]
    if len(answers) != len(items):
        raise ValueError(
            f"{len(answers)} answers for {len(items)} items: give one answer per item, in the items' order "
            "(texts, Answers, or the ItemResults of run_dataset)"
        )
    for k, a in enumerate(answers):
        if a is not None and not isinstance(a, str):
            raise TypeError(
                f"answer {k} is a {type(a).__name__}: give the answer's text, an Answer or an ItemResult"
            )
    return [None if a is None else str.__str__(a) for a in answers]


def _check(name: str, item: Any, need: str, ok: bool) -> None:
    if not isinstance(item, DatasetItem) or item.kind != "image" or not ok:
        what = getattr(item, "key", repr(item)[:60])
        raise ValueError(
            f"{what} is not a {name} item ({need}): score the items load_benchmark({name!r}) gave"
        )


def _count_outcome(item: DatasetItem, text: str | None) -> ItemOutcome:
    if text is None:
        return ItemOutcome(item.key, {"correct": 0.0, "close": 0.0, "valid": 0.0}, true_count=item.count)
    predicted = len(parse_points(text, (100, 100)))  # every point counts, as AllenAI's extract_points
    values = {
        "correct": float(predicted == item.count),
        "close": float(abs(predicted - item.count) <= 1),
        "valid": 1.0,
    }
    return ItemOutcome(item.key, values, predicted_count=predicted, true_count=item.count)


def _points(item: DatasetItem, text: str | None) -> tuple[list[Point], tuple[int, int]]:
    size = image_size(item.path)
    return (parse_points(text, size) if text else []), size


def _pointing_outcome(item: DatasetItem, text: str | None) -> ItemOutcome:
    predicted, size = _points(item, text)
    score = mask_point_scores(predicted, item.points, item.masks, size)
    return ItemOutcome(item.key, {"precision": score.precision, "recall": score.recall, "f1": score.f1})


def in_mask_truncated(pixels: np.ndarray, x: float, y: float) -> bool:
    """Point-Bench's pixel test: ``(int(x), int(y))`` inside the (H, W) mask; outside the picture is outside."""
    column, row = int(x), int(y)
    return 0 <= column < pixels.shape[1] and 0 <= row < pixels.shape[0] and bool(pixels[row, column])


def _point_bench_outcome(item: DatasetItem, text: str | None) -> ItemOutcome:
    predicted, size = _points(item, text)
    pixels = item.masks[0].decode(size) if item.masks else np.zeros(size[::-1], dtype=bool)
    passed = bool(predicted) and all(in_mask_truncated(pixels, p.x, p.y) for p in predicted)
    return ItemOutcome(item.key, {"pass": float(passed)}, category=item.label)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def score_benchmark(name: str, items: Sequence[DatasetItem], answers: Sequence[Any]) -> BenchmarkScore:
    """Score ``answers`` (the model's texts, ``Answer``s, or ``run_dataset``'s ``ItemResult``s; texts in
    the items' order) on benchmark ``name``'s ``items`` by AllenAI's rules (see this module).

    Returns AllenAI's metrics as fractions 0..1, plus ``n``: countbench and pixmo_count ``correct``,
    ``close``, ``valid``; pixmo_points ``precision``, ``recall``, ``f1``; point_bench the five
    categories and ``average`` (a category without items is NaN, and so is the average, with a warning).
    A failed item (no answer) counts as wrong and not valid.
    """
    spec = benchmark(name)
    items = list(items) if not isinstance(items, list) else items
    if not items:
        raise ValueError(f"no items to score: load them with load_benchmark({name!r})")
    texts = _texts(items, answers)
    if spec.evaluator == "PointCountEval":
        for item in items:
            _check(name, item, "an image with a true count", item.count is not None)
        outcomes = [_count_outcome(item, text) for item, text in zip(items, texts, strict=True)]
        values = {m: _mean([o.values[m] for o in outcomes]) for m in spec.metrics}
    elif spec.evaluator == "PointingEval":
        for item in items:
            ok = item.points is not None and item.masks is not None and len(item.masks) == len(item.points)
            _check(name, item, "an image with true points and one mask per point", ok)
        outcomes = [_pointing_outcome(item, text) for item, text in zip(items, texts, strict=True)]
        values = {m: _mean([o.values[m] for o in outcomes]) for m in spec.metrics}
    else:
        for item in items:
            _check(
                name,
                item,
                "an image whose label is a Point-Bench category",
                item.label in POINT_BENCH_CATEGORIES,
            )
        outcomes = [_point_bench_outcome(item, text) for item, text in zip(items, texts, strict=True)]
        by_category = {
            c: [o.values["pass"] for o in outcomes if o.category == c] for c in POINT_BENCH_CATEGORIES
        }
        values = {c: _mean(v) for c, v in by_category.items()}
        values["average"] = _mean(list(values.values()))  # AllenAI: the mean of the five categories
        empty = [c for c, v in by_category.items() if not v]
        if empty:
            warnings.warn(
                f"point_bench: no items of {', '.join(empty)}, so those categories and the average (the mean of "
                "all five) are NaN; take a larger sample to compare with the paper's average",
                UserWarning,
                stacklevel=2,
            )
    values["n"] = len(items)
    return BenchmarkScore(
        name=name,
        scores=values,
        rules=dict(spec.rules),
        outcomes=tuple(outcomes),
        sampled=getattr(items, "sampled", None),
        total=getattr(items, "total", None),
        left_out=len(getattr(items, "left_out", ())),
        categories={c: len(v) for c, v in by_category.items()} if spec.evaluator == "PointBenchEval" else {},
    )
