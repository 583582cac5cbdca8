"""Counting scores: predicted counts against true counts, as Molmo2's ``PointCountEval`` has them."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CountScore", "count_scores"]


@dataclass(frozen=True)
class CountScore:
    """How predicted counts compare with true counts over ``n`` questions."""

    n: int  # questions with a true count (a predicted count of None: an answer without one, not valid)
    exact: int  # counts exactly right (Molmo2's PointCountEval "correct")
    close: int  # off by at most 1 + floor(5% of the true count), Molmo2's "close" for video counting
    total_abs_error: int  # sum of |predicted - true| over the valid answers
    total_signed_error: int  # sum of predicted - true over the valid answers: > 0 means overcounting
    within_one: int = 0  # off by at most 1 (Molmo2's PointCountEval "close")
    valid: int = 0  # answers with a count (Molmo2's "valid"); a failed item has none
    by_true_count: tuple[tuple[int, int, int], ...] = ()  # (true count, exact, questions), ascending

    @property
    def accuracy(self) -> float:
        return self.exact / self.n

    @property
    def within_one_rate(self) -> float:
        return self.within_one / self.n

    @property
    def valid_rate(self) -> float:
        return self.valid / self.n

    @property
    def close_rate(self) -> float:
        return self.close / self.n

    @property
    def mean_abs_error(self) -> float:
        return self.total_abs_error / self.valid if self.valid else math.nan

    @property
    def mean_signed_error(self) -> float:
        return self.total_signed_error / self.valid if self.valid else math.nan

    def __str__(self) -> str:
        return (
            f"{self.exact}/{self.n} counts exact ({self.accuracy:.0%}), {self.close} close ({self.close_rate:.0%}), "
            f"mean absolute error {self.mean_abs_error:.2f}, mean signed error {self.mean_signed_error:+.2f}; "
            f"Molmo2's PointCountEval: correct {self.accuracy:.0%}, close (within one) {self.within_one_rate:.0%}, "
            f"valid {self.valid_rate:.0%}"
        )


def _counts(values: Sequence[Any], name: str, *, missing_ok: bool = False) -> list[int | None]:
    for k, v in enumerate(values):
        if v is None and missing_ok:
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"{name}[{k}] must be a whole number >= 0, got {v!r}")
    return [None if v is None else int(v) for v in values]


def count_scores(predicted_counts: Sequence[int | None], true_counts: Sequence[int]) -> CountScore:
    """Exact, within one, valid, close and average errors of predicted counts (``count_points`` of each answer).

    A predicted count of None is an answer without a count (a failed item): not valid, and wrong,
    as Molmo2's ``PointCountEval`` scores an answer it cannot read. Errors average the valid ones.
    """
    predicted = _counts(predicted_counts, "predicted_counts", missing_ok=True)
    true = _counts(true_counts, "true_counts")
    if len(predicted) != len(true):
        raise ValueError(
            f"{len(predicted)} predicted counts but {len(true)} true counts: give one of each per question"
        )
    if not true:
        raise ValueError("no counts to score: give at least one predicted and one true count")
    pairs = [(p - t, t) for p, t in zip(predicted, true, strict=True) if p is not None]
    errors = [e for e, _ in pairs]
    per_count: dict[int, list[int]] = {}
    for p, t in zip(predicted, true, strict=True):
        per_count.setdefault(t, []).append(p == t)
    return CountScore(
        n=len(true),
        exact=sum(e == 0 for e in errors),
        close=sum(abs(e) <= 1 + math.floor(0.05 * t) for e, t in pairs),
        total_abs_error=sum(abs(e) for e in errors),
        total_signed_error=sum(errors),
        within_one=sum(abs(e) <= 1 for e in errors),
        valid=len(errors),
        by_true_count=tuple((t, sum(hits), len(hits)) for t, hits in sorted(per_count.items())),
    )
