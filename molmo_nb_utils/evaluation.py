"""Compare Molmo2's video points and tracks with known ground truth.

The sample videos in ``input/`` come with ``input/ground_truth/<video>.json``: every object's
centre in every frame where it can be seen. These helpers read that file into ``Point``s and
score an answer with a simple hit rate: is there a predicted point within ``radius`` pixels of
each true object, at each time the model was shown?
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from molmo_nb_utils.grounding import Point, group_by_time, snap_times, time_to_frame


@dataclass(frozen=True)
class GroundTruth:
    """Every visible object's centre, one ``Point`` per object per frame (``time`` = frame time)."""

    points: list[Point]
    fps: float
    width: int
    height: int
    num_frames: int

    def at(self, times: Iterable[float]) -> list[Point]:
        """The truth at the given times (e.g. the frames the model saw), each on its nearest frame."""
        frames: dict[int, list[Point]] = {}
        for p in self.points:
            frames.setdefault(time_to_frame(p.time, self.fps), []).append(p)
        out = []
        for t in times:
            for p in frames.get(time_to_frame(t, self.fps, self.num_frames), []):
                out.append(Point(p.id, p.x, p.y, time=float(t)))
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
    """How well predicted points match the truth at the sampled times."""

    times: int  # sampled times compared
    truth_objects: int  # true (time, object) pairs
    hits: int  # true objects with a predicted point within the radius
    false_points: int  # predicted points matched to no true object
    mean_error_px: float | None  # mean distance of the hits

    @property
    def hit_rate(self) -> float:
        return self.hits / self.truth_objects if self.truth_objects else 0.0

    def __str__(self) -> str:
        err = "-" if self.mean_error_px is None else f"{self.mean_error_px:.1f} px"
        return (
            f"{self.hits}/{self.truth_objects} true positions hit ({self.hit_rate:.0%}) over {self.times} times, "
            f"{self.false_points} extra points, mean error of hits {err}"
        )


def score_points(
    predicted: Iterable[Point], truth: GroundTruth, times: Sequence[float], *, radius: float = 30.0
) -> TrackScore:
    """Match predicted to true positions at each time, nearest pairs first, ignoring ids.

    Ids are ignored on purpose: a tracker that follows every object but numbers them differently
    still finds them. ``times`` are the times of the frames the model was shown; each predicted
    point is snapped to the nearest of them (see ``snap_times``).
    """
    if radius <= 0:
        raise ValueError(f"radius must be > 0 pixels, got {radius}")
    predicted_by_time = group_by_time(snap_times(predicted, times))
    hits = truth_count = false_points = 0
    errors: list[float] = []
    for t in times:
        true_here = truth.at([t])
        guesses = list(predicted_by_time.get(float(t), []))
        truth_count += len(true_here)
        pairs = sorted(
            (math.dist((g.x, g.y), (o.x, o.y)), gi, oi)
            for gi, g in enumerate(guesses)
            for oi, o in enumerate(true_here)
        )
        used_g, used_o = set(), set()
        for dist, gi, oi in pairs:
            if dist > radius or gi in used_g or oi in used_o:
                continue
            used_g.add(gi)
            used_o.add(oi)
            errors.append(dist)
        hits += len(used_o)
        false_points += len(guesses) - len(used_g)
    mean = sum(errors) / len(errors) if errors else None
    return TrackScore(len(times), truth_count, hits, false_points, mean)
