"""Ask a served Molmo2 through the OpenAI API and get the same ``Answer`` as ``chat``.

How ``transformers serve`` (5.25) builds a request, and what ``server_chat`` sends so that it matches ``chat``:

* **Prompt.** The server renders the model's chat template on the messages (an ``image_url`` item becomes an
  image, ``video_url`` a video, text stays text) and calls the processor, as ``chat`` does.
* **Images** go as lossless PNG data URLs of the images ``load_image`` made (upright RGB), so the server decodes
  the very pixels ``chat`` gives the processor. ``max_crops`` goes as a processor argument
  (``chat_template_kwargs``).
* **Videos.** Left to itself the server would decode the file (only with torchcodec installed), take 32 frames
  (``num_frames=32``, Molmo2's processor rule, not molmo_utils') and write frame start times in the prompt. So
  the client samples the frames with ``sample_frames`` and sends them: the ``video_url`` is the list of the
  frames' PNG data URLs (transformers takes a list of images as a video's frames), with ``do_sample_frames=False``
  and ``video_metadata`` (the prompt times), so the model is told exactly the times ``chat`` tells it. The
  ``Answer`` carries those frames. transformers serve 5.25 fails on any video for Molmo2 (it reads an audio track
  from every video, see ``molmo2_video``): start it with ``video_fix=True``; an unfixed server's failure is
  reported as such, never mapped onto frames it was not shown.
* **Generation.** The server starts from the model's generation config with at least 1024 new tokens; the client
  sends ``max_tokens`` (``chat``'s ``max_new_tokens``, 256 by default) and greedy decoding (``do_sample=False``)
  with any other ``generate`` argument in ``generation_config``.
* **Text.** The server decodes without special tokens, as ``chat`` does, but does not strip: its text often
  starts with a space. ``server_chat`` strips it, as ``chat`` strips. A streamed answer is decoded token by token
  (tokenizers' ``DecodeStream``): the same text for any answer that is valid UTF-8, which a trained model writes;
  bytes that never form a character (a random test model writes such) are dropped there, where ``chat`` shows ``�``.
"""

from __future__ import annotations

import io
import json
import math
import sys
from base64 import b64encode
from dataclasses import dataclass
from typing import Any

import numpy as np
import openai
from PIL import Image

from molmo_nb_utils.asking import DEFAULT_MAX_NEW_TOKENS, Answer, _check_messages, _load_media
from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.media import DEFAULT_FPS, DEFAULT_MAX_FRAMES, MediaSettings, VideoFrames
from molmo_nb_utils.serving.launch import ServerError

# Arguments of ``chat`` that cannot travel to a server: objects, not settings.
_LOCAL_ONLY = (
    "streamer",
    "logits_processor",
    "stopping_criteria",
    "prefix_allowed_tokens_fn",
    "assistant_model",
)


@dataclass(frozen=True)
class Reply:
    """What the server sent back for one question: the ``Answer``, its text as sent, the prompt length."""

    answer: Answer
    raw_text: str
    prompt_tokens: int


def data_url(image: Image.Image) -> str:
    """A lossless PNG data URL of ``image``: the server decodes these very pixels."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + b64encode(buffer.getvalue()).decode("ascii")


def _frames(video: VideoFrames) -> list[str]:
    return [data_url(Image.fromarray(frame)) for frame in video.frames]


def _metadata(video: VideoFrames) -> dict[str, Any]:
    """``VideoFrames.metadata()`` as JSON: the same numbers, so the server writes the same prompt times."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in video.metadata().items()}


def _openai_messages(messages: list[dict], images: list, videos: list[VideoFrames]) -> list[dict]:
    """The messages in the OpenAI format, each image and video replaced by what the server is sent."""
    images, videos = iter(images), iter(videos)
    out = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            items = []
            for item in content:
                if item["type"] == "image":
                    items.append({"type": "image_url", "image_url": {"url": data_url(next(images))}})
                elif item["type"] == "video":
                    items.append({"type": "video_url", "video_url": {"url": _frames(next(videos))}})
                else:
                    items.append({"type": "text", "text": item["text"]})
            content = items
        out.append({"role": message["role"], "content": content})
    return out


