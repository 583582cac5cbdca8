"""Tracks against the truth on the frames shown: hits, whether each object kept one id, HOTA.

``score_points`` reads the per-frame matches of ``frames.match_frames``; HOTA, DetA and AssA are
computed by TrackEval (``hota_scores``), with Molmo2's binary similarity (allenai/molmo2
``olmo/eval/object_tracking_utils.py``, ``HOTAMetric``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import trackeval

from molmo_nb_utils.evaluation.frames import match_frames
from molmo_nb_utils.evaluation.rules import DISTANCE_RULE, distance_threshold
from molmo_nb_utils.evaluation.truth import GroundTruth
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.masks.geometry import Mask, inside

__all__ = ["TrackScore", "hota_scores", "score_points"]


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
    matched = match_frames(predicted, truth, frames, radius)
    size = (truth.width, truth.height)
    errors: list[float] = []
    hit_ids: dict[int, list[int]] = {}  # true object id -> predicted id of each hit, in time order
    hota_frames = []
    for frame in matched:
        guesses, true_here = frame.predicted, frame.truth
        errors.extend(d for _, _, d in frame.matches)
        for o in true_here:
            hit_ids.setdefault(o.id, [])
        for gi, oi, _ in frame.matches:
            hit_ids[true_here[oi].id].append(guesses[gi].id)
        first: dict[int, Point] = {}
        for g in guesses:
            first.setdefault(g.id, g)  # a track's first point at a time stands for it there
        tracked = list(first.values())
        hota_frames.append(
            (
                [o.id for o in true_here],
                [g.id for g in tracked],
                _similarity(tracked, true_here, frame.masks, radius, size),
            )
        )
    switches = sum(a != b for ids in hit_ids.values() for a, b in pairwise(ids))
    hota, deta, assa = hota_scores(hota_frames)
    hits = sum(len(frame.matches) for frame in matched)
    return TrackScore(
        times=len(matched),
        truth_objects=sum(len(frame.truth) for frame in matched),
        hits=hits,
        false_points=sum(len(frame.predicted) for frame in matched) - hits,
        mean_error_px=sum(errors) / len(errors) if errors else None,
        ids_per_object={oid: tuple(dict.fromkeys(ids)) for oid, ids in sorted(hit_ids.items())},
        id_switches=switches,
        hota=hota,
        deta=deta,
        assa=assa,
        rule=truth.rule,
    )
