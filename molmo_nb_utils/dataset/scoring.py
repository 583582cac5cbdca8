"""Scores of a run against the ground truth: points matched one to one, counts, track identities.

Why here: a score is only as good as its matching. Predicted points are paired with true points one
to one (``evaluation.match_points``, optimal Hungarian matching) within 5% of the image diagonal:
the hit rule of 04_video_pointing (``evaluation.distance_threshold``, ``DIAGONAL_FRACTION``); per
image and, for videos, per frame shown. The count of an answer is its number of distinct point ids,
the count rule of 03_pointing (``grounding.count_points``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from molmo_nb_utils.dataset.items import DatasetItem, check_unchanged
from molmo_nb_utils.dataset.results import ItemResult, latest
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
from molmo_nb_utils.grounding import group_by_time


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


def _score_item(item: DatasetItem, result: ItemResult, fraction: float) -> ItemScore:
    if result.error is not None:
        return ItemScore(item.key, item.kind, item.count, None, error=result.error)
    if result.size is None:
        raise ValueError(f"the result of {item.key} has no image size: was it written by run_dataset?")
    check_unchanged(item, result.file, "scored")
    threshold = distance_threshold(*result.size, fraction=fraction)
    predicted = [*result.points, *result.tracks]
    points = tracks = None
    if item.kind == "image" and item.points is not None:
        points = point_scores(predicted, item.points, threshold)
    elif item.kind == "video" and item.truth is not None:
        truth = load_ground_truth(item.truth)
        _check_size(item, truth, result.size)
        plan = result.plan
        truth_at = group_by_time(truth.at_plan(plan))
        predicted_at = group_by_time(predicted)
        points = sum_scores(
            point_scores(predicted_at.get(t, []), truth_at.get(t, []), threshold)
            for t in dict.fromkeys(plan.times)  # a repeated time is one prompt entry
        )
        if result.tracks:
            tracks = score_points(result.tracks, truth, plan, radius=threshold)
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
    by_key = latest(results)
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
