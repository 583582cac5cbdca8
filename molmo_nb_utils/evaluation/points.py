"""Pointing scores of one image or frame: precision, recall and F1, added up over many."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from molmo_nb_utils.evaluation.matching import mask_matches, match_points
from molmo_nb_utils.evaluation.rules import DISTANCE_RULE, MASK_RULE, check_distance
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.masks.geometry import Mask

__all__ = ["PointScore", "mask_point_scores", "point_scores", "score_of", "sum_scores"]


def _ratio(part: int, whole: int, empty: float) -> float:
    return part / whole if whole else empty


@dataclass(frozen=True)
class PointScore:
    """Matched (tp), extra (fp) and missed (fn) points; add scores to pool images or frames.

    Where a ratio would divide by zero, the score follows Molmo2's pointing evaluation: 1.0 when
    nothing was predicted and nothing was there (a correct "there are none"), else 0.0.
    Adding pools the counts (micro average); the Molmo2 paper averages each image's F1 instead
    (``mean(s.f1 for s in scores)``).
    """

    tp: int = 0  # predicted points that found their true point (by ``rule``)
    fp: int = 0  # predicted points that found none
    fn: int = 0  # true points found by no prediction
    total_error_px: float = 0.0  # sum of the matched pairs' distances
    rule: str = DISTANCE_RULE  # MASK_RULE or DISTANCE_RULE; "mixed" for a sum over both

    @property
    def nothing_either_way(self) -> bool:
        return self.tp == self.fp == self.fn == 0

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp, float(self.nothing_either_way))

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn, float(self.nothing_either_way))

    @property
    def f1(self) -> float:
        # 2PR / (P + R) written with counts, so no rounding and no 0/0.
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, float(self.nothing_either_way))

    @property
    def mean_error_px(self) -> float | None:
        return self.total_error_px / self.tp if self.tp else None

    def __add__(self, other: PointScore) -> PointScore:
        if not isinstance(other, PointScore):
            return NotImplemented
        return PointScore(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.total_error_px + other.total_error_px,
            _pooled_rule(self, other),
        )

    def __str__(self) -> str:
        err = "-" if self.mean_error_px is None else f"{self.mean_error_px:.1f} px"
        return (
            f"precision {self.precision:.2f}, recall {self.recall:.2f}, F1 {self.f1:.2f} "
            f"({self.tp} matched, {self.fp} extra, {self.fn} missed; mean error {err}; rule: {self.rule})"
        )


def _pooled_rule(a: PointScore, b: PointScore) -> str:
    """The rule of a sum: where one side had no true point, its rule could not matter."""
    if a.rule == b.rule or a.tp + a.fn == 0:
        return b.rule
    return a.rule if b.tp + b.fn == 0 else "mixed"


def sum_scores(scores: Iterable[PointScore]) -> PointScore:
    """All the scores pooled into one (e.g. over the images of a dataset or the frames of a video)."""
    scores = list(scores)
    if not scores:
        raise ValueError("no scores to add up: score at least one image or frame")
    total = scores[0]
    for score in scores[1:]:
        total = total + score
    return total


def _one_place(points: Iterable[Point]) -> None:
    places = {(p.image, p.time) for p in points if p.image is not None or p.time is not None}
    if len(places) > 1:
        found = ", ".join(
            f"image {i}" if t is None else f"time {t:g}" for i, t in sorted(places, key=str)[:4]
        )
        raise ValueError(
            f"point_scores compares the points of one image or frame, got several ({found}): "
            "score each one and add the scores up with sum_scores"
        )


def point_scores(predicted: Sequence[Point], truth: Sequence[Point], threshold_px: float) -> PointScore:
    """Precision, recall and F1 of the predicted points of one image or frame (see ``match_points``).

    Ids are ignored: pointing ids only number the points. ``distance_threshold`` gives a threshold
    that grows with the image.
    """
    check_distance(threshold_px, "threshold_px")
    _one_place([*predicted, *truth])
    return score_of(predicted, truth, match_points(predicted, truth, threshold_px), DISTANCE_RULE)


def score_of(
    predicted: Sequence[Point], truth: Sequence[Point], matches: list[tuple[int, int, float]], rule: str
) -> PointScore:
    return PointScore(
        tp=len(matches),
        fp=len(predicted) - len(matches),
        fn=len(truth) - len(matches),
        total_error_px=sum(d for _, _, d in matches),
        rule=rule,
    )


def mask_point_scores(
    predicted: Sequence[Point], truth: Sequence[Point], masks: Sequence[Mask], size: tuple[int, int]
) -> PointScore:
    """Precision, recall and F1 of one image by Molmo2's pointing rule (``PointingEval``).

    Predictions are paired with true points by optimal assignment on distance; a pair is a hit
    when the prediction lies inside the true object's mask (``Mask.contains``). Precision =
    hits / predicted points, recall = hits / true objects, F1 = 2PR / (P + R) (0 when either is 0;
    Molmo2's code adds 1e-10 to the denominator); no true object scores 1.0 if nothing was
    predicted, else 0. ``size`` is the picture's (width, height): what the masks are drawn on.
    """
    _one_place([*predicted, *truth])
    return score_of(predicted, truth, mask_matches(predicted, truth, masks, size), MASK_RULE)
