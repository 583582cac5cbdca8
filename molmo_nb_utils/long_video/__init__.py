"""Long videos: track and count through a whole video in overlapping windows, one id per object.

Why: Molmo2 is shown at most a few hundred frames per question, and a GPU holds fewer; a match, a
lab recording or an hour of a shop camera is longer. One concern a module:

* ``windows``: windows that fit the frame budget and, by the memory planner, the GPU
  (``plan_windows``), and the one place a window's frames are picked (``window_frames``);
* ``stitching``: the windows' tracks joined at their overlaps by optimal assignment on point
  distance, or on SAM 2 mask overlap where masks are given (``stitch_windows``);
* ``running``: the whole run, window by window, each answer kept in a resumable results file
  (``track_video``);
* ``answer``: the result, which works where a short clip's answer does (``LongVideoAnswer``);
* ``pictures``: the windows on a timeline, with the tracks (``plot_windows``).

The lesson is ``12_long_videos.ipynb``.
"""

from molmo_nb_utils.long_video.answer import LongVideoAnswer
from molmo_nb_utils.long_video.pictures import plot_windows
from molmo_nb_utils.long_video.running import track_video
from molmo_nb_utils.long_video.stitching import (
    GATE_FRACTION,
    MASK_IOU_GATE,
    Border,
    Stitched,
    Window,
    stitch,
    stitch_windows,
)
from molmo_nb_utils.long_video.windows import DEFAULT_OVERLAP_S, WindowPlan, plan_windows, window_frames

__all__ = [
    "DEFAULT_OVERLAP_S",
    "GATE_FRACTION",
    "MASK_IOU_GATE",
    "Border",
    "LongVideoAnswer",
    "Stitched",
    "Window",
    "WindowPlan",
    "plan_windows",
    "plot_windows",
    "stitch",
    "stitch_windows",
    "track_video",
    "window_frames",
]
