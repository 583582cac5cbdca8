"""Video ground truth: every object's centre (and, where given, its mask) on every frame it is seen.

The sample videos in ``input/`` come with ``input/ground_truth/<video>.json``; ``load_ground_truth``
reads one into a ``GroundTruth``, and ``GroundTruth.at_plan`` puts it on the frames a model was shown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from molmo_nb_utils.evaluation.rules import DISTANCE_RULE, MASK_RULE
from molmo_nb_utils.grounding import Point, time_to_frame
from molmo_nb_utils.masks.geometry import Mask, mask_from_coco
from molmo_nb_utils.media import FramePlan

__all__ = ["GroundTruth", "load_ground_truth", "shown_frames"]


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
        for t in plan.prompt_times:
            index = plan.frame_at(t)
            if not 0 <= index < self.num_frames:
                raise ValueError(
                    f"frame index {index} is outside this video's frames 0..{self.num_frames - 1}: "
                    "were the frames sampled from another video?"
                )
            out.extend(Point(p.id, p.x, p.y, time=float(t)) for p in frames.get(index, []))
        return out


def shown_frames(plan: FramePlan) -> dict[float, int]:
    """Prompt time -> video frame index of each frame shown, times in plan order: ``plan.frame_at`` of
    each of ``plan.prompt_times`` (a time repeated in the plan is one prompt entry, on its first frame)."""
    return {t: plan.frame_at(t) for t in plan.prompt_times}


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
