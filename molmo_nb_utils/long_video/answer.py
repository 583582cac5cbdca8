"""The answer over a whole video, joined from its windows: it works where a short clip's answer does.

``tracks()`` gives the joined tracks (global ids, the video's seconds, pixels), ``count`` the
distinct objects, ``plan`` the frames shown over the whole video (for ``score_points``),
``video`` those frames decoded (for ``render_tracks_video`` and ``frame_grid``: it decodes them
all, so for a long video pass ``plan`` to scores and the file to the renderer), and
``window_answer(k)`` one window's own ``Answer`` on its own frames (for pictures and SAM 2).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from molmo_nb_utils.asking import Answer
from molmo_nb_utils.dataset import ItemResult
from molmo_nb_utils.grounding import Point, count_points
from molmo_nb_utils.long_video.stitching import Stitched
from molmo_nb_utils.long_video.windows import WindowPlan, window_frames
from molmo_nb_utils.media import FramePlan, VideoFrames, VideoInfo, frames_of


@dataclass(frozen=True, eq=False)
class LongVideoAnswer:
    """Molmo2's tracks over a whole video, joined from the answers of overlapping windows.

    ``windows[k]`` is window k's record in the results file (its text, its tracks in the video's
    seconds with the window's own ids, the frames it was shown); ``stitched`` how they were joined
    (``stitched.borders`` says, per border, by which rule and which ids).
    """

    info: VideoInfo
    prompt: str
    window_plan: WindowPlan
    windows: tuple[ItemResult, ...]
    stitched: Stitched
    results_path: Path
    whole: FramePlan  # every frame the windows showed, in the video's seconds

    def tracks(self) -> list[Point]:
        """The joined tracks: global ids 1, 2, ... in order of first appearance, sorted by time."""
        return list(self.stitched.points)

    @property
    def count(self) -> int:
        """Distinct objects over the whole video (the count rule of 03_pointing, on the joined ids)."""
        return count_points(self.stitched.points)

    @property
    def plan(self) -> FramePlan:
        """The frames shown over the whole video (times in the video's seconds): what scores compare on."""
        return self.whole

    @functools.cached_property
    def video(self) -> VideoFrames:
        """Every frame shown over the whole video, decoded (refused clearly if it would not fit in memory)."""
        return frames_of(self.info.path, self.whole)

    def window_tracks(self) -> list[list[Point]]:
        """Each window's own tracks (its own ids), in the video's seconds: what was joined."""
        return [list(r.tracks) for r in self.windows]

    def window_answer(self, k: int) -> Answer:
        """Window ``k``'s answer on the frames it was shown, in the window's own time (as Molmo2 saw it)."""
        start, end = self.window_plan.windows[k]
        local = window_frames(self.whole, start, end)
        return Answer(self.windows[k].answer or "", videos=[frames_of(self.info.path, local)])

    def __str__(self) -> str:
        plan = self.window_plan
        lines = [
            f"{self.count} object{'s' if self.count != 1 else ''} tracked over {self.info.path.name} "
            f"({plan.duration:g} s) in {len(plan)} window{'s' if len(plan) != 1 else ''} of "
            f"{plan.window_seconds:g} s, {plan.overlap_seconds:g} s overlap, at {plan.fps:g} fps"
        ]
        lines += [f"  {border}" for border in self.stitched.borders]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"LongVideoAnswer({self.count} objects, {len(self.windows)} windows of {self.info.path.name})"
