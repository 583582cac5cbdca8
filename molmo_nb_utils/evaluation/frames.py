"""Scores on the frames of a video: the one per-frame loop, and points pooled over the frames shown.

Why one loop: every video score (``score_points``' hits and HOTA, a dataset's pooled points) matches
the predicted points of each frame shown with the truth on that very frame, by the truth's rule
(``rules``). ``match_frames`` does that once; the scores read its ``FrameMatch``es.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from molmo_nb_utils.evaluation.matching import mask_matches, match_points
from molmo_nb_utils.evaluation.points import PointScore, score_of, sum_scores
from molmo_nb_utils.evaluation.rules import check_distance, distance_threshold
from molmo_nb_utils.evaluation.truth import GroundTruth
from molmo_nb_utils.grounding import Point, group_by_time, snap_times
from molmo_nb_utils.masks.geometry import Mask
from molmo_nb_utils.media import FramePlan

__all__ = ["FrameMatch", "as_plan", "match_frames", "video_point_scores"]


@dataclass(frozen=True)
class FrameMatch:
    """One frame shown: the predicted and true points at its prompt time, and the pairs that count.

    ``masks[k]`` is ``truth[k]``'s object mask on this frame when the truth has masks (Molmo2's rule),
    else None (the distance rule); ``matches`` are (index in predicted, index in truth, distance).
    """

    time: float
    frame: int  # the video frame index shown at ``time``
    predicted: tuple[Point, ...]
    truth: tuple[Point, ...]
    masks: tuple[Mask, ...] | None
    matches: tuple[tuple[int, int, float], ...]
    rule: str

    @property
    def score(self) -> PointScore:
        """Precision, recall and F1 of this frame's points (what ``point_scores`` gives for it)."""
        return score_of(self.predicted, self.truth, list(self.matches), self.rule)


def as_plan(frames: Any, truth: GroundTruth) -> FramePlan:
    """The frames shown, as a plan: a ``FramePlan``, anything carrying one (``VideoFrames``), or bare times."""
    plan = frames if isinstance(frames, FramePlan) else getattr(frames, "plan", None)
    if plan is None:
        plan = truth.plan_at(frames)
    if not plan.times:
        raise ValueError("no sampled frames: pass the frames (or times) the model was shown")
    return plan


def match_frames(
    predicted: Iterable[Point], truth: GroundTruth, frames: Any, radius: float | None = None
) -> list[FrameMatch]:
    """The predicted points matched with the truth on each frame shown, in time order.

    ``frames`` is the plan of the frames shown (``FramePlan``, ``ItemResult.plan``, or ``VideoFrames``:
    the truth is read on exactly those frames, ``GroundTruth.at_plan``) or a list of sample times in
    seconds (each read on its nearest frame). Predicted points are snapped to the nearest sample time
    (``snap_times``); points without a time are ignored. With masks in the truth a pair counts by
    Molmo2's rule (``mask_matches``), else within ``radius`` pixels (``match_points``; by default
    ``distance_threshold(truth.width, truth.height)``, 5% of the frame's diagonal).
    """
    if radius is None:
        radius = distance_threshold(truth.width, truth.height)
    check_distance(radius, "radius")
    plan = as_plan(frames, truth)
    sample_times = sorted(plan.prompt_times)
    size = (truth.width, truth.height)
    predicted_by_time = group_by_time(snap_times(predicted, sample_times))
    truth_by_time = group_by_time(truth.at_plan(plan))
    matched = []
    for t in sample_times:
        frame = plan.frame_at(t)
        guesses, true_here = predicted_by_time.get(t, []), truth_by_time.get(t, [])
        masks = [truth.mask_of(frame, o.id) for o in true_here] if truth.masks else None
        if masks is not None:
            matches = mask_matches(guesses, true_here, masks, size)
        else:
            matches = match_points(guesses, true_here, radius)
        matched.append(
            FrameMatch(
                t,
                frame,
                tuple(guesses),
                tuple(true_here),
                None if masks is None else tuple(masks),
                tuple(matches),
                truth.rule,
            )
        )
    return matched


def video_point_scores(
    predicted: Iterable[Point], truth: GroundTruth, frames: Any, *, radius: float | None = None
) -> PointScore:
    """Precision, recall and F1 of a video's points, pooled over the frames shown (``match_frames``).

    Ids are ignored, as in ``point_scores``: each frame is matched on its own, and the counts added up.
    """
    return sum_scores(frame.score for frame in match_frames(predicted, truth, frames, radius))
