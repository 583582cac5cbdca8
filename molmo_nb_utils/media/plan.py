"""Which frames of a video Molmo2 is shown: THE sampling rule, and the plan that carries its result.

The rule is AllenAI's ``molmo_utils`` (what the model cards use):

* sample times ``0, 1/fps, 2/fps, ...`` while below the video's duration, plus the duration
  itself (the end of the video); past ``max_frames`` of them, ``max_frames`` times spread evenly
  from 0 to the duration instead (``molmo_utils.vision_process.sample_times``);
* each time shows the frame whose display interval contains it (``reader.frames_on_screen``), so
  the end of the video is the last frame, and two times may show the same frame;
* the prompt tells the model each frame's sample time (written with one decimal), not the
  frame's own start time: at 29.97 fps the sample at 0.5 s shows frame 14, and the model reads
  "0.5".

A ``FramePlan`` holds the outcome for one video (times, frame indices, size), worked out once and
carried: answers, results, drawings, scores and training examples read it, never sample again.
This module needs no video: the memory planner counts frames with it before one exists.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from molmo_utils.vision_process import sample_times

from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.grounding import nearest_index

__all__ = ["DEFAULT_FPS", "DEFAULT_MAX_FRAMES", "TRACKING_FPS", "FramePlan", "frame_times", "planned_frames"]

# What Molmo2 was trained with: 2 frames per second for QA and pointing, up to 384 frames.
# Tracking works best with more frames per second (the model card uses 8).
DEFAULT_FPS = 2.0
DEFAULT_MAX_FRAMES = 384
TRACKING_FPS = 8.0


@dataclass(frozen=True)
class FramePlan:
    """Which frames of a video Molmo2 is shown, worked out once and carried from then on.

    ``times[k]`` is the time written before frame ``k`` in the prompt (the model answers in these
    times), ``indices[k]`` the index of that frame in the video, ``size`` the (width, height) of the
    upright frames shown: what point coordinates scale to. Answers, results, drawings, scores and
    training examples read these, never sample again.
    """

    times: tuple[float, ...]
    indices: tuple[int, ...]
    size: tuple[int, int]

    def __post_init__(self) -> None:
        if len(self.times) != len(self.indices):
            raise ValueError(
                f"a frame plan needs one index per time, got {len(self.times)} and {len(self.indices)}"
            )

    def position(self, time: float) -> int:
        """Which frame shown is at ``time``: its place ``k`` in the plan, the one whose prompt time is
        nearest (the first of equal times: a time repeated in the plan is one prompt entry)."""
        return nearest_index(time, self.times)

    def frame_at(self, time: float) -> int:
        """The video frame index shown at ``time``: THE answer to "which frame is at t" for a run's times.

        Molmo2 answers in the prompt's sample times, and the frame shown at a sample time is the one on
        screen then, which need not be ``round(t * fps)`` (at 29.97 fps the sample at 0.5 s shows frame
        14). Scores, exports, drawings and ground truth all read the frame here.
        """
        return self.indices[self.position(time)]

    @property
    def prompt_times(self) -> tuple[float, ...]:
        """Each prompt time once, in plan order (the last sample of a short video may repeat a time)."""
        return tuple(dict.fromkeys(float(t) for t in self.times))


def frame_times(
    seconds: float, *, fps: float | None = DEFAULT_FPS, max_frames: int = DEFAULT_MAX_FRAMES
) -> list[float]:
    """The prompt times of the frames Molmo2 is shown of a ``seconds``-long video: THE sampling rule.

    ``0, 1/fps, 2/fps, ...`` below the duration, plus the duration itself; past ``max_frames`` of
    them (or with ``fps=None``), ``max_frames`` times spread evenly from 0 to the duration
    (``molmo_utils.vision_process.sample_times``, the rule the model cards use).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not 0 < seconds < math.inf:
        raise ValueError(f"need seconds > 0 (the video's duration), got {seconds!r}")
    check_fps(fps)
    budget = positive_int(max_frames, "max_frames")
    return [float(t) for t in sample_times(seconds, budget, "uniform_last_frame", max_fps=fps)]


def planned_frames(
    seconds: float, *, fps: float | None = DEFAULT_FPS, max_frames: int = DEFAULT_MAX_FRAMES
) -> int:
    """How many frames Molmo2 sees of a ``seconds``-long video (``frame_times``' rule), without the video."""
    return len(frame_times(seconds, fps=fps, max_frames=max_frames))


def check_fps(fps: Any) -> None:
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps < math.inf
    ):
        raise ValueError(f"fps must be a number > 0 (or None to spread the frames evenly), got {fps!r}.")


def frame_budget(max_frames: int | None, num_frames: int | None) -> int:
    if max_frames is not None and num_frames is not None and max_frames != num_frames:
        raise ValueError(
            f"give max_frames or num_frames (the same thing), not both: {max_frames}, {num_frames}"
        )
    budget = next((n for n in (max_frames, num_frames) if n is not None), DEFAULT_MAX_FRAMES)
    return positive_int(budget, "max_frames")
