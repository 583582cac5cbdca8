"""Prompt tokens: counted by the real processor, or estimated for planning before the media exist.

Images are tiled by the processor's own code (``compute_crop_geometry``); video frames are sampled
by media's one rule (``frame_times``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from transformers.models.molmo2.image_processing_molmo2 import compute_crop_geometry

from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.media import DEFAULT_FPS, DEFAULT_MAX_CROPS, DEFAULT_MAX_FRAMES, frame_times

__all__ = [
    "PROMPT_TEXT_TOKENS",
    "count_prompt_tokens",
    "image_tokens_estimate",
    "video_prompt_tokens",
    "video_tokens_estimate",
]

# Planning allowance for the chat template and a question, in tokens.
PROMPT_TEXT_TOKENS = 100


def image_tokens_estimate(
    height: int | None = None, width: int | None = None, *, max_crops: int = DEFAULT_MAX_CROPS
) -> int:
    """Prompt tokens of one image, for planning (count_prompt_tokens gives the real number). Uses the
    processor's own tiling code; without a size, the worst case over all tilings."""
    return image_plan(height, width, max_crops)[0]


def image_plan(height: int | None, width: int | None, max_crops: int) -> tuple[int, int]:
    """(tokens, crops) of one image with the released processor settings: 378 px crops, 14 px patches, 2x2
    pooling, 4-patch overlap margins, column tokens after high-res rows only, start/end tokens per view."""
    positive_int(max_crops, "max_crops")
    if height is None or width is None:  # a canvas of exactly h x w crops for every allowed tiling
        tilings = [(h, w) for h in range(1, max_crops + 1) for w in range(1, max_crops // h + 1)]
        return max(image_plan(h * 266 + 112, w * 266 + 112, max_crops) for h, w in tilings)
    positive_int(height, "height"), positive_int(width, "width")
    tiling_h, tiling_w, canvas_h, canvas_w = compute_crop_geometry(height, width, max_crops, [4, 4], 378, 14)
    rows, cols = math.ceil(canvas_h // 14 / 2), math.ceil(canvas_w // 14 / 2)
    low_res = 1 + 14 * 14 + 1  # the global crop: start, 14x14 pooled patches, end
    return low_res + 1 + rows * (cols + 1) + 1, tiling_h * tiling_w + 1


def video_tokens_estimate(num_frames: int, *, fps: float = DEFAULT_FPS) -> int:
    """Prompt tokens of `num_frames` frames sampled `fps` apart, for planning before the video exists: per
    frame 81 pooled patches (27x27 patches, 3x3 pooling), start and end tokens, and its timestamp text
    (" 12.5 " is one token per digit, dot and space in Qwen's tokenizer)."""
    if num_frames < 0 or not fps > 0:
        raise ValueError(f"num_frames must be >= 0 and fps > 0, got {num_frames} and {fps}")
    return video_tokens([k / fps for k in range(num_frames)])


def video_tokens(times: Sequence[float]) -> int:
    """Prompt tokens of the frames shown at these prompt times (see ``video_tokens_estimate``)."""
    return sum(81 + 2 + len(f"{t:.1f}") + (2 if k else 1) for k, t in enumerate(times))


def count_prompt_tokens(processor: Any, messages_or_inputs: Any, **template_kwargs: Any) -> int:
    """The real prompt length: input_ids of what the processor returned (a BatchFeature or dict), or of chat
    messages, which go through processor.apply_chat_template (extra keyword arguments are passed on)."""
    if isinstance(messages_or_inputs, Mapping):
        if "input_ids" not in messages_or_inputs:
            raise ValueError("processor output has no 'input_ids': pass what the processor returned")
        ids = messages_or_inputs["input_ids"]
    elif isinstance(messages_or_inputs, list):
        if processor is None:
            raise ValueError("a processor is needed to count the tokens of chat messages")
        kwargs = dict(tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt")
        ids = processor.apply_chat_template(messages_or_inputs, **{**kwargs, **template_kwargs})["input_ids"]
    else:
        kind = type(messages_or_inputs).__name__
        raise ValueError(f"expected chat messages (a list) or processor output (a dict), got {kind}")
    if hasattr(ids, "shape"):
        return int(ids.shape[-1])
    return len(ids[0]) if len(ids) and isinstance(ids[0], (list, tuple)) else len(ids)


def video_prompt_tokens(
    processor: Any,
    seconds: float,
    *,
    fps: float | None = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    video_fps: float = 30.0,
) -> int:
    """Prompt tokens of a question about a ``seconds``-long video, counted by the real processor.

    Frames are sampled as ``molmo_utils`` samples a real file (``fps`` up to ``max_frames``, first and
    last frame included); they are blank, which costs the same tokens as a real video of any size.
    """
    times = np.asarray(frame_times(seconds, fps=fps, max_frames=max_frames))
    frames = np.zeros((len(times), 28, 28, 3), np.uint8)
    metadata = {
        "fps": video_fps,
        "total_num_frames": int(seconds * video_fps),
        "duration": seconds,
        "frames_indices": times * video_fps,
    }
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(
        text=text, videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
    )
    return count_prompt_tokens(processor, inputs)
