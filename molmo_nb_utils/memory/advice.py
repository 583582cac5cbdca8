"""Which settings to use: the largest that fits a GPU, the next step after running out of memory.

``suggest_settings`` tries video and image settings, largest first, on ``estimate_memory``;
``next_setting_advice`` is what ``chat`` says after a CUDA out-of-memory error; ``choose_quantization``
what ``load_model`` picks for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from molmo_nb_utils.media import (
    DEFAULT_FPS,
    DEFAULT_MAX_CROPS,
    DEFAULT_MAX_FRAMES,
    MediaSettings,
    frame_times,
)
from molmo_nb_utils.memory.configs import GIB, PRECISION_RANK, check_counts, load_config
from molmo_nb_utils.memory.inference import MemoryEstimate, estimate_memory
from molmo_nb_utils.memory.tokens import PROMPT_TEXT_TOKENS, image_plan, image_tokens_estimate, video_tokens
from molmo_nb_utils.vision_chunks import VISION_CHUNK

__all__ = [
    "FPS_STEPS",
    "MAX_CROPS_STEPS",
    "MAX_FRAMES_STEPS",
    "T4_GIB",
    "T4_MEMORY_BYTES",
    "Suggestion",
    "choose_quantization",
    "gpu_budget_gb",
    "next_setting_advice",
    "suggest_settings",
]

# The one budget for a free Colab T4 (README, 06, 09; planning on a machine without a GPU). NVIDIA sells it as
# 16 GB; with ECC on, as on Colab, CUDA reports 15,843,721,216 bytes ("15110 MBytes" in a published T4
# deviceQuery, not measured here: no T4 in this project's CI). That is 14.76 GiB (2**30 bytes, the unit
# torch.cuda and these estimates use), or 15.8 GB (10**9 bytes), and the whole estimate must fit in it.
T4_MEMORY_BYTES = 15_843_721_216
T4_GIB = T4_MEMORY_BYTES / GIB
# Settings to try, largest first: video sampling rate and frame cap, image crops (the released defaults lead).
FPS_STEPS, MAX_FRAMES_STEPS = (DEFAULT_FPS, 1, 0.5), (DEFAULT_MAX_FRAMES, 128, 64, 32, 16, 8)
MAX_CROPS_STEPS = (DEFAULT_MAX_CROPS, 6, 4, 2, 1)


@dataclass(frozen=True)
class Suggestion:
    """The largest setting that fits. Pass fps as the video processor's max_fps and max_frames as its
    num_frames (frames = min(max_frames, duration x fps)), max_crops as the image processor's max_crops."""

    fps: float | None
    max_frames: int | None
    max_crops: int | None
    precision: str
    estimate: MemoryEstimate
    fits: bool
    advice: str

    @property
    def media(self) -> MediaSettings:
        """The suggested settings as runs and trainings take them: ``run_dataset(..., media=s.media)``."""
        video = self.max_frames is not None
        return MediaSettings(
            self.fps if video else DEFAULT_FPS,
            self.max_frames if video else DEFAULT_MAX_FRAMES,
            self.max_crops,
        )


