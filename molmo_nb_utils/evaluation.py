"""Score Molmo2's points, tracks and counts against known answers.

The sample videos in ``input/`` come with ``input/ground_truth/<video>.json``: every object's
centre in every frame where it can be seen. ``load_ground_truth`` reads it into ``Point``s.

Every score rests on one matching, ``match_points``: each predicted point may stand for at most
one true point and the other way round, and a pair counts only within a distance. Among all such
matchings it takes one with the most pairs, and among those the smallest total distance. (Greedy
nearest-first matching undercounts: one prediction can take a truth that another prediction needed.)

* ``score_points``: a video answer at the frames the model was shown: hits, extra points and,
  for tracks, whether each object kept one id.
* ``point_scores``: precision, recall and F1 for one image or frame; add scores up over many.
* ``count_scores``: counts against true counts.
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
from scipy.optimize import linear_sum_assignment

from molmo_nb_utils.grounding import Point, group_by_time, snap_times, time_to_frame
from molmo_nb_utils.media import FramePlan

# Pointing threshold as a fraction of the image diagonal. Our choice, not the paper's: Molmo2's
# evaluation counts a point as correct when it falls inside the object's segmentation mask, and
# point-only ground truth has no masks. 5% of the diagonal is 37 px on a 640x360 video, about the
# radius of the sample videos' coins.
DIAGONAL_FRACTION = 0.05


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

    tp: int = 0  # predicted points matched to a true point within the threshold
    fp: int = 0  # predicted points matched to nothing
    fn: int = 0  # true points matched to nothing
    total_error_px: float = 0.0  # sum of the matched pairs' distances

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
        )

    def __str__(self) -> str:
        err = "-" if self.mean_error_px is None else f"{self.mean_error_px:.1f} px"
        return (
            f"precision {self.precision:.2f}, recall {self.recall:.2f}, F1 {self.f1:.2f} "
            f"({self.tp} matched, {self.fp} extra, {self.fn} missed; mean error {err})"
        )


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
    matches = match_points(predicted, truth, threshold_px)
    return PointScore(
        tp=len(matches),
        fp=len(predicted) - len(matches),
        fn=len(truth) - len(matches),
        total_error_px=sum(d for _, _, d in matches),
    )


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

    n: int
    exact: int  # counts exactly right
    close: int  # off by at most 1 + floor(5% of the true count), Molmo2's "close" for video counting
    total_abs_error: int  # sum of |predicted - true|
    total_signed_error: int  # sum of predicted - true: > 0 means overcounting

    @property
    def accuracy(self) -> float:
        return self.exact / self.n

    @property
    def close_rate(self) -> float:
        return self.close / self.n

    @property
    def mean_abs_error(self) -> float:
        return self.total_abs_error / self.n

    @property
    def mean_signed_error(self) -> float:
        return self.total_signed_error / self.n

    def __str__(self) -> str:
        return (
            f"{self.exact}/{self.n} counts exact ({self.accuracy:.0%}), {self.close} close ({self.close_rate:.0%}), "
            f"mean absolute error {self.mean_abs_error:.2f}, mean signed error {self.mean_signed_error:+.2f}"
        )


def _counts(values: Sequence[Any], name: str) -> list[int]:
    for k, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"{name}[{k}] must be a whole number >= 0, got {v!r}")
    return [int(v) for v in values]


def count_scores(predicted_counts: Sequence[int], true_counts: Sequence[int]) -> CountScore:
    """Exact, close and average errors of predicted counts (e.g. ``count_points`` of each answer)."""
    predicted, true = _counts(predicted_counts, "predicted_counts"), _counts(true_counts, "true_counts")
    if len(predicted) != len(true):
        raise ValueError(
            f"{len(predicted)} predicted counts but {len(true)} true counts: give one of each per question"
        )
    if not true:
        raise ValueError("no counts to score: give at least one predicted and one true count")
    errors = [p - t for p, t in zip(predicted, true, strict=True)]
    return CountScore(
        n=len(true),
        exact=sum(e == 0 for e in errors),
        close=sum(abs(e) <= 1 + math.floor(0.05 * t) for e, t in zip(errors, true, strict=True)),
        total_abs_error=sum(abs(e) for e in errors),
        total_signed_error=sum(errors),
    )


# ---------------------------------------------------------------------------------------------
# Video ground truth and tracks


@dataclass(frozen=True)
class GroundTruth:
    """Every visible object's centre, one ``Point`` per object per frame (``time`` = frame time)."""

    points: list[Point]
    fps: float
    width: int
    height: int
    num_frames: int

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
        seen: set[float] = set()
        for index, t in zip(plan.indices, plan.times, strict=True):
            if not 0 <= index < self.num_frames:
                raise ValueError(
                    f"frame index {index} is outside this video's frames 0..{self.num_frames - 1}: "
                    "were the frames sampled from another video?"
                )
            if t in seen:
                continue
            seen.add(t)
            out.extend(Point(p.id, p.x, p.y, time=float(t)) for p in frames.get(index, []))
        return out


