"""Cut a long video into overlapping windows that each fit one answer: the frame budget and the GPU.

Why: Molmo2 is shown at most ``max_frames`` frames per question (384 in training; each costs about
88 prompt tokens), and a GPU holds fewer: on a T4, Molmo2-4B takes about 22 s of video at the
8 frames a second tracking wants (``memory.estimate_memory``). A longer video is asked about one
window at a time. ``plan_windows`` picks the longest window that fits both and says why; windows
start on the sampling grid (multiples of ``1 / fps``), so every window shows the frames that one
answer over the whole video would show at that rate, and neighbours share the frames of their
overlap exactly: the times where ``stitching`` joins them.

``window_frames`` is the one place a window's frames are picked: a slice of the whole video's frame
plan (``media.plan_frames``, the package's one sampling rule), written in the window's own time,
since Molmo2 was trained on clips that start at 0 s.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.media import DEFAULT_MAX_FRAMES, TRACKING_FPS, FramePlan, frame_times
from molmo_nb_utils.memory import PROMPT_TEXT_TOKENS, estimate_memory, video_tokens_estimate

# Shared seconds between neighbouring windows: at 8 fps, 16 frames on which to join the tracks.
DEFAULT_OVERLAP_S = 2.0
# Tokens a window's answer may take: about 10 a point (an id and two 3-digit coordinates) and 5 a
# time, so 16 s at 8 fps with 5 objects is about 7,000.
DEFAULT_TRACK_TOKENS = 8192
_EPS = 1e-6


@dataclass(frozen=True)
class WindowPlan:
    """The windows of one video: (start, end) in seconds, and why they are this long.

    ``window_seconds`` and ``overlap_seconds`` are on the sampling grid (multiples of ``1 / fps``);
    ``frames`` is the most frames one window shows; ``estimate_gb`` the memory planner's peak for
    such a window (None without a model config), ``budget_gb`` the GPU memory it had to fit.
    """

    duration: float
    fps: float
    window_seconds: float
    overlap_seconds: float
    windows: tuple[tuple[float, float], ...]
    frames: int
    max_frames: int
    estimate_gb: float | None = None
    budget_gb: float | None = None
    reason: str = ""

    def __len__(self) -> int:
        return len(self.windows)

    def __str__(self) -> str:
        spans = ", ".join(f"{a:g}-{b:g}" for a, b in self.windows[:6]) + (", ..." if len(self) > 6 else "")
        return f"{len(self)} window{'s' if len(self) != 1 else ''} ({spans} s). {self.reason}"


def _seconds(value: Any, name: str, *, zero_ok: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        raise ValueError(f"{name} must be a number of seconds {'>= 0' if zero_ok else '> 0'}, got {value!r}")
    return float(value)


def _window_estimate(config: Any, steps: int, fps: float, precision: str, new_tokens: int) -> float:
    """The planner's peak GiB for a window of ``steps`` sampling steps (``steps + 1`` frames)."""
    estimate = estimate_memory(
        config,
        precision=precision,
        prompt_tokens=PROMPT_TEXT_TOKENS + video_tokens_estimate(steps + 1, fps=fps),  # times k / fps
        new_tokens=new_tokens,
        num_frames=steps + 1,
    )
    return estimate.total_gb


