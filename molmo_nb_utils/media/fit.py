"""Will the frames fit in memory? Asked before decoding, answered with settings that would fit.

The frames of one video are decoded into one array allocated up front (never a list of frames and
then a stacked copy). When that array would not fit in the memory available, ``frames_array`` says
so before anything is decoded, with an ``fps``, ``max_frames`` or size that would fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import psutil

from molmo_nb_utils.media.plan import planned_frames
from molmo_nb_utils.media.reader import VideoInfo

__all__ = ["MEMORY_SHARE", "available_memory", "frames_array"]

# Share of the available memory the decoded frames of one video may take; the processor, the model
# and the drawings need the rest.
MEMORY_SHARE = 0.8


def available_memory() -> int:
    """Bytes of memory this process can still use without swapping (what the OS says is available)."""
    return int(psutil.virtual_memory().available)


def frames_array(info: VideoInfo, times: Sequence[float], fps: float | None, budget: int) -> np.ndarray:
    """The one array the frames are decoded into; a clear MemoryError when it would not fit.

    The message gives what would fit: fewer frames (``max_frames``), a lower ``fps``, or the video
    scaled down. Nothing is wrong with the file, so it never says "corrupt".
    """
    frame_bytes = info.width * info.height * 3
    need = len(times) * frame_bytes
    available = available_memory()
    allowed = int(available * MEMORY_SHARE)
    if need <= allowed:
        try:
            return np.empty((len(times), info.height, info.width, 3), np.uint8)
        except (
            MemoryError
        ):  # the OS said it was free, the allocator disagrees: the setting is not the problem
            raise MemoryError(
                f"{len(times)} frames of {info.path.name} at {info.width}x{info.height} need {need / 1e9:.2f} GB, "
                "which the system would not allocate just now: free some memory (other notebooks, "
                "gc.collect()) and try again. The file itself is fine."
            ) from None
    fit = allowed // frame_bytes
    ways = []
    if fit >= 1:
        ways.append(f"max_frames={fit}" + (f" (at fps={fps:g})" if fps else ""))
        lower = _fps_that_fits(info.duration, fit) if fps else None
        if lower is not None and lower < fps:
            ways.append(f"fps={lower:g}")
    scale = math.sqrt(allowed / need)
    width, height = int(info.width * scale) // 2 * 2, int(info.height * scale) // 2 * 2
    if width >= 16 and height >= 16:
        ways.append(
            f"the video scaled down to {width}x{height} first, e.g. "
            f"`ffmpeg -i {info.path.name} -vf scale={width}:{height} smaller.mp4`"
        )
    raise MemoryError(
        f"{len(times)} frames of {info.path.name} at {info.width}x{info.height} need "
        f"{need / 1e9:.2f} GB of memory, but only {allowed / 1e9:.2f} GB can be used "
        f"({MEMORY_SHARE:.0%} of the {available / 1e9:.2f} GB available now). "
        + ("These would fit: " + "; or ".join(ways) + ". " if ways else "Free some memory first. ")
        + "The file itself is fine."
    )


def _fps_that_fits(duration: float, frames: int) -> float | None:
    """The highest fps, in steps of 0.1 (then 0.01), whose sampling of ``duration`` takes at most ``frames``."""
    for step in (0.1, 0.01):
        fps = math.floor(max(frames - 1, 0) / max(duration, 1e-9) / step) * step
        while fps >= step - 1e-12:
            if planned_frames(max(duration, 1e-9), fps=fps, max_frames=10**9) <= frames:
                return round(fps, 2)
            fps -= step
    return None
