"""How media are shown to Molmo2: one small frozen object that a run, a training and a score carry.

Why: the frames a video is shown at (``fps``, ``max_frames``) and the crops an image is cut into
(``max_crops``) decide what the model sees, what an answer's times and points mean, and what a
result or an adapter was made with. Passed loose, they went through eighteen signatures and could
drift apart; bundled, they are chosen once and carried, as transformers bundles each modality's
processor settings in one typed kwargs object (``Molmo2VideoProcessorKwargs``: ``max_fps``,
``num_frames``; ``Molmo2ImageProcessorKwargs``: ``max_crops``).

Readers still type the knobs where they ask one question (``chat(..., fps=8)``,
``sample_frames(video, fps=2, max_frames=64)``); runs and trainings take ``media=MediaSettings(...)``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from molmo_nb_utils.checks import positive_int, positive_int_or_none
from molmo_nb_utils.media.plan import DEFAULT_FPS, DEFAULT_MAX_FRAMES, FramePlan, check_fps
from molmo_nb_utils.media.video import VideoFrames, plan_frames, sample_frames

__all__ = ["DEFAULT_MAX_CROPS", "DEFAULT_MEDIA", "MediaSettings"]

# The most crops an image is cut into unless told: the released processors' max_crops (processor_config.json
# of Molmo2-4B and -8B), transformers' Molmo2ImageProcessor default, and the tiny model's.
DEFAULT_MAX_CROPS = 8


@dataclass(frozen=True)
class MediaSettings:
    """How the media of a question are shown to Molmo2: chosen once, carried by runs and trainings.

    ``fps`` and ``max_frames`` choose a video's frames (``frame_times``: ``fps`` apart, at most
    ``max_frames`` of them; ``fps=None`` spreads ``max_frames`` evenly over the video). ``max_crops`` caps
    the high-resolution crops an image is cut into (None: the processor's own, ``DEFAULT_MAX_CROPS``).
    Checked when made, so a bad value fails at the call that typed it, not an hour into a run.
    ``RunSettings`` and ``FineTuneSettings`` hold one; results and checkpoints record its three fields.
    """

    fps: float | None = DEFAULT_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    max_crops: int | None = None

    def __post_init__(self) -> None:
        check_fps(self.fps)
        object.__setattr__(self, "fps", None if self.fps is None else float(self.fps))
        object.__setattr__(self, "max_frames", positive_int(self.max_frames, "max_frames"))
        none_means = f"the processor's default, {DEFAULT_MAX_CROPS}"
        object.__setattr__(self, "max_crops", positive_int_or_none(self.max_crops, "max_crops", none_means))

    @property
    def crops(self) -> int:
        """The most crops an image is cut into: ``max_crops``, or the processor's default."""
        return DEFAULT_MAX_CROPS if self.max_crops is None else self.max_crops

    def keywords(self) -> dict[str, Any]:
        """The settings as ``chat``, ``chat_batch`` and ``prepare_inputs`` take them: ``chat(..., **media.keywords())``."""
        return asdict(self)

    def images_kwargs(self) -> dict[str, Any]:
        """What the processor is told about images (its ``images_kwargs``): ``max_crops`` when one was chosen."""
        return {} if self.max_crops is None else {"max_crops": self.max_crops}

    def plan(self, video: str | os.PathLike) -> FramePlan:
        """Which frames of ``video`` these settings show (``plan_frames``), without decoding them."""
        return plan_frames(video, self.max_frames, self.fps)

    def sample(self, video: str | os.PathLike) -> VideoFrames:
        """The frames of ``video`` these settings show, decoded (``sample_frames``)."""
        return sample_frames(video, self.max_frames, self.fps)


# chat's own: 2 fps, up to 384 frames, the processor's crops. Frozen, so one object serves as every default.
DEFAULT_MEDIA = MediaSettings()