def plan_windows(
    duration: float,
    *,
    fps: float = TRACKING_FPS,
    window_seconds: float | None = None,
    overlap_seconds: float = DEFAULT_OVERLAP_S,
    max_frames: int = DEFAULT_MAX_FRAMES,
    config: Any = None,
    budget_gb: float | None = None,
    precision: str = "bf16",
    new_tokens: int = DEFAULT_TRACK_TOKENS,
) -> WindowPlan:
    """Overlapping windows over a ``duration``-second video, each one answer at ``fps``.

    ``window_seconds=None`` takes the longest window whose frames fit ``max_frames`` and, given a
    model ``config`` (a ``KNOWN_CONFIGS`` id or ``model.config``) and ``budget_gb``, whose estimated
    peak fits that GPU memory at ``precision``. A given ``window_seconds`` is kept (on the grid);
    one past the frame budget is refused, one past the GPU budget is warned about. Windows start
    every ``window_seconds - overlap_seconds``; the last ends at the end of the video.
    """
    duration = _seconds(duration, "duration")
    fps = _seconds(fps, "fps")
    overlap = _seconds(overlap_seconds, "overlap_seconds", zero_ok=True)
    max_frames = positive_int(max_frames, "max_frames")
    if max_frames < 2:
        raise ValueError(
            f"max_frames must be >= 2: a window shows its first and last frame, got {max_frames}"
        )
    overlap_steps = round(overlap * fps)
    most_steps = max_frames - 1  # a window of n steps shows n + 1 frames: both ends included
    budget_note = ""
    if window_seconds is not None:
        window = _seconds(window_seconds, "window_seconds")
        if overlap >= window:
            raise ValueError(
                f"overlap_seconds={overlap:g} is not shorter than window_seconds={window:g}: the windows "
                "would never move on. Use an overlap of a few seconds, shorter than the window."
            )
        steps = max(1, round(window * fps))
        if steps > most_steps:
            raise ValueError(
                f"a {window:g} s window at {fps:g} fps shows {steps + 1} frames, more than max_frames={max_frames}: "
                f"use window_seconds={most_steps / fps:g} or less (or a lower fps)"
            )
        why = f"Windows of {steps / fps:g} s as asked"
    else:
        steps = most_steps
        why = f"Windows of {steps / fps:g} s: the most that max_frames={max_frames} allows at {fps:g} fps"
        if config is not None and budget_gb is not None:
            if _window_estimate(config, steps, fps, precision, new_tokens) > budget_gb:
                low, high = 1, steps  # the longest window that fits: binary search on steps
                while low < high:
                    middle = (low + high + 1) // 2
                    if _window_estimate(config, middle, fps, precision, new_tokens) <= budget_gb:
                        low = middle
                    else:
                        high = middle - 1
                steps = low
                why = f"Windows of {steps / fps:g} s: the longest that fits {budget_gb:.1f} GiB of GPU memory"
    if steps <= overlap_steps:
        raise ValueError(
            f"overlap_seconds={overlap:g} is not shorter than the {steps / fps:g} s window: the windows would "
            "never move on. Use a shorter overlap or a longer window."
        )
    estimate = None
    if config is not None:
        estimate = _window_estimate(config, steps, fps, precision, new_tokens)
        budget_note = f"; about {estimate:.1f} GiB at {precision} (estimate)"
        if budget_gb is not None:
            budget_note += f" of {budget_gb:.1f} GiB"
            if estimate > budget_gb:
                budget_note += ": more than the GPU has, expect out-of-memory errors"
                warnings.warn(
                    f"a {steps / fps:g} s window needs about {estimate:.1f} GiB, more than {budget_gb:.1f} GiB: "
                    "use a shorter window_seconds (or None, to let plan_windows choose)",
                    stacklevel=2,
                )
    windows = _spans(duration, steps, overlap_steps, fps)
    frames = max(len(frame_times(b - a, fps=fps, max_frames=10**9)) if b > a else 1 for a, b in windows)
    reason = (
        f"{why}, {overlap_steps / fps:g} s of overlap, {frames} frames a window at {fps:g} fps{budget_note}."
    )
    if len(windows) == 1:
        reason = f"The whole {duration:g} s fit one answer: {frames} frames at {fps:g} fps{budget_note}."
    return WindowPlan(
        duration=duration,
        fps=fps,
        window_seconds=steps / fps,
        overlap_seconds=overlap_steps / fps,
        windows=windows,
        frames=frames,
        max_frames=max_frames,
        estimate_gb=estimate,
        budget_gb=budget_gb,
        reason=reason,
    )


def _spans(duration: float, steps: int, overlap_steps: int, fps: float) -> tuple[tuple[float, float], ...]:
    """(start, end) of each window: starts on the grid every ``steps - overlap_steps`` steps."""
    spans = []
    k = 0
    while True:
        first = k * (steps - overlap_steps)
        start, end = first / fps, min((first + steps) / fps, duration)
        spans.append((start, end))
        if end >= duration - _EPS:
            return tuple(spans)
        k += 1


def window_frames(whole: FramePlan, start: float, end: float) -> FramePlan:
    """The frames of the window ``start``-``end`` s: the slice of the whole video's plan ``whole``
    (``plan_frames(video, 10**9, fps)``), with times counted from ``start`` (the window's own clock).

    The one place this package picks a window's frames; ``track_video`` adds ``start`` back to
    the answer's times.
    """
    chosen = [
        (t, i) for t, i in zip(whole.times, whole.indices, strict=True) if start - _EPS <= t <= end + _EPS
    ]
    if not chosen:
        raise ValueError(f"no frame of the video is shown between {start:g} and {end:g} s")
    times = tuple(round(t - start, 9) for t, _ in chosen)
    return FramePlan(times, tuple(i for _, i in chosen), whole.size)
