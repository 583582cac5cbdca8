"""Ask Molmo2 about images and videos, and get an answer that knows what the model saw.

Why: Molmo2's points are coordinates on the images it was given, at the times of the video
frames it was shown. An answer that carries those images and frames (their sizes, prompt times
and frame indices) turns into pixels on the right picture in one call, with no re-sampling of the
video and no sizes passed by hand::

    answer = chat(model, processor, [user_message(video, text="Track the coins.")], fps=8)
    tracks = answer.tracks()                      # Points in pixels, on the frames shown
    frame_grid(answer.video, points=tracks)       # drawn on those very frames

Each request decodes its media once: ``chat`` samples a video with ``sample_frames`` (unless it
is given the ``VideoFrames`` of an earlier ``sample_frames`` call) and keeps the result.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from molmo_nb_utils.answer_display import ShortenedStreamer, shorten_for_display
from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.constrain import Question, as_constraint, with_constraint
from molmo_nb_utils.grounding import Point, parse_points, parse_tracks
from molmo_nb_utils.media import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    MediaSettings,
    VideoFrames,
    load_image,
    sample_frames,
)
from molmo_nb_utils.memory import next_setting_advice

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
)
# Tokens an answer may take unless told: a few dozen points, or a paragraph.
DEFAULT_MAX_NEW_TOKENS = 256
# The model copies frame times from the prompt, where they have one decimal: a time further than
# this from every frame it was shown is not one of those frames.
TIME_TOLERANCE_S = 0.1


class OutOfMemoryAdvice(RuntimeError):
    """The GPU ran out of memory during generation; the message says what to try next."""


def user_message(*media: Any, text: str | None = None) -> dict[str, Any]:
    """One user turn: the images and/or video, then the question, as Molmo2's chat format wants.

    Each of ``media`` is an image (a PIL image, an RGB array, or the path or URL of an image file),
    a video (the path or URL of a video file, told apart by its suffix, e.g. ``.mp4``, or the
    ``VideoFrames`` of ``sample_frames``) or a ready content item (a dict). The chat template puts
    all media before the text, whatever the order here. The question is the keyword ``text``.
    """
    if text is None:
        question = next((m for m in media if isinstance(m, str) and _looks_like_text(m)), None)
        example = repr(question) if question is not None else "'Point to the coins.'"
        raise TypeError(
            f"user_message needs the question as text=..., after the pictures: user_message(image, text={example})"
            + (f"; {question!r} was given as a picture or video" if question is not None else "")
        )
    if not isinstance(text, str):
        raise TypeError(f"text must be the question as a str, got {type(text).__name__}")
    content = [_content_item(item) for item in media]
    return {"role": "user", "content": [*content, {"type": "text", "text": text}]}


def _looks_like_text(item: str) -> bool:
    """A question rather than a file: no file of that name, and not a URL or a name with an image or
    video suffix ("Point to the coins." ends in a dot, not in a suffix)."""
    if urllib.parse.urlsplit(item).scheme.lower() in ("http", "https") or Path(item).exists():
        return False
    suffix = Path(item).suffix.lower()
    return " " in item or not suffix or suffix == "."


def _content_item(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        if item.get("type") not in ("image", "video", "text"):
            raise ValueError(f"a content item needs 'type' 'image', 'video' or 'text', got {item!r}")
        return item
    if isinstance(item, VideoFrames):
        return {"type": "video", "video": item}
    if isinstance(item, Image.Image):
        return {"type": "image", "image": item}
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise ValueError(
                f"an image array must be (height, width, 3) uint8 RGB, got {item.shape} {item.dtype}"
            )
        return {"type": "image", "image": Image.fromarray(item)}
    if isinstance(item, (str, os.PathLike)):
        suffix = Path(urllib.parse.urlsplit(str(item)).path).suffix.lower()
        kind = "video" if suffix in VIDEO_SUFFIXES else "image"
        return {"type": kind, kind: item}
    raise TypeError(
        f"cannot tell whether {type(item).__name__} is an image or a video: pass a PIL image, a path or "
        "URL, the result of sample_frames, or a content dict such as {'type': 'video', 'video': path}"
    )


class Answer(str):
    """Molmo2's answer text (a ``str``, so code that expects text keeps working) and what it saw.

    ``images``: the images as the processor got them (upright RGB), in prompt order ("Image 1", ...);
    ``videos``: the ``VideoFrames`` shown of each video (frames, prompt times, frame indices);
    ``prompt_tokens``: the prompt's length; ``visual_tokens``: how much of it is image/video patches.
    IPython shows a long answer shortened (``shorten_for_display``); the ``str`` keeps every character.
    """

    images: tuple[Image.Image, ...]
    videos: tuple[VideoFrames, ...]
    prompt_tokens: int
    visual_tokens: int

    def __new__(
        cls,
        text: str,
        *,
        images: tuple[Image.Image, ...] | list[Image.Image] = (),
        videos: tuple[VideoFrames, ...] | list[VideoFrames] = (),
        prompt_tokens: int = 0,
        visual_tokens: int = 0,
    ) -> Answer:
        answer = super().__new__(cls, text)
        answer.images, answer.videos = tuple(images), tuple(videos)
        answer.prompt_tokens, answer.visual_tokens = prompt_tokens, visual_tokens
        return answer

    @property
    def text(self) -> str:
        """The answer as a plain ``str``."""
        return str.__str__(self)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        """How IPython shows an answer (``display(answer)``, a cell's last line): its text, shortened."""
        printer.text(shorten_for_display(self.text))

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of each image, in prompt order."""
        return [image.size for image in self.images]

    @property
    def video(self) -> VideoFrames | None:
        """The frames shown of the video (Molmo2 takes at most one per question), or None."""
        return self.videos[0] if self.videos else None

    def points(self, *, skipped: list[str] | None = None) -> list[Point]:
        """The ``<points>`` of the answer in pixels: on the right image, or on the video frames shown.

        Video points get the exact time of the frame they were given at (see ``VideoFrames``); a
        time that matches no frame shown is skipped, and with a ``skipped`` list the reason is noted.
        """
        if self.video is not None:
            found = parse_points(self, self.video.size, video=True, skipped=skipped)
            return _on_frames(found, self.video, skipped)
        if self.images:
            return parse_points(self, self.image_sizes, video=False, skipped=skipped)
        raise ValueError("This answer was about text only: there is no image or video to place points on.")

    def tracks(self, *, skipped: list[str] | None = None) -> list[Point]:
        """The ``<tracks>`` of the answer in pixels of the video, at the exact times of the frames shown."""
        if self.video is None:
            raise ValueError(
                "Tracks are answers about a video, and this answer had none: ask with a video, or use points()."
            )
        return _on_frames(parse_tracks(self, self.video.size, skipped=skipped), self.video, skipped)


def _on_frames(points: list[Point], video: VideoFrames, skipped: list[str] | None) -> list[Point]:
    """Points snapped to the frame times shown; points at no such time are left out (and noted)."""
    plan = video.plan
    kept = []
    for p in points:
        shown = plan.times[plan.position(p.time)]
        if abs(shown - p.time) <= TIME_TOLERANCE_S:
            kept.append(replace(p, time=shown))
        elif skipped is not None:
            skipped.append(f"time {p.time:g} s (point {p.id}): no frame was shown at that time")
    return kept


# ---------------------------------------------------------------------------------------------
# From messages to model inputs


def _media_items(messages: list[dict]) -> Iterator[dict]:
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            yield from (item for item in content if item.get("type") in ("image", "video"))


def _check_messages(messages: Any) -> list[dict]:
    """Molmo2's chat format: turns alternate user, assistant, user, ...; no system turn."""
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    ):
        raise TypeError(
            "messages must be a list of {'role': ..., 'content': ...} dicts, e.g. "
            "[user_message(image, text='What is this?')]"
        )
    roles = [m["role"] for m in messages]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if not roles or roles != expected or roles[-1] != "user":
        raise ValueError(
            f"Molmo2's chat format takes turns that alternate user, assistant, user, ... and end with the "
            f"user's question; got the roles {roles}. It has no system role: put instructions in the first "
            "user message."
        )
    if sum(item["type"] == "video" for item in _media_items(messages)) > 1:
        raise ValueError("Molmo2 takes at most one video per question: ask about each video separately.")
    return messages