def load_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read a ground-truth JSON written by ``scripts/make_sample_media.py``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Ground truth file not found: {path}")
    try:
        data = json.loads(path.read_text())
        points = [
            Point(int(o["id"]), float(o["x"]), float(o["y"]), time=float(frame["time"]))
            for frame in data["frames"]
            for o in frame["objects"]
        ]
        return GroundTruth(
            points, float(data["fps"]), int(data["width"]), int(data["height"]), int(data["num_frames"])
        )
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
    """

    times: int  # sampled frames compared
    truth_objects: int  # true (frame, object) positions
    hits: int  # true positions matched by a predicted point within the distance (see score_points)
    false_points: int  # predicted points matched to no true position
    mean_error_px: float | None  # mean distance of the hits
    ids_per_object: dict[int, tuple[int, ...]] = field(default_factory=dict)
    id_switches: int = 0

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
            f"{self.false_points} extra points, mean error of hits {err}"
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


def score_points(
    predicted: Iterable[Point], truth: GroundTruth, frames: Any, *, radius: float | None = None
) -> TrackScore:
    """Match predicted to true positions at each sampled frame (``match_points``, ids ignored).

    A hit is a true position paired with a predicted point within ``radius`` pixels; by default
    ``distance_threshold(truth.width, truth.height)``, 5% of the frame's diagonal, the same rule
    as ``point_scores`` and the dataset scores, so a 4K video is not held to a 640 px one's radius.
    Ids are ignored when matching on purpose: a tracker that finds every object but numbers them
    differently still finds them; ``ids_per_object`` then shows how the ids held (see
    ``TrackScore``). ``frames`` is what ``sample_frames`` returns (its ``indices`` say which video
    frame each sample showed, so the truth is read on exactly those frames) or a list of sample
    times in seconds (the truth is read on each time's nearest frame). Predicted points are
    snapped to the nearest sample time (``snap_times``); points without a time are ignored.
    """
    if radius is None:
        radius = distance_threshold(truth.width, truth.height)
    _check_distance(radius, "radius")
    plan = _plan(frames, truth)
    sample_times = sorted(set(plan.times))
    predicted_by_time = group_by_time(snap_times(predicted, sample_times))
    truth_by_time = group_by_time(truth.at_plan(plan))
    hits = truth_count = false_points = 0
    errors: list[float] = []
    hit_ids: dict[int, list[int]] = {}  # true object id -> predicted id of each hit, in time order
    for t in sample_times:
        guesses = predicted_by_time.get(t, [])
        true_here = truth_by_time.get(t, [])
        matches = match_points(guesses, true_here, radius)
        truth_count += len(true_here)
        hits += len(matches)
        false_points += len(guesses) - len(matches)
        errors.extend(d for _, _, d in matches)
        for o in true_here:
            hit_ids.setdefault(o.id, [])
        for gi, oi, _ in matches:
            hit_ids[true_here[oi].id].append(guesses[gi].id)
    switches = sum(a != b for ids in hit_ids.values() for a, b in pairwise(ids))
    return TrackScore(
        times=len(sample_times),
        truth_objects=truth_count,
        hits=hits,
        false_points=false_points,
        mean_error_px=sum(errors) / len(errors) if errors else None,
        ids_per_object={oid: tuple(dict.fromkeys(ids)) for oid, ids in sorted(hit_ids.items())},
        id_switches=switches,
    )
