"""One matching under every score: predicted and true points paired one to one.

Each predicted point may stand for at most one true point and the other way round, and a pair
counts only within a distance. Among all such matchings ``match_points`` takes one with the most
pairs, and among those the smallest total distance. (Greedy nearest-first matching undercounts: one
prediction can take a truth that another prediction needed.) ``mask_matches`` is Molmo2's: paired on
distance, kept where the point lies in the true object's mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from molmo_nb_utils.evaluation.rules import check_distance
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.masks.geometry import Mask

__all__ = ["mask_matches", "match_points"]


def match_points(
    predicted: Sequence[Point], truth: Sequence[Point], max_distance: float
) -> list[tuple[int, int, float]]:
    """Pair predicted with true points one to one: the most pairs within ``max_distance`` pixels,
    and among those the smallest total distance.

    Returns ``(index in predicted, index in truth, distance)``, by predicted index. Ids, images and
    times are ignored: pass the points of one image or frame. ``max_distance=math.inf`` gives the
    plain smallest-total-distance matching (what Molmo2's evaluation uses before its mask test).
    """
    check_distance(max_distance, "max_distance")
    if not predicted or not truth:
        return []
    p = np.array([(g.x, g.y) for g in predicted], dtype=float)
    t = np.array([(o.x, o.y) for o in truth], dtype=float)
    dist = np.hypot(p[:, None, 0] - t[None, :, 0], p[:, None, 1] - t[None, :, 1])
    if not np.isfinite(dist).all():
        raise ValueError("point coordinates must be finite numbers of pixels")
    # An out-of-range pair costs more than any set of in-range pairs can add up to (at most
    # min(len) pairs, each at most the largest in-range distance), so a matching with one more
    # pair in range always costs less: the solver maximises the count first, then the closeness.
    in_range = dist <= max_distance
    ceiling = float(dist[in_range].max()) if in_range.any() else 0.0
    cost = np.where(in_range, dist, min(len(predicted), len(truth)) * ceiling + 1.0)
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j), float(dist[i, j])) for i, j in zip(rows, cols, strict=True) if in_range[i, j]]


def mask_matches(
    predicted: Sequence[Point], truth: Sequence[Point], masks: Sequence[Mask], size: tuple[int, int]
) -> list[tuple[int, int, float]]:
    """Molmo2's pairs: optimal assignment on distance (no limit), kept where the predicted point,
    rounded to a pixel, lies inside its true point's mask (``masks[k]`` is ``truth[k]``'s object)."""
    if len(masks) != len(truth):
        raise ValueError(f"{len(truth)} true points but {len(masks)} masks: give one mask per true point")
    return [
        (i, j, d)
        for i, j, d in match_points(predicted, truth, math.inf)
        if masks[j].contains(predicted[i].x, predicted[i].y, size)
    ]
