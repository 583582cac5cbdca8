"""The Molmo2 report's figures, and ours beside them with a 95% interval for the sample size.

Why an interval: 50 items answered 90% right could come from a model that gets 80% or 97% of the whole
benchmark right; a figure without its interval invites a false "we do not reproduce the paper". Two
kinds, named in the table:

* **Wilson** score interval (``scipy.stats.binomtest``) for a share of right/wrong items (counting's
  ``correct``, a Point-Bench category);
* **bootstrap** percentile interval (2000 resamples, a fixed seed, so the table is the same every run)
  for an average of per-item scores that are not right/wrong (pixmo_points ``f1``), and for the
  Point-Bench ``average``, resampling within each category (the average weighs categories, not items).

Neither covers what a sample cannot: another prompt template, other crops or precision than the
report's (greedy decoding, many crops, no style prefix), or images gone from the web since.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from molmo_nb_utils.benchmarks.scoring import BenchmarkScore
from molmo_nb_utils.benchmarks.specs import BENCHMARKS, POINT_BENCH_CATEGORIES

__all__ = ["PAPER_MODELS", "PAPER_SCORES", "PAPER_SOURCE", "PaperScore", "interval", "paper_table"]

PAPER_SOURCE = "Molmo2 report, arXiv 2601.10611 v4, Tables 6 and 7"
PAPER_MODELS = ("allenai/Molmo2-4B", "allenai/Molmo2-8B", "allenai/Molmo2-O-7B")
BOOTSTRAP_RESAMPLES = 2000
RIGHT_OR_WRONG = frozenset({"correct", "close", "valid"})  # per-item 0 or 1: a share, Wilson
SEED = 0


@dataclass(frozen=True)
class PaperScore:
    """One published figure, as a fraction 0..1 (as ``score_benchmark`` returns), and where it is printed."""

    value: float
    source: str = PAPER_SOURCE
    note: str = ""


def _three(values: tuple[float, float, float], note: str = "") -> dict[str, PaperScore]:
    return {m: PaperScore(round(v / 100, 4), note=note) for m, v in zip(PAPER_MODELS, values, strict=True)}


_CORRECTED = "corrected Point-Bench evaluation (v4; earlier versions' figures had an evaluation bug)"

# benchmark -> metric -> model -> figure. Evaluation in the report: greedy, many crops, no style prefix.
PAPER_SCORES: dict[str, dict[str, dict[str, PaperScore]]] = {
    "countbench": {"correct": _three((93.9, 93.7, 95.1))},
    "pixmo_count": {"correct": _three((88.1, 88.5, 88.9), "test split")},
    "point_bench": {
        "average": _three((67.7, 68.7, 66.5), _CORRECTED),
        "affordable": {PAPER_MODELS[0]: PaperScore(0.823, note=_CORRECTED)},
        "spatial": {PAPER_MODELS[0]: PaperScore(0.718, note=_CORRECTED)},
        "reasoning": {PAPER_MODELS[0]: PaperScore(0.720, note=_CORRECTED)},
        "steerable": {PAPER_MODELS[0]: PaperScore(0.410, note=_CORRECTED)},
        "counting": {PAPER_MODELS[0]: PaperScore(0.714, note=_CORRECTED)},
    },
}

# The rows of the table: each benchmark's headline metric, then Point-Bench's categories.
ROWS = (
    ("countbench", "correct"),
    ("pixmo_count", "correct"),
    ("pixmo_points", "f1"),
    ("point_bench", "average"),
    *(("point_bench", c) for c in POINT_BENCH_CATEGORIES),
)


def _bootstrap(groups: list[np.ndarray]) -> tuple[float, float]:
    """Percentile bootstrap of the mean of the groups' means, each group resampled on its own."""
    rng = np.random.default_rng(SEED)
    stats = np.zeros(BOOTSTRAP_RESAMPLES)
    for values in groups:
        picks = rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
        stats += values[picks].mean(axis=1)
    stats /= len(groups)
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


def interval(score: BenchmarkScore, metric: str) -> tuple[float, float, str]:
    """(low, high, method) of the 95% interval of ``score[metric]`` for its number of items; (nan, nan,
    "-") where there are no items. Wilson for a share of right/wrong items, bootstrap otherwise (module doc)."""
    if score.name == "point_bench":
        groups = [
            [o.values["pass"] for o in score.outcomes if o.category == c] for c in POINT_BENCH_CATEGORIES
        ]
        groups = [
            np.asarray(g)
            for g in (groups if metric == "average" else [groups[POINT_BENCH_CATEGORIES.index(metric)]])
        ]
        if metric != "average" and len(groups[0]):
            ci = binomtest(int(groups[0].sum()), len(groups[0])).proportion_ci(method="wilson")
            return float(ci.low), float(ci.high), "Wilson"
        if any(len(g) == 0 for g in groups):
            return math.nan, math.nan, "-"
        return (*_bootstrap(groups), "bootstrap")
    values = np.asarray([o.values[metric] for o in score.outcomes])
    if not len(values):
        return math.nan, math.nan, "-"
    if metric in RIGHT_OR_WRONG:
        ci = binomtest(int(values.sum()), len(values)).proportion_ci(method="wilson")
        return float(ci.low), float(ci.high), "Wilson"
    return (*_bootstrap([values]), "bootstrap")


def _items(n: int) -> str:
    return f"{n} item" + ("" if n == 1 else "s")


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * 100:.1f}%"


def paper_table(scores: Iterable[BenchmarkScore] | Mapping[str, BenchmarkScore]) -> str:
    """Our scores beside the report's (``PAPER_SCORES``), one row per benchmark metric, each with its 95%
    interval for our number of items and the rule that computed it, e.g.::

        countbench  correct  90.0% (78.6-95.7%, Wilson)  45 of 50 items  paper: 4B 93.9%  8B 93.7%  O-7B 95.1%
    """
    given = list(scores.values()) if isinstance(scores, Mapping) else list(scores)
    by_name = {s.name: s for s in given}
    header = ("benchmark", "metric", "ours (95% interval)", "items", "4B", "8B", "O-7B")
    rows = [header]
    for name, metric in ROWS:
        score = by_name.get(name)
        if score is None:
            continue
        low, high, method = interval(score, metric)
        ours = _pct(score[metric])
        if not math.isnan(low):
            ours += f" ({low * 100:.1f}-{high * 100:.1f}%, {method})"
        items = score.of_items() if metric not in score.categories else _items(score.categories[metric])
        paper = PAPER_SCORES.get(name, {}).get(metric, {})
        rows.append(
            (name, metric, ours, items, *(_pct(paper[m].value) if m in paper else "-" for m in PAPER_MODELS))
        )
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if k < 4 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(
        f"paper: {PAPER_SOURCE} (Molmo2-4B, -8B, -O-7B; greedy, many crops, no style prefix); -: none given"
    )
    for name in by_name:
        if name in BENCHMARKS:
            spec = BENCHMARKS[name]
            headline = next(m for n, m in ROWS if n == name)
            lines.append(f"{name}: {spec.evaluator}; {headline}: {spec.rules[headline]}")
    return "\n".join(lines)
