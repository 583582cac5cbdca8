"""The frames Molmo2 is shown of a video, decoded once: ``sample_frames``, ``plan_frames``, ``frames_of``.

``sample_frames`` returns the frames with their prompt times, their frame indices and the metadata
the processor is given, so one decode serves the model, the drawings and the scores. Tests compare
it with ``molmo_utils`` on generated videos of odd frame rates and durations.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from molmo_nb_utils.media.fit import frames_array
from molmo_nb_utils.media.plan import DEFAULT_FPS, FramePlan, check_fps, frame_budget, frame_times
from molmo_nb_utils.media.reader import (
    AvIndex,
    VideoInfo,
    check_video_file,
    frames_on_screen,
    index_video,
    read_frames,
    unreadable,
)

__all__ = ["VideoFrames", "frames_of", "plan_for_times", "plan_frames", "sample_frames", "video_info"]


@dataclass(frozen=True, eq=False)
class VideoFrames:
    """The frames Molmo2 is shown from one video, and what the processor is told about them.

    ``plan`` says which frames they are (prompt times, video frame indices, size);
    ``timestamps[k]`` is the time written before frame ``k`` in the prompt, ``indices[k]`` the
    index of that frame in the video. Unpacks as ``frames, timestamps = sample_frames(...)``.
    """

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB, upright
    plan: FramePlan
    info: VideoInfo

    @property
    def timestamps(self) -> list[float]:
        """The prompt time of each frame shown, in seconds."""
        return list(self.plan.times)

    @property
    def indices(self) -> list[int]:
        """The video frame index of each frame shown."""
        return list(self.plan.indices)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels: what point coordinates scale to."""
        return self.plan.size

    def __iter__(self) -> Iterator[Any]:
        return iter((self.frames, self.timestamps))

    def __repr__(self) -> str:
        times = ", ".join(f"{t:g}" for t in self.timestamps[:4]) + (
            ", ..." if len(self.timestamps) > 4 else ""
        )
        return (
            f"VideoFrames({len(self.timestamps)} frames of {self.info.path.name} at [{times}] s, "
            f"{self.info.width}x{self.info.height})"
        )

    def frame_at(self, time: float) -> int:
        """The video frame index shown at the sampled time nearest to ``time`` (``FramePlan.frame_at``)."""
        return self.plan.frame_at(time)

    def metadata(self) -> dict[str, Any]:
        """The ``video_metadata`` the processor turns into the prompt's frame times (molmo_utils' format)."""
        return {
            "total_num_frames": self.info.num_frames,
            "fps": self.info.fps,
            "duration": self.info.duration,
            "video_backend": "pyav",
            "frames_indices": np.asarray(self.timestamps, dtype=np.float64) * self.info.fps,
            "height": self.info.height,
            "width": self.info.width,
        }


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count, duration, upright size and rotation of a video (reads packet
    headers and decodes one frame)."""
    path = check_video_file(path)
    return index_video(path).info


def plan_frames(
    video: str | os.PathLike,
    max_frames: int | None = None,
    fps: float | None = DEFAULT_FPS,
    *,
    num_frames: int | None = None,
) -> FramePlan:
    """Which frames ``sample_frames`` shows of ``video`` (times, indices, size), without decoding them.

    Reads the packet headers only: what training and scoring need to put ground truth on the
    frames a run shows.
    """
    budget = frame_budget(max_frames, num_frames)
    check_fps(fps)
    index = index_video(check_video_file(video))
    return _frame_plan(index, fps, budget)


def plan_for_times(video: str | os.PathLike, times: Sequence[float]) -> FramePlan:
    """The frames of ``video`` on screen at ``times`` (seconds), by the rule ``sample_frames`` shows them.

    For times no plan of this collection recorded (an answer's times, a file's): each time gets the
    frame whose display interval contains it, as a sampled time does, not ``round(t * fps)``.
    """
    times = [float(t) for t in times]
    if not times or not all(t >= 0 for t in times):
        raise ValueError(f"need times >= 0 seconds, got {times[:5]}")
    index = index_video(check_video_file(video))
    return FramePlan(
        tuple(times), tuple(frames_on_screen(index, times)), (index.info.width, index.info.height)
    )


def sample_frames(
    video: str | os.PathLike,
    max_frames: int | None = None,
    fps: float | None = DEFAULT_FPS,
    *,
    num_frames: int | None = None,
) -> VideoFrames:
    """Decode the frames Molmo2 is shown of ``video`` at ``fps``, at most ``max_frames`` of them.

    The defaults are ``chat``'s (2 fps, 384 frames), so this is exactly what a question about the
    video shows the model; pass the result in a message to ask about it without decoding again.
    ``fps=None`` spreads ``max_frames`` frames evenly over the whole video. ``num_frames`` is
    ``molmo_utils``' name for ``max_frames``.
    """
    budget = frame_budget(max_frames, num_frames)
    check_fps(fps)
    path = check_video_file(video)
    index = index_video(path)
    return _decode(path, index, _frame_plan(index, fps, budget), fps)


def frames_of(video: str | os.PathLike, plan: FramePlan) -> VideoFrames:
    """Decode exactly the frames ``plan`` names: those a run showed (``ItemResult.plan``), not sampled again.

    Why: the plan was worked out once, when the model was asked; a picture or a score of that answer
    needs the same frames, whatever the settings are now. A plan that does not fit the video
    (another size, frame indices past its end) is refused: the file is not the one answered.
    """
    if not isinstance(plan, FramePlan):
        raise TypeError(
            f"frames_of takes a FramePlan (plan_frames, ItemResult.plan), got {type(plan).__name__}"
        )
    path = check_video_file(video)
    index = index_video(path)
    info = index.info
    outside = [i for i in plan.indices if not 0 <= i < info.num_frames]
    if tuple(plan.size) != (info.width, info.height) or outside:
        raise ValueError(
            f"{path.name} is not the video these frames were planned for (frames {plan.size[0]}x{plan.size[1]}"
            f"{f', up to index {max(outside)}' if outside else ''}; the video is {info.width}x{info.height} "
            f"with {info.num_frames} frames): was the file replaced? Ask about it again."
        )
    return _decode(path, index, plan, None)


def _decode(path: Path, index: AvIndex, plan: FramePlan, fps: float | None) -> VideoFrames:
    """The frames of ``plan``, decoded into one array (refused before decoding if it would not fit)."""
    frames = frames_array(index.info, plan.times, fps, len(plan.times))
    try:
        read_frames(path, index, plan.indices, frames)
    except MemoryError:
        raise
    except Exception as err:
        raise unreadable(path, err) from None
    return VideoFrames(frames, plan, index.info)


def _frame_plan(index: AvIndex, fps: float | None, max_frames: int) -> FramePlan:
    """The frames shown by the sampling rule: its times, and the frame on screen at each."""
    times = [float(t) for t in frame_times(index.info.duration, fps=fps, max_frames=max_frames)]
    indices = frames_on_screen(index, times)
    return FramePlan(tuple(times), tuple(indices), (index.info.width, index.info.height))
