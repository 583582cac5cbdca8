"""Score Molmo2's points, tracks and counts against known answers.

The sample videos in ``input/`` come with ``input/ground_truth/<video>.json``: every object's
centre in every frame where it can be seen. ``load_ground_truth`` reads it into ``Point``s.

Every score rests on one matching, ``match_points``: each predicted point may stand for at most
one true point and the other way round, and a pair counts only within a distance. Among all such
matchings it takes one with the most pairs, and among those the smallest total distance. (Greedy
nearest-first matching undercounts: one prediction can take a truth that another prediction needed.)

* ``score_points``: a video answer at the frames the model was shown: hits, extra points and,
  for tracks, whether each object kept one id, and HOTA, DetA and AssA (computed by TrackEval).
* ``point_scores``: precision, recall and F1 for one image or frame; add scores up over many.
* ``mask_point_scores``: the same by Molmo2's own rule, for truth with object masks.
* ``count_scores``: counts against true counts.

Two rules decide whether a predicted point found its object, and every score says which it used:

* ``MASK_RULE`` ("in mask"), Molmo2's evaluation (allenai/molmo2, ``olmo/eval/evaluators.py``,
  ``PointingEval``): predictions and true points are paired by optimal assignment on distance
  (no limit), and a pair counts only if the prediction, rounded to a pixel, lies inside the true
  object's mask. Scores by this rule can stand next to the paper's (on your data, not theirs).
* ``DISTANCE_RULE`` ("within distance"), ours, for truth without masks: a pair counts within a
  distance, by default 5% of the image diagonal.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import trackeval
from scipy.optimize import linear_sum_assignment

from molmo_nb_utils.grounding import Point, group_by_time, snap_times, time_to_frame
from molmo_nb_utils.masks.geometry import Mask, inside, mask_from_coco
from molmo_nb_utils.media import FramePlan

# Pointing threshold as a fraction of the image diagonal. Our choice, not the paper's: Molmo2's
# evaluation counts a point as correct when it falls inside the object's segmentation mask, and
# point-only ground truth has no masks. 5% of the diagonal is 37 px on a 640x360 video, about the
# radius of the sample videos' coins.
DIAGONAL_FRACTION = 0.05
MASK_RULE = "in mask"  # Molmo2's: a matched point counts if it lies inside its object's mask
DISTANCE_RULE = "within distance"  # ours: a matched point counts within a distance of the true point
RULES = {
    MASK_RULE: "point in the object's mask (Molmo2's rule)",
    DISTANCE_RULE: "within a distance of the true point (our rule, for truth without masks)",
}


def _check_distance(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a distance > 0 pixels, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Matching


def match_points(
    predicted: Sequence[Point], truth: Sequence[Point], max_distance: float
) -> list[tuple[int, int, float]]:
    """Pair predicted with true points one to one: the most pairs within ``max_distance`` pixels,
    and among those the smallest total distance.

    Returns ``(index in predicted, index in truth, distance)``, by predicted index. Ids, images and
    times are ignored: pass the points of one image or frame. ``max_distance=math.inf`` gives the
    plain smallest-total-distance matching (what Molmo2's evaluation uses before its mask test).
    """
    _check_distance(max_distance, "max_distance")
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


# ---------------------------------------------------------------------------------------------
# Pointing: precision, recall, F1


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
    _check_distance(threshold_px, "threshold_px")
    _one_place([*predicted, *truth])
    return _score(predicted, truth, match_points(predicted, truth, threshold_px), DISTANCE_RULE)


def _score(
    predicted: Sequence[Point], truth: Sequence[Point], matches: list[tuple[int, int, float]], rule: str
) -> PointScore:
    return PointScore(
        tp=len(matches),
        fp=len(predicted) - len(matches),
        fn=len(truth) - len(matches),
        total_error_px=sum(d for _, _, d in matches),
        rule=rule,
    )


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
    return _score(predicted, truth, mask_matches(predicted, truth, masks, size), MASK_RULE)


def distance_threshold(width: float, height: float, fraction: float = DIAGONAL_FRACTION) -> float:
    """A pointing threshold in pixels that scales with the image: ``fraction`` of its diagonal.

    One rule for images of any size. This is our stand-in, not the Molmo2 paper's rule: its
    pointing evaluation needs segmentation masks (a matched point counts if it lies inside the
    object), which point-only ground truth lacks. 5% of the diagonal is 40 px at 640x480.
    """
    for name, value in (("width", width), ("height", height)):
        _check_distance(value, name)
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1] of the image diagonal, got {fraction!r}")
    return fraction * math.hypot(width, height)


# ---------------------------------------------------------------------------------------------
# Counting


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


# ---------------------------------------------------------------------------------------------
# Video ground truth and tracks


@dataclass(frozen=True)
class GroundTruth:
    """Every visible object's centre, one ``Point`` per object per frame (``time`` = frame time).

    ``masks``, where the file gives them, holds each object's mask on each frame, keyed by
    (frame index, object id): with them, scores use Molmo2's in-mask rule (``MASK_RULE``).
    """

    points: list[Point]
    fps: float
    width: int
    height: int
    num_frames: int
    masks: dict[tuple[int, int], Mask] = field(default_factory=dict)

    @property
    def rule(self) -> str:
        """The rule its scores use: ``MASK_RULE`` with masks, else ``DISTANCE_RULE``."""
        return MASK_RULE if self.masks else DISTANCE_RULE

    def mask_of(self, index: int, object_id: int) -> Mask:
        """Object ``object_id``'s mask on frame ``index``."""
        try:
            return self.masks[(index, object_id)]
        except KeyError:
            raise ValueError(f"no mask of object {object_id} on frame {index} in this truth") from None

    def _by_frame(self) -> dict[int, list[Point]]:
        frames: dict[int, list[Point]] = {}
        for p in self.points:
            frames.setdefault(time_to_frame(p.time, self.fps), []).append(p)
        return frames

    def plan_at(self, times: Iterable[float]) -> FramePlan:
        """A frame plan for bare sample times: each time on its nearest frame (``time_to_frame``).

        Only for times typed by hand; a run's own plan (``plan_frames``, ``ItemResult.plan``) says
        which frame each time showed.
        """
        times = tuple(float(t) for t in times)
        indices = tuple(time_to_frame(t, self.fps, self.num_frames) for t in times)
        return FramePlan(times, indices, (self.width, self.height))

    def at(self, times: Iterable[float]) -> list[Point]:
        """The truth at bare sample times, each on its nearest frame: ``at_plan(plan_at(times))``."""
        return self.at_plan(self.plan_at(times))

    def at_frames(self, indices: Sequence[int], times: Sequence[float]) -> list[Point]:
        """The truth on the given frame indices, labelled with the given times: ``at_plan`` of that plan."""
        if len(indices) != len(times):
            raise ValueError(f"{len(indices)} frame indices but {len(times)} times: give one time per frame")
        plan = FramePlan(
            tuple(float(t) for t in times), tuple(int(i) for i in indices), (self.width, self.height)
        )
        return self.at_plan(plan)

    def at_plan(self, plan: FramePlan) -> list[Point]:
        """The truth at the frames shown: every object on frame ``plan.indices[k]``, at time ``plan.times[k]``.

        The one place truth is put on the frames a model saw (scoring, worked answers, training
        targets). The frame indices are the plan's, not recomputed from the times: a sample time
        need not round to its frame (at 29.97 fps the sample at 0.5 s shows frame 14, while
        round(0.5 * 29.97) = 15). A time repeated in the plan is one prompt entry: its first frame
        is kept.
        """
        if not isinstance(plan, FramePlan):
            raise TypeError(
                f"at_plan takes a FramePlan (plan_frames(video), ItemResult.plan, VideoFrames.plan), "
                f"got {type(plan).__name__}"
            )
        if tuple(plan.size) != (self.width, self.height):
            raise ValueError(
                f"the frames shown are {plan.size[0]}x{plan.size[1]}, but this truth is for a "
                f"{self.width}x{self.height} video: is it the right truth file?"
            )
        frames = self._by_frame()
        out: list[Point] = []
        for t, index in shown_frames(plan).items():
            if not 0 <= index < self.num_frames:
                raise ValueError(
                    f"frame index {index} is outside this video's frames 0..{self.num_frames - 1}: "
                    "were the frames sampled from another video?"
                )
            out.extend(Point(p.id, p.x, p.y, time=float(t)) for p in frames.get(index, []))
        return out


def shown_frames(plan: FramePlan) -> dict[float, int]:
    """Prompt time -> video frame index of each frame shown, times in plan order.

    A time repeated in the plan (the last sample of a short video, clamped) is one prompt entry:
    its first frame is kept.
    """
    shown: dict[float, int] = {}
    for t, index in zip(plan.times, plan.indices, strict=True):
        shown.setdefault(float(t), int(index))
    return shown


def load_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read a ground-truth JSON (the format ``scripts/make_sample_media.py`` writes).

    Each object of a frame may carry its ``"mask"`` on that frame, as COCO writes segmentations
    (RLE, compressed or not, or polygons; see ``masks.mask_from_coco``): every object on every
    frame, or none.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Ground truth file not found: {path}")
    try:
        data = json.loads(path.read_text())
        fps, width, height = float(data["fps"]), int(data["width"]), int(data["height"])
        points, masks, unmasked = [], {}, []
        for frame in data["frames"]:
            for o in frame["objects"]:
                point = Point(int(o["id"]), float(o["x"]), float(o["y"]), time=float(frame["time"]))
                points.append(point)
                if o.get("mask") is None:
                    unmasked.append(point)
                    continue
                mask = mask_from_coco(o["mask"], f"{path.name}, object {point.id} at {point.time:g} s")
                if mask.size is not None and mask.size != (width, height):
                    raise ValueError(
                        f"the mask of object {point.id} at {point.time:g} s is {mask.size[0]}x{mask.size[1]}, "
                        f"the video {width}x{height}"
                    )
                masks[(time_to_frame(point.time, fps), point.id)] = mask
        if masks and unmasked:
            raise ValueError(
                f"object {unmasked[0].id} at {unmasked[0].time:g} s has no mask but others do: give every "
                "object on every frame its mask, or none"
            )
        return GroundTruth(points, fps, width, height, int(data["num_frames"]), masks)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a ground-truth file of this collection ({err})") from None


@dataclass(frozen=True)
class TrackScore:
    """How well predicted points match the truth at the sampled frames, and whether ids held.

    Identity, for tracks (pointing ids are only a running count): at each sampled frame the points
    are matched ignoring ids; a *hit* is a true object matched there. ``ids_per_object`` lists, per
    true object id, the predicted ids of its hits in order of first use (empty if never hit). An
    *id switch* is a hit whose predicted id differs from the previous hit's on the same object. An
    object is *followed by one id* when it is hit at least once, every hit has the same predicted
    id, and no other object's hits have that id; ``id_consistency`` is the fraction of objects that are.

    ``hota``, ``deta`` and ``assa`` are TrackEval's HOTA, DetA and AssA on the frames shown, with
    a binary similarity: 1 where the point is inside the object's mask (``MASK_RULE``, Molmo2's
    ``HOTAMetric``), or within the hit distance (``DISTANCE_RULE``), else 0. With a binary
    similarity every HOTA threshold gives the same value.
    """

    times: int  # sampled frames compared
    truth_objects: int  # true (frame, object) positions
    hits: int  # true positions found by a predicted point (by ``rule``; see score_points)
    false_points: int  # predicted points that found no true position
    mean_error_px: float | None  # mean distance of the hits
    ids_per_object: dict[int, tuple[int, ...]] = field(default_factory=dict)
    id_switches: int = 0
    hota: float = 0.0  # TrackEval's HOTA: sqrt(DetA * AssA)
    deta: float = 0.0  # TrackEval's DetA: detection accuracy
    assa: float = 0.0  # TrackEval's AssA: association accuracy (do the ids follow the objects?)
    rule: str = DISTANCE_RULE

    @property
    def hit_rate(self) -> float:
        return self.hits / self.truth_objects if self.truth_objects else 0.0

    def followed_by_one_id(self, object_id: int) -> bool:
        """Whether true object ``object_id`` was followed by one predicted id (see the class docstring)."""
        if object_id not in self.ids_per_object:
            raise ValueError(
                f"no true object {object_id} at the sampled frames; objects: {list(self.ids_per_object)}"
            )
        ids = self.ids_per_object[object_id]
        return len(ids) == 1 and not any(
            ids[0] in other for oid, other in self.ids_per_object.items() if oid != object_id
        )

    @property
    def id_consistency(self) -> float:
        objects = self.ids_per_object
        return sum(map(self.followed_by_one_id, objects)) / len(objects) if objects else 0.0

    def __str__(self) -> str:
        err = "-" if self.mean_error_px is None else f"{self.mean_error_px:.1f} px"
        return (
            f"{self.hits}/{self.truth_objects} true positions hit ({self.hit_rate:.0%}) over {self.times} times, "
            f"{self.false_points} extra points, mean error of hits {err}; HOTA {self.hota:.3f} "
            f"(DetA {self.deta:.3f}, AssA {self.assa:.3f}; TrackEval); rule: {self.rule}"
        )

    def id_report(self) -> str:
        """Which predicted ids followed each true object: one line per object and a summary."""
        lines = []
        for oid, ids in self.ids_per_object.items():
            if not ids:
                lines.append(f"object {oid}: never hit")
                continue
            shared = sorted(
                {i for i in ids for o, other in self.ids_per_object.items() if o != oid and i in other}
            )
            text = f"object {oid}: id{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
            if shared:
                text += f" (id {', '.join(map(str, shared))} also on other objects)"
            lines.append(text)
        kept = sum(map(self.followed_by_one_id, self.ids_per_object))
        lines.append(
            f"{kept}/{len(self.ids_per_object)} objects followed by one id ({self.id_consistency:.0%}), "
            f"{self.id_switches} id switch{'es' if self.id_switches != 1 else ''}"
        )
        return "\n".join(lines)


def _plan(frames: Any, truth: GroundTruth) -> FramePlan:
    """The frames shown, as a plan: a ``FramePlan``, anything carrying one (``VideoFrames``), or bare times."""
    plan = frames if isinstance(frames, FramePlan) else getattr(frames, "plan", None)
    if plan is None:
        plan = truth.plan_at(frames)
    if not plan.times:
        raise ValueError("no sampled frames: pass the frames (or times) the model was shown")
    return plan


def hota_scores(
    frames: Sequence[tuple[Sequence[int], Sequence[int], np.ndarray]],
) -> tuple[float, float, float]:
    """HOTA, DetA and AssA by TrackEval (``trackeval.metrics.HOTA``), averaged over its thresholds.

    ``frames``: per frame, the true object ids, the predicted ids and the similarity matrix
    (one row per true object, one column per prediction, values in 0..1). Ids are any numbers;
    each may appear once per frame. Nothing true and nothing predicted scores 0, as TrackEval has it.
    """
    true_ids = sorted({i for t, _, _ in frames for i in t})
    predicted_ids = sorted({i for _, q, _ in frames for i in q})
    true_index = {oid: k for k, oid in enumerate(true_ids)}
    predicted_index = {pid: k for k, pid in enumerate(predicted_ids)}
    data: dict[str, Any] = {
        "num_timesteps": len(frames),
        "num_gt_ids": len(true_ids),
        "num_tracker_ids": len(predicted_ids),
        "gt_ids": [],
        "tracker_ids": [],
        "similarity_scores": [],
        "num_gt_dets": 0,
        "num_tracker_dets": 0,
    }
    for t, q, similarity in frames:
        if len(set(t)) != len(t) or len(set(q)) != len(q):
            raise ValueError(
                "an id appears twice in one frame: give each object and each track once per frame"
            )
        similarity = np.asarray(similarity, dtype=float).reshape(len(t), len(q))
        data["gt_ids"].append(np.array([true_index[i] for i in t], dtype=int))
        data["tracker_ids"].append(np.array([predicted_index[i] for i in q], dtype=int))
        data["similarity_scores"].append(similarity)
        data["num_gt_dets"] += len(t)
        data["num_tracker_dets"] += len(q)
    result = trackeval.metrics.HOTA().eval_sequence(data)
    return tuple(float(np.mean(result[name])) for name in ("HOTA", "DetA", "AssA"))  # type: ignore[return-value]


def _similarity(
    guesses: Sequence[Point],
    true_here: Sequence[Point],
    masks: Sequence[Mask] | None,
    radius: float,
    size: tuple[int, int],
) -> np.ndarray:
    """1 where a prediction finds a true object by the rule (in its mask, or within ``radius``), else 0."""
    similarity = np.zeros((len(true_here), len(guesses)))
    for j, o in enumerate(true_here):
        pixels = masks[j].decode(size) if masks is not None and guesses else None  # decoded once
        for i, g in enumerate(guesses):
            found = (
                inside(pixels, g.x, g.y) if pixels is not None else math.hypot(g.x - o.x, g.y - o.y) <= radius
            )
            similarity[j, i] = float(found)
    return similarity


def score_points(
    predicted: Iterable[Point], truth: GroundTruth, frames: Any, *, radius: float | None = None
) -> TrackScore:
    """Match predicted to true positions at each sampled frame (ids ignored), and score the tracks.

    With masks in the truth (``truth.rule == MASK_RULE``), a true position is hit by Molmo2's rule:
    predictions and true positions paired by optimal assignment on distance, a pair counting when
    the point is inside the object's mask. Without, a hit is a true position paired with a
    predicted point within ``radius`` pixels (``match_points``); by default
    ``distance_threshold(truth.width, truth.height)``, 5% of the frame's diagonal, the same rule
    as ``point_scores`` and the dataset scores, so a 4K video is not held to a 640 px one's radius.
    Ids are ignored when matching on purpose: a tracker that finds every object but numbers them
    differently still finds them; ``ids_per_object`` then shows how the ids held, and HOTA/AssA
    (TrackEval, ``hota_scores``) weigh it (see ``TrackScore``). ``frames`` is the plan of the frames
    shown (``FramePlan``, ``ItemResult.plan``, or ``VideoFrames`` from ``sample_frames``: the truth is
    read on exactly those frames, ``GroundTruth.at_plan``) or a list of sample times in seconds
    (each read on its nearest frame). Predicted points are snapped to the nearest sample time
    (``snap_times``); points without a time are ignored; for HOTA, a track's first point at a time
    stands for it there.
    """
    if radius is None:
        radius = distance_threshold(truth.width, truth.height)
    _check_distance(radius, "radius")
    plan = _plan(frames, truth)
    shown = shown_frames(plan)
    sample_times = sorted(shown)
    size = (truth.width, truth.height)
    predicted_by_time = group_by_time(snap_times(predicted, sample_times))
    truth_by_time = group_by_time(truth.at_plan(plan))
    hits = truth_count = false_points = 0
    errors: list[float] = []
    hit_ids: dict[int, list[int]] = {}  # true object id -> predicted id of each hit, in time order
    hota_frames = []
    for t in sample_times:
        guesses = predicted_by_time.get(t, [])
        true_here = truth_by_time.get(t, [])
        masks = [truth.mask_of(shown[t], o.id) for o in true_here] if truth.masks else None
        if masks is not None:
            matches = mask_matches(guesses, true_here, masks, size)
        else:
            matches = match_points(guesses, true_here, radius)
        truth_count += len(true_here)
        hits += len(matches)
        false_points += len(guesses) - len(matches)
        errors.extend(d for _, _, d in matches)
        for o in true_here:
            hit_ids.setdefault(o.id, [])
        for gi, oi, _ in matches:
            hit_ids[true_here[oi].id].append(guesses[gi].id)
        first: dict[int, Point] = {}
        for g in guesses:
            first.setdefault(g.id, g)  # a track's first point at a time stands for it there
        tracked = list(first.values())
        hota_frames.append(
            (
                [o.id for o in true_here],
                [g.id for g in tracked],
                _similarity(tracked, true_here, masks, radius, size),
            )
        )
    switches = sum(a != b for ids in hit_ids.values() for a, b in pairwise(ids))
    hota, deta, assa = hota_scores(hota_frames)
    return TrackScore(
        times=len(sample_times),
        truth_objects=truth_count,
        hits=hits,
        false_points=false_points,
        mean_error_px=sum(errors) / len(errors) if errors else None,
        ids_per_object={oid: tuple(dict.fromkeys(ids)) for oid, ids in sorted(hit_ids.items())},
        id_switches=switches,
        hota=hota,
        deta=deta,
        assa=assa,
        rule=truth.rule,
    )