def _load_media(messages: list[dict], media: MediaSettings) -> tuple[list[Image.Image], list[VideoFrames]]:
    """The images (upright RGB) and videos (frames shown) of the messages, in the order they appear."""
    images, videos = [], []
    for item in _media_items(messages):
        kind = item["type"]
        source = next((item[key] for key in (kind, "path", "url") if item.get(key) is not None), None)
        if source is None:
            raise ValueError(
                f"the {kind} item {item!r} has no source: give {{'type': '{kind}', '{kind}': ...}}"
            )
        if kind == "image":
            images.append(load_image(source))
        elif isinstance(source, VideoFrames):
            videos.append(source)  # already decoded: the model sees exactly these frames
        else:  # per-video knobs, in our names or in molmo_utils' own
            item_fps = item.get("fps", item.get("max_fps", media.fps))
            item_max = item.get("max_frames", item.get("num_frames", media.max_frames))
            videos.append(sample_frames(source, item_max, item_fps))
    return images, videos


def _placeholders(messages: list[dict]) -> list[dict]:
    """The messages with each image or video reduced to its type, for the chat template."""
    out = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [{"type": c["type"]} if c.get("type") in ("image", "video") else c for c in content]
        out.append({"role": message["role"], "content": content})
    return out


def _prompt(processor, messages: list[dict], media: MediaSettings):
    """One conversation's prompt text (the chat template's) and the images and video frames it names."""
    messages = _check_messages(messages)
    images, videos = _load_media(messages, media)
    text = processor.apply_chat_template(_placeholders(messages), tokenize=False, add_generation_prompt=True)
    return text, images, videos