def _generation_config(generate_kwargs: dict[str, Any]) -> str:
    """``chat``'s generate arguments as the server's ``generation_config`` (JSON); greedy unless told."""
    local = sorted(set(generate_kwargs) & set(_LOCAL_ONLY))
    if local:
        raise TypeError(
            f"{', '.join(local)} cannot be sent to a server (it is a Python object, not a setting): use it with "
            "chat() in process. server_chat(stream=True) prints the answer as the server writes it."
        )
    settings = {"do_sample": False, **generate_kwargs}
    try:
        return json.dumps(settings, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"generate arguments must be plain numbers, strings or lists to travel: {err}"
        ) from None


def served_model(client: openai.OpenAI) -> str:
    """The name of the model the server serves (``/v1/models``), when it serves one."""
    try:
        names = [entry.id for entry in client.models.list().data]
    except openai.APIError as err:
        raise _server_error(err, client, None, has_video=False) from None
    if len(names) == 1:
        return names[0]
    if not names:
        raise ServerError(f"The server at {client.base_url} lists no model: start it with one (make serve).")
    raise ServerError(
        f"The server at {client.base_url} serves several models, {names}: pass model=one of them."
    )


def ask_server(
    client: openai.OpenAI,
    messages: list[dict] | dict,
    *,
    model: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    stream: bool = False,
    fps: float | None = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_crops: int | None = None,
    **generate_kwargs,
) -> Reply:
    """``server_chat``, with the text as the server sent it and the prompt length it reported."""
    if isinstance(messages, dict):
        messages = [messages]
    messages = _check_messages(messages)
    max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
    media = MediaSettings(fps, max_frames, max_crops)
    extra_body: dict[str, Any] = {"generation_config": _generation_config(generate_kwargs)}
    images, videos = _load_media(messages, media)  # the package's limits, before anything is sent
    processor_kwargs: dict[str, Any] = media.images_kwargs() if images else {}
    if videos:
        processor_kwargs.update(
            do_sample_frames=False, num_frames=None, video_metadata=[_metadata(v) for v in videos]
        )
    if processor_kwargs:
        extra_body["chat_template_kwargs"] = processor_kwargs
    request = {
        "model": model or served_model(client),
        "messages": _openai_messages(messages, images, videos),
        "max_tokens": max_new_tokens,
        "extra_body": extra_body,
    }
    try:
        if stream:
            text, prompt_tokens = _streamed(client, request)
        else:
            completion = client.chat.completions.create(**request)
            text = completion.choices[0].message.content or ""
            prompt_tokens = completion.usage.prompt_tokens if completion.usage else 0
    except openai.APIError as err:
        raise _server_error(err, client, request["model"], has_video=bool(videos)) from None
    answer = Answer(text.strip(), images=images, videos=videos, prompt_tokens=prompt_tokens)
    return Reply(answer, text, prompt_tokens)


def _streamed(client: openai.OpenAI, request: dict) -> tuple[str, int]:
    """Print the answer as the server writes it (as ``chat(stream=True)`` does); return it and the prompt length."""
    parts, prompt_tokens, shown = [], 0, ""
    chunks = client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    for chunk in chunks:
        if chunk.usage is not None:
            prompt_tokens = chunk.usage.prompt_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
                text = choice.delta.content if shown else choice.delta.content.lstrip()  # as chat strips
                shown += text
                print(text, end="", flush=True, file=sys.stdout)
    print(flush=True)
    return "".join(parts), prompt_tokens


