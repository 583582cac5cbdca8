"""Images and videos as Molmo2 sees them: upright RGB images, and the exact frames it is shown.

Why: a point that Molmo2 returns is only useful if it is drawn on the very pixels the model looked
at, at the time the model was told. One module per job:

* ``images``: ``load_image`` (upright by EXIF, RGB, huge photos decoded smaller or refused),
  ``image_size``, the size a reader's true points are given in, ``image_orientation`` (the stored size
  and EXIF orientation, for masks drawn on the stored pixels) and ``rgb_image`` (load_image's colour
  rule without the turn: 16-bit scaled, transparency on white).
* ``plan``: THE sampling rule (``frame_times``, ``planned_frames``: ``molmo_utils``' rule, no video
  needed) and ``FramePlan``, which frames a run showed, worked out once and carried.
* ``reader``: a video file's facts (``VideoInfo``, upright size and rotation), the frame on screen
  at each time, and the fast PyAV decoding, split between CPU cores; ``iter_video_frames``.
* ``fit``: whether the decoded frames fit in memory, asked before decoding, answered with settings
  that would fit.
* ``video``: what readers call: ``video_info``, ``plan_frames``, ``sample_frames`` (the frames
  ``chat`` shows, as ``VideoFrames``), ``frames_of`` (the frames of a plan, decoded again) and
  ``plan_for_times`` (the frames on screen at times no plan recorded).
* ``settings``: ``MediaSettings``, how media are shown (``fps``, ``max_frames``, ``max_crops``), the one
  object runs and trainings carry (``DEFAULT_MEDIA``: chat's); ``DEFAULT_MAX_CROPS``, the processor's
  crop count.

Every name is importable from ``molmo_nb_utils.media`` as before the split.
"""

from molmo_nb_utils.media.fit import MEMORY_SHARE
from molmo_nb_utils.media.images import MAX_IMAGE_PIXELS, image_orientation, image_size, load_image, rgb_image
from molmo_nb_utils.media.plan import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    TRACKING_FPS,
    FramePlan,
    frame_times,
    planned_frames,
)
from molmo_nb_utils.media.reader import VideoInfo, iter_video_frames
from molmo_nb_utils.media.settings import DEFAULT_MAX_CROPS, DEFAULT_MEDIA, MediaSettings
from molmo_nb_utils.media.video import (
    VideoFrames,
    frames_of,
    plan_for_times,
    plan_frames,
    sample_frames,
    video_info,
)

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_MAX_CROPS",
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MEDIA",
    "MAX_IMAGE_PIXELS",
    "MEMORY_SHARE",
    "TRACKING_FPS",
    "FramePlan",
    "MediaSettings",
    "VideoFrames",
    "VideoInfo",
    "frame_times",
    "frames_of",
    "image_orientation",
    "image_size",
    "iter_video_frames",
    "load_image",
    "plan_for_times",
    "plan_frames",
    "planned_frames",
    "rgb_image",
    "sample_frames",
    "video_info",
]