def suggest_settings(
    config: Any,
    budget_gb: float,
    *,
    precision: str = "bf16",
    duration_s: float | None = None,
    image_count: int = 0,
    image_size: tuple[int, int] | None = None,
    new_tokens: int = 256,
    candidates_fps: tuple[float, ...] = FPS_STEPS,
    candidates_max_frames: tuple[int, ...] = MAX_FRAMES_STEPS,
    candidates_max_crops: tuple[int, ...] = MAX_CROPS_STEPS,
    vision_chunk: int | None = VISION_CHUNK,
    kv_offload: bool = False,
) -> Suggestion:
    """Most frames (a video of `duration_s` seconds) or crops (`image_count` images of `image_size` (height,
    width); worst case when None) whose estimate fits `budget_gb`; if none fits, which precision would.
    `vision_chunk` and `kv_offload` as in estimate_memory."""
    check_counts(precision, image_count=image_count, new_tokens=new_tokens)
    if not budget_gb > 0:
        raise ValueError(f"budget_gb must be > 0 GiB, got {budget_gb}")
    if duration_s is not None and (not duration_s > 0 or image_count):
        raise ValueError(
            f"give a video duration_s > 0 or an image_count, not both: {duration_s}, {image_count}"
        )
    if not (candidates_fps and candidates_max_frames and candidates_max_crops):
        raise ValueError("candidate lists must not be empty")
    c = load_config(config)
    options = []  # (preference, fps, max_frames, max_crops, estimate)
    for fps in candidates_fps if duration_s else [None]:
        for max_frames in candidates_max_frames if duration_s else [None]:
            for max_crops in candidates_max_crops if image_count else [None]:
                tokens, crops, frames = PROMPT_TEXT_TOKENS, 0, 0
                if duration_s:  # the frames shown, by media's one rule, and their times' tokens
                    times = frame_times(duration_s, fps=fps, max_frames=max_frames)
                    frames, tokens = len(times), tokens + video_tokens(times)
                if image_count:
                    one_tokens, one_crops = image_plan(*(image_size or (None, None)), max_crops)
                    tokens, crops = tokens + image_count * one_tokens, image_count * one_crops
                est = estimate_memory(c, precision=precision, prompt_tokens=tokens, new_tokens=new_tokens,
                                      num_crops=crops, num_frames=frames, vision_chunk=vision_chunk,
                                      kv_offload=kv_offload)  # fmt: skip
                preference = (frames, fps or 0, max_frames or 0, max_crops or 0)
                options.append((preference, fps, max_frames, max_crops, est))
    options.sort(key=lambda option: option[0], reverse=True)
    fitting = [option for option in options if option[4].total_gb <= budget_gb]
    _, fps, max_frames, max_crops, est = (fitting or options[-1:])[0]
    what = f"a text prompt ({est.prompt_tokens:,} tokens)"
    if max_frames:
        what = f"fps={fps:g}, max_frames={max_frames} ({est.num_frames} frames, {est.prompt_tokens:,} tokens)"
    elif max_crops:
        what = f"max_crops={max_crops} ({est.num_crops} crops, {est.prompt_tokens:,} tokens)"
    need = f"about {est.total_gb:.1f} GiB"
    if fitting:
        advice = f"Fits: {what}: {need} of {budget_gb:.1f} GiB, peak during {est.peak_phase}."
        return Suggestion(fps, max_frames, max_crops, precision, est, True, advice)
    advice = f"Does not fit: even {what} needs {need} at {precision}, more than {budget_gb:.1f} GiB."
    for smaller in [p for p in ("bf16", "8bit", "4bit") if PRECISION_RANK[p] > PRECISION_RANK[precision]]:
        kwargs = dict(
            duration_s=duration_s, image_count=image_count, image_size=image_size, new_tokens=new_tokens,
            vision_chunk=vision_chunk, kv_offload=kv_offload,
        )  # fmt: skip
        other = suggest_settings(c, budget_gb, precision=smaller, candidates_fps=candidates_fps,
                                 candidates_max_frames=candidates_max_frames,
                                 candidates_max_crops=candidates_max_crops, **kwargs)  # fmt: skip
        if other.fits:
            advice += f" Load the model in {smaller} instead: {other.advice.removeprefix('Fits: ')}"
            return Suggestion(fps, max_frames, max_crops, precision, est, False, advice)
    advice += (
        " No precision fits: use a GPU with more memory, a shorter clip, fewer images or a smaller Molmo2."
    )
    return Suggestion(fps, max_frames, max_crops, precision, est, False, advice)


def gpu_budget_gb(*, free: bool = False) -> float | None:
    """Total memory of the current CUDA device in GiB, what a whole estimate (CUDA context included) must fit;
    with free=True, what is free right now. None without a GPU."""
    if not torch.cuda.is_available():
        return None
    free_bytes, total_bytes = torch.cuda.mem_get_info()
    return (free_bytes if free else total_bytes) / GIB


def next_setting_advice(
    fps: float | None, max_frames: int | None, max_crops: int | None, precision: str
) -> str:
    """What to try after a CUDA out-of-memory error, one step at a time: fewer frames, a lower frame rate,
    fewer crops, then 4-bit weights. Pass None for the knobs that do not apply."""
    check_counts(precision)
    if max_frames is not None and max_frames > 8:
        step = f"fewer frames: max_frames={max(f for f in MAX_FRAMES_STEPS if f < max_frames)}"
    elif fps is not None and fps > 0.5:
        step = f"a lower frame rate: fps={max(f for f in FPS_STEPS if f < fps):g}"
    elif max_crops is not None and max_crops > 1:
        step = f"fewer image crops: max_crops={max(n for n in MAX_CROPS_STEPS if n < max_crops)}"
    elif precision != "4bit":
        step = "loading the model in 4-bit (bitsandbytes NF4), about half the memory of bf16 weights"
    else:
        return (
            "Out of GPU memory even at the smallest settings: restart the runtime to free memory, or use a "
            "shorter clip, fewer images or a GPU with more memory."
        )
    return f"Out of GPU memory. Free it (gc.collect(); torch.cuda.empty_cache()), then try {step}."


def choose_quantization(config: Any, budget_gb: float, *, half: str = "bf16") -> str | None:
    """The lightest-touch precision whose estimate for one full-size image fits ``budget_gb``.

    Returns None (16-bit, no quantization), "8bit" or "4bit"; "4bit" when nothing fits, as the best
    chance. One image at the processor's crops and its low-resolution view (9) is the smallest job every
    notebook runs; videos need more, which suggest_settings plans.
    """
    if not budget_gb > 0:
        raise ValueError(f"budget_gb must be > 0 GiB, got {budget_gb}")
    tokens = image_tokens_estimate(max_crops=DEFAULT_MAX_CROPS) + PROMPT_TEXT_TOKENS
    crops = DEFAULT_MAX_CROPS + 1  # and the low-resolution view
    for precision in (half, "8bit"):
        if (
            estimate_memory(config, precision=precision, prompt_tokens=tokens, num_crops=crops).total_gb
            <= budget_gb
        ):
            return None if precision == half else precision
    return "4bit"