def server_chat(
    client: openai.OpenAI,
    messages: list[dict] | dict,
    *,
    model: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    stream: bool = False,
    fps: float | None = DEFAULT_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_crops: int | None = None,
    **generate_kwargs,
) -> Answer:
    """Ask a served Molmo2 (an ``openai.OpenAI`` client) what ``chat`` would ask; return the same ``Answer``.

    ``messages``, ``max_new_tokens``, ``stream``, ``fps``, ``max_frames``, ``max_crops`` and the ``generate``
    arguments mean what they mean for ``chat`` (greedy by default). ``model=None`` asks the model the server
    serves. Images and video frames are loaded here, with the package's rules and limits, and sent as they are
    (see the module's docstring), so ``points()``, ``tracks()`` and the drawings use what the model was shown.
    ``prompt_tokens`` is the server's count; ``visual_tokens`` is 0 (a server does not report it).
    """
    return ask_server(
        client,
        messages,
        model=model,
        max_new_tokens=max_new_tokens,
        stream=stream,
        fps=fps,
        max_frames=max_frames,
        max_crops=max_crops,
        **generate_kwargs,
    ).answer


def _detail(err: openai.APIError) -> str:
    """The server's own words about the error, from its JSON body (``detail``, ``error``) or its text."""
    body = err.body
    if isinstance(body, dict):
        body = body.get("detail") or body.get("error") or body.get("message") or body
        if isinstance(body, dict):
            body = body.get("message") or json.dumps(body)
    return str(body if body else err.message).strip()


def _server_error(
    err: openai.APIError, client: openai.OpenAI, model: str | None, *, has_video: bool
) -> ServerError:
    """A clear ``ServerError`` for what went wrong between the client and the server."""
    where = str(client.base_url).rstrip("/")
    if isinstance(err, openai.APITimeoutError):
        seconds = (
            client.timeout
            if isinstance(client.timeout, (int, float))
            else getattr(client.timeout, "read", None)
        )
        limit = (
            f"within {seconds:g} s"
            if isinstance(seconds, (int, float)) and math.isfinite(seconds)
            else "in time"
        )
        return ServerError(
            f"The server at {where} did not answer {limit}. On a CPU, or with many video frames, an answer can take "
            "minutes: give the client a longer timeout (openai.OpenAI(..., timeout=600)), or ask for less "
            "(fewer frames with fps=/max_frames=, a shorter answer with max_new_tokens=)."
        )
    if isinstance(err, openai.APIConnectionError):
        return ServerError(
            f"No server answered at {where}: is it running, on that host and port? Start one with `make serve` "
            "(it prints its address) or start_server(), and give the client that base_url, ending in /v1."
        )
    detail = _detail(err)
    status = getattr(err, "status_code", None)
    if status == 404:
        return ServerError(
            f"The server at {where} has no chat completions endpoint (HTTP 404, {detail}): an OpenAI-compatible "
            "server's base_url ends in /v1, e.g. http://127.0.0.1:8000/v1."
        )
    if status in (401, 403):
        return ServerError(f"The server at {where} refused the client's API key (HTTP {status}): {detail}")
    if status == 400 and model is not None and ("pinned" in detail or "names no model" in detail):
        try:
            serves = repr(served_model(client))
        except ServerError:
            serves = "another model"
        return ServerError(
            f"The server at {where} does not serve {model!r}; it serves {serves}. Pass model=None (the model it "
            f"serves) or start a server for {model!r}. The server said: {detail}"
        )
    if status == 500 and has_video:
        return ServerError(
            f"The server at {where} failed on the video (HTTP 500: {detail}). transformers serve 5.25 reads an "
            "audio track from every video it is given for Molmo2, and Molmo2's frames have none: start the server "
            "with the fix, `make serve VIDEO_FIX=1` or start_server(video_fix=True) (see "
            "molmo_nb_utils/serving/molmo2_video.py), ask about the video in process with chat(), or serve with "
            "vLLM (lesson 13). The server's log says more."
        )
    if status == 500:
        return ServerError(
            f"The server at {where} failed while answering (HTTP 500: {detail}). A generate argument it cannot use "
            "is the usual cause (check what you passed besides the messages); the server's log says which."
        )
    if status == 503:
        return ServerError(
            f"The server's model process at {where} stopped (HTTP 503: {detail}): restart the server."
        )
    if status is None:  # an error the server sent in the middle of a streamed answer
        return ServerError(f"The server at {where} stopped the answer with an error: {detail}")
    return ServerError(f"The server at {where} refused the request (HTTP {status}): {detail}")