def _media_kwargs(images: list, videos: list[VideoFrames], media: MediaSettings) -> dict[str, Any]:
    """The processor's arguments for these images (one list per prompt when batched) and videos."""
    kwargs: dict[str, Any] = {"return_tensors": "pt"}
    if images:
        kwargs["images"] = images
        kwargs.update(media.images_kwargs())
    if videos:
        kwargs["videos"] = [video.frames for video in videos]
        kwargs["video_metadata"] = [video.metadata() for video in videos]
        kwargs["do_sample_frames"] = False  # sampled already, by molmo_utils' rule
    return kwargs


def _prepare(processor, messages: list[dict], media: MediaSettings):
    text, images, videos = _prompt(processor, messages, media)
    return processor(text=text, **_media_kwargs(images, videos, media)), images, videos


def prepare_inputs(
    processor,
    messages: list[dict],
    *,
    fps: float | None = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_crops: int | None = None,
):
    """Turn chat messages into model inputs: the real prompt tokens, pixels and video frame times.

    ``fps`` and ``max_frames`` choose a video's frames (see ``sample_frames``) and trade detail for
    memory; ``max_crops`` does the same for images (see ``MediaSettings``).
    """
    return _prepare(processor, messages, MediaSettings(fps, max_frames, max_crops))[0]


def visual_token_count(model_or_config, inputs) -> int:
    """How many prompt positions are image/video patches: what the visual input costs."""
    config = getattr(model_or_config, "config", model_or_config)
    return int((inputs["input_ids"] == config.image_patch_id).sum())


def _oom_advice(model, messages: list[dict], media: MediaSettings) -> str:
    """The next setting to try, from the settings this request actually used."""
    kinds = {item["type"] for item in _media_items(messages)}
    if getattr(model, "is_loaded_in_4bit", False):
        precision = "4bit"
    elif getattr(model, "is_loaded_in_8bit", False):
        precision = "8bit"
    else:
        precision = {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(model.dtype), "fp32")
    advice = next_setting_advice(
        fps=(media.fps or DEFAULT_FPS) if "video" in kinds else None,
        max_frames=media.max_frames if "video" in kinds else None,
        max_crops=media.crops if "image" in kinds else None,
        precision=precision,
    )
    return f"The GPU ran out of memory while answering. {advice}"


