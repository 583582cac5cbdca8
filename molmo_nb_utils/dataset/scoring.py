"""Scores of a run against the ground truth: points matched one to one, counts, track identities.

Why here: a score is only as good as its matching. Predicted points are paired with true points one
to one by optimal (Hungarian) assignment, per image and, for videos, per frame shown, and a pair
counts by one of two rules, named in every score:

* truth with object masks: Molmo2's own rule (``evaluation.MASK_RULE``, allenai/molmo2
  ``PointingEval``): paired on distance, a pair counts when the point lies inside the object's
  mask. These scores are computed as the paper computes its own (on your data, not the paper's);
* truth with points only: ours (``evaluation.DISTANCE_RULE``), the hit rule of 04_video_pointing:
  a pair counts within 5% of the image diagonal (``distance_threshold``, ``DIAGONAL_FRACTION``).

The count of an answer is its number of distinct point ids, the count rule of 03_pointing
(``grounding.count_points``); tracks get HOTA, DetA and AssA from TrackEval.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from molmo_nb_utils.dataset.items import DatasetItem, check_unchanged
from molmo_nb_utils.dataset.results import ItemResult, latest
from molmo_nb_utils.evaluation import (
    DIAGONAL_FRACTION,
    RULES,
    CountScore,
    GroundTruth,
    PointScore,
    TrackScore,
    count_scores,
    distance_threshold,
    load_ground_truth,
    mask_point_scores,
    point_scores,
    rule_name,
    score_points,
    sum_scores,
    video_point_scores,
)


@dataclass(frozen=True)
class ItemScore:
    """How one item's answer compares with its ground truth (None where there is nothing to compare)."""

    key: str
    kind: str
    true_count: int | None
    predicted_count: int | None  # None if the item failed
    points: PointScore | None = None  # images: the image; videos: pooled over the frames shown
    tracks: TrackScore | None = None  # videos answered with <tracks> and with a truth file
    threshold_px: float | None = None  # the distance rule's: a predicted point this close can match
    error: str | None = None  # the run's error, if the item failed

    @property
    def rule(self) -> str | None:
        """How its points were judged: ``MASK_RULE`` (Molmo2's), ``DISTANCE_RULE`` (ours); None: no points."""
        return self.points.rule if self.points is not None else None

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
    or over the frames shown of the videos (a micro average); ``mean_image_precision``,
    ``mean_image_recall`` and ``mean_image_f1`` average each image's instead, as the Molmo2 paper
    does. Each score's ``rule`` says how points were judged (``"mixed"`` when the images used both).
    ``id_consistency`` is the share of true objects followed by one id, and ``hota``, ``deta`` and
    ``assa`` TrackEval's scores, each averaged over the videos answered with tracks.
    """

    items: tuple[ItemScore, ...]
    counts: CountScore | None
    image_points: PointScore | None
    video_points: PointScore | None
    mean_image_f1: float | None
    id_consistency: float | None
    not_run: tuple[str, ...] = ()
    fraction: float = DIAGONAL_FRACTION
    mean_image_precision: float | None = None
    mean_image_recall: float | None = None
    hota: float | None = None
    deta: float | None = None
    assa: float | None = None

    @property
    def failed(self) -> tuple[ItemScore, ...]:
        return tuple(s for s in self.items if s.error is not None)

    @property
    def rule(self) -> str | None:
        """How the images' points were judged (``MASK_RULE``, ``DISTANCE_RULE`` or "mixed"); None: no images.

        Print it beside ``mean_image_f1``: only in-mask scores compare with the paper's.
        """
        return self.image_points.rule if self.image_points is not None else None

    def __str__(self) -> str:
        scored = len(self.items) - len(self.failed)
        lines = [f"{scored} item(s) scored, {len(self.failed)} failed, {len(self.not_run)} not run yet"]
        if self.counts:
            lines.append(f"counting: {self.counts}")
        if self.image_points:
            images = sum(s.kind == "image" and s.points is not None for s in self.items)
            lines.append(
                f"points in {images} image(s), {rule_name(self.image_points.rule, self.fraction)}: {self.image_points}"
            )
            lines.append(
                f"  mean per image: precision {self.mean_image_precision:.2f}, recall "
                f"{self.mean_image_recall:.2f}, F1 {self.mean_image_f1:.2f}"
            )
        if self.video_points:
            videos = sum(s.kind == "video" and s.points is not None for s in self.items)
            lines.append(
                f"points in {videos} video(s), per frame shown, {rule_name(self.video_points.rule, self.fraction)}: "
                f"{self.video_points}"
            )
        if self.id_consistency is not None:
            tracked = [s.tracks for s in self.items if s.tracks is not None]
            rules = {t.rule for t in tracked}
            lines.append(
                f"tracks: {self.id_consistency:.0%} of objects followed by one id; HOTA {self.hota:.3f}, "
                f"DetA {self.deta:.3f}, AssA {self.assa:.3f} (TrackEval, "
                f"{rule_name(rules.pop() if len(rules) == 1 else 'mixed', self.fraction)}; {len(tracked)} video(s) with tracks)"
            )
        return "\n".join(lines)


def _score_item(item: DatasetItem, result: ItemResult, fraction: float, rule: str) -> ItemScore:
    if result.error is not None:
        return ItemScore(item.key, item.kind, item.count, None, error=result.error)
    if result.size is None:
        raise ValueError(f"the result of {item.key} has no image size: was it written by run_dataset?")
    check_unchanged(item, result.file, "scored")
    threshold = distance_threshold(*result.size, fraction=fraction)
    predicted = [*result.points, *result.tracks]
    points = tracks = None
    masks = item.masks if rule == "auto" else None
    if item.kind == "image" and item.points is not None:
        if masks is not None:
            points = mask_point_scores(predicted, item.points, masks, result.size)
        else:
            points = point_scores(predicted, item.points, threshold)
    elif item.kind == "video" and item.truth is not None:
        truth = load_ground_truth(item.truth)
        if rule == "distance":
            truth = replace(truth, masks={})
        _check_size(item, truth, result.size)
        points = video_point_scores(predicted, truth, result.plan, radius=threshold)
        if result.tracks:
            tracks = score_points(result.tracks, truth, result.plan, radius=threshold)
    return ItemScore(item.key, item.kind, item.count, result.count, points, tracks, threshold)


def _check_size(item: DatasetItem, truth: GroundTruth, size: tuple[int, int]) -> None:
    if (truth.width, truth.height) != tuple(size):
        raise ValueError(
            f"{item.key}: its truth file is for a {truth.width}x{truth.height} video, but the video is "
            f"{size[0]}x{size[1]}: is it the right truth file?"
        )


RULE_CHOICES = ("auto", "distance")


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_results(
    items: Sequence[DatasetItem],
    results: Iterable[ItemResult],
    *,
    fraction: float = DIAGONAL_FRACTION,
    rule: str = "auto",
) -> DatasetScore:
    """Score each item's result against its ground truth, and pool the scores.

    ``rule="auto"``: an item whose truth has masks is scored by Molmo2's rule (paired on
    distance, a hit when the point is inside the object's mask: ``evaluation.MASK_RULE``), one
    without by ours: a pair within ``fraction`` of the image diagonal (``DISTANCE_RULE``).
    ``rule="distance"`` uses ours everywhere, masks or not, to compare the two on the same
    answers. Each true point is paired at most once. Failed items are listed, not scored; items
    without a result are counted as not run.
    """
    if rule not in RULE_CHOICES:
        raise ValueError(
            f"rule must be 'auto' (Molmo2's in-mask rule where the truth has masks) or 'distance', got {rule!r}"
        )
    by_key = latest(results)
    scores, not_run = [], []
    for item in items:
        if item.key in by_key:
            scores.append(_score_item(item, by_key[item.key], fraction, rule))
        else:
            not_run.append(item.key)
    ok = [s for s in scores if s.error is None]
    counted = [s for s in ok if s.true_count is not None]
    images = [s.points for s in ok if s.kind == "image" and s.points is not None]
    videos = [s.points for s in ok if s.kind == "video" and s.points is not None]
    tracks = [s.tracks for s in ok if s.tracks is not None]
    return DatasetScore(
        items=tuple(scores),
        counts=count_scores([s.predicted_count for s in counted], [s.true_count for s in counted])
        if counted
        else None,
        image_points=sum_scores(images) if images else None,
        video_points=sum_scores(videos) if videos else None,
        mean_image_f1=_mean([p.f1 for p in images]),
        id_consistency=_mean([t.id_consistency for t in tracks]),
        not_run=tuple(not_run),
        fraction=fraction,
        mean_image_precision=_mean([p.precision for p in images]),
        mean_image_recall=_mean([p.recall for p in images]),
        hota=_mean([t.hota for t in tracks]),
        deta=_mean([t.deta for t in tracks]),
        assa=_mean([t.assa for t in tracks]),
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

    scores = list(scores)
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
    return "\n".join([*lines, *_rule_lines(scores), *errors])


def _rule_lines(scores: list[ItemScore]) -> list[str]:
    """Under the table: which rule judged whose points, and the tracks' HOTA."""
    lines = []
    for rule in RULES:
        keys = [s.key for s in scores if s.rule == rule]
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            lines.append(f"points {rule_name(rule)}: {shown}")
    lines += [
        f"tracks of {s.key}: HOTA {s.tracks.hota:.2f}, DetA {s.tracks.deta:.2f}, AssA {s.tracks.assa:.2f} "
        f"(TrackEval; similarity {s.tracks.rule})"
        for s in scores
        if s.tracks is not None
    ]
    return lines