def _generate(model, inputs, max_new_tokens: int, generate_kwargs: dict, advice: Callable[[], str]):
    """``model.generate`` on the processor's inputs (greedy unless told); out of GPU memory becomes
    ``OutOfMemoryAdvice`` with ``advice()``, so a reader learns what to change, not where it failed."""
    max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
    for key in ("pixel_values", "pixel_values_videos"):
        if key in inputs:  # cast first: the processor's float32 copy never reaches the GPU
            inputs[key] = inputs[key].to(model.dtype)
    inputs = inputs.to(model.device)
    generate_kwargs.setdefault("do_sample", False)
    try:
        with torch.inference_mode():
            return model.generate(**inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
    except torch.OutOfMemoryError:
        del inputs
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemoryAdvice(advice()) from None


def _question(images: list, videos: list[VideoFrames]) -> Question:
    """What a constrained answer may point at: the frames shown of the video, else the images."""
    if videos:
        return Question(timestamps=tuple(videos[0].timestamps))
    return Question(images=len(images))


def _constrained(model, processor, constrain, questions, max_new_tokens, generate_kwargs) -> dict:
    constraint = as_constraint(constrain)
    if constraint is None:
        return generate_kwargs
    max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
    return with_constraint(model, processor, constraint, questions, max_new_tokens, generate_kwargs)


def chat(
    model,
    processor,
    messages: list[dict] | dict,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    stream: bool = False,
    fps: float | None = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_crops: int | None = None,
    constrain: str | bool | None = None,
    **generate_kwargs,
) -> Answer:
    """Ask Molmo2 about the images/videos in ``messages``; return the ``Answer`` (text + what it saw).

    ``messages`` is a list of turns, e.g. ``[user_message(image, text="How many coins?")]`` (a single
    turn may be passed alone). With ``stream=True`` the answer is printed as it is written (a long one
    shortened, see ``answer_display``; the ``Answer`` returned is whole). Greedy decoding by default, so
    answers are reproducible. ``fps``, ``max_frames`` and ``max_crops`` say how the media are shown
    (``MediaSettings``; a run passes its own as ``**media.keywords()``). ``constrain="points"``, ``"count"``
    or ``"tracks"`` keeps the answer in that task's shape of Molmo2's grammar (``True``: free text whose
    tags are closed), so its points always parse; an answer that already did is not changed
    (``molmo_nb_utils.constrain``).
    """
    media = MediaSettings(fps, max_frames, max_crops)
    if isinstance(messages, dict):
        messages = [messages]
    inputs, images, videos = _prepare(processor, messages, media)
    generate_kwargs = _constrained(
        model, processor, constrain, [_question(images, videos)], max_new_tokens, generate_kwargs
    )
    prompt_tokens, visual_tokens = int(inputs["input_ids"].shape[1]), visual_token_count(model, inputs)
    if stream:
        generate_kwargs["streamer"] = ShortenedStreamer(processor.tokenizer)
    output = _generate(
        model,
        inputs,
        max_new_tokens,
        generate_kwargs,
        lambda: _oom_advice(model, messages, media),
    )
    text = processor.decode(output[0, prompt_tokens:], skip_special_tokens=True).strip()
    return Answer(
        text, images=images, videos=videos, prompt_tokens=prompt_tokens, visual_tokens=visual_tokens
    )


# ---------------------------------------------------------------------------------------------
# Several questions in one generate call


def chat_batch(
    model,
    processor,
    conversations: list[list[dict] | dict],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    fps: float | None = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_crops: int | None = None,
    constrain: str | bool | None = None,
    **generate_kwargs,
) -> list[Answer]:
    """Ask several questions at once, in one ``generate`` call; one ``Answer`` per conversation.

    Why: on a GPU one question leaves most of the chip idle while it writes one token at a time;
    a batch writes a token for every question in the same step. The prompts are padded on the left
    (the processor's own batching), so every answer continues right where its prompt ends.
    Greedy answers equal ``chat``'s one by one in float32 (a test checks it on the tiny model); in
    bfloat16 the padded shapes change the order of sums, so a rare token may differ.

    Molmo2's model cannot take image questions and video questions in one batch (their visual
    features do not line up): ask each kind in its own batch. ``constrain`` is ``chat``'s, each answer
    kept to its own question's images or frames.
    """

    media = MediaSettings(fps, max_frames, max_crops)
    conversations = [[c] if isinstance(c, dict) else c for c in conversations]
    if not conversations:
        return []
    prepared = [_prompt(processor, messages, media) for messages in conversations]
    kinds = {("video" if v else "image" if i else "text") for _, i, v in prepared}
    if len(kinds) > 1:
        raise ValueError(
            f"one batch mixes {' and '.join(sorted(kinds))} questions, which Molmo2 cannot answer together: "
            "ask each kind in its own batch"
        )
    images = [i for _, i, _ in prepared] if "image" in kinds else []
    videos = [video for _, _, vs in prepared for video in vs]
    inputs = processor(
        text=[text for text, _, _ in prepared],
        padding=True,
        padding_side="left",
        **_media_kwargs(images, videos, media),
    )
    width = int(inputs["input_ids"].shape[1])
    prompt_tokens = [int(n) for n in inputs["attention_mask"].sum(dim=1)]
    visual_tokens = [visual_token_count(model, {"input_ids": row}) for row in inputs["input_ids"]]
    every_message = [m for c in conversations for m in c]
    questions = [_question(images, videos) for _, images, videos in prepared]
    generate_kwargs = _constrained(model, processor, constrain, questions, max_new_tokens, generate_kwargs)

    def advice() -> str:
        return _oom_advice(model, every_message, media) + " Or ask fewer questions per batch."

    output = _generate(model, inputs, max_new_tokens, generate_kwargs, advice)
    return [
        Answer(
            processor.decode(output[k, width:], skip_special_tokens=True).strip(),
            images=images,
            videos=videos,
            prompt_tokens=prompt_tokens[k],
            visual_tokens=visual_tokens[k],
        )
        for k, (_, images, videos) in enumerate(prepared)
    ]
