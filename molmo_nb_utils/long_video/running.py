"""Track through a whole video: ask Molmo2 about each window, keep every answer, join the tracks.

Why each rule is here:

* each window's answer is one line of a results file, written with the dataset runner's own
  writer (``dataset.results``: one ``write``, forced to disk, a line cut off by a kill dropped on
  the next run), so a run killed after hours resumes at the first window not yet answered, and no
  window is asked twice or lost;
* every line carries the run's settings (model, weights, precision, prompt, fps, frame budget) and
  what the video file held: answers of another model, prompt or file are never mixed in (another
  file under the same name is asked again; another model or prompt is refused, or given its own
  default file);
* a window's frames are its slice of the whole video's frames (``windows.window_frames``) and
  are decoded only while that window is asked: a long video is never in memory at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from molmo_nb_utils.asking import Answer, chat, user_message
from molmo_nb_utils.dataset import ItemResult, RunSettings
from molmo_nb_utils.dataset.items import file_identity, same_file
from molmo_nb_utils.dataset.results import (
    append_line,
    check_settings,
    encode_line,
    latest,
    now,
    open_results,
    read_results,
)
from molmo_nb_utils.fingerprint import weights_precision
from molmo_nb_utils.long_video.answer import LongVideoAnswer
from molmo_nb_utils.long_video.stitching import GATE_FRACTION, stitch
from molmo_nb_utils.long_video.windows import (
    DEFAULT_OVERLAP_S,
    DEFAULT_TRACK_TOKENS,
    plan_windows,
    window_frames,
)
from molmo_nb_utils.masks.segmenting import segment
from molmo_nb_utils.media import (
    DEFAULT_MAX_FRAMES,
    TRACKING_FPS,
    FramePlan,
    MediaSettings,
    frames_of,
    plan_frames,
    video_info,
)
from molmo_nb_utils.memory import gpu_budget_gb
from molmo_nb_utils.paths import output_path

_PRECISIONS = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}


def window_key(start: float, end: float) -> str:
    """A window's key in the results file: its span, so another plan never reuses its answers."""
    return f"window {start:.3f}-{end:.3f} s"


def _precision(model: Any) -> str:
    quantization = weights_precision(model)["quantization"] or ""
    if "4bit" in quantization:
        return "4bit"
    if "8bit" in quantization:
        return "8bit"
    return _PRECISIONS.get(str(getattr(model, "dtype", "")), "bf16")


def _molmo_config(model: Any) -> Any:
    config = getattr(model, "config", None)
    return config if type(config).__name__ == "Molmo2Config" else None


def default_results_path(video: Path, settings: dict[str, Any], plan_key: str) -> Path:
    """Where a run keeps its windows unless told: one file per video, model, prompt and settings.

    The same call finds its own file again (and resumes); a call with another model or prompt gets
    another file instead of being refused.
    """
    digest = hashlib.sha256(
        json.dumps([str(video.resolve()), settings, plan_key], sort_keys=True, default=str).encode()
    ).hexdigest()[:12]
    return output_path(f"long_video/{video.stem[:60]}-{digest}.jsonl")


def _window_result(
    key: str, prompt: str, settings: dict, answer: Answer, start: float, seconds: float, file: dict
) -> ItemResult:
    """The record of one window: its answer, its points in the video's seconds, its frames."""
    skipped: list[str] = []
    shown = answer.video.plan
    tracks = [replace(p, time=round(p.time + start, 9)) for p in answer.tracks(skipped=skipped)]
    points = [replace(p, time=round(p.time + start, 9)) for p in answer.points(skipped=skipped)]
    return ItemResult(
        key=key,
        kind="video",
        prompt=prompt,
        settings=settings,
        answer=answer.text,
        points=tuple(points),
        tracks=tuple(tracks),
        size=shown.size,
        times=tuple(round(t + start, 9) for t in shown.times),
        frame_indices=shown.indices,
        prompt_tokens=answer.prompt_tokens,
        visual_tokens=answer.visual_tokens,
        seconds=seconds,
        skipped=tuple(skipped),
        finished=now(),
        file=file,
    )


def track_video(
    model: Any,
    processor: Any,
    video: str | os.PathLike,
    prompt: str,
    *,
    window_seconds: float | None = None,
    overlap_seconds: float = DEFAULT_OVERLAP_S,
    fps: float = TRACKING_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_new_tokens: int = DEFAULT_TRACK_TOKENS,
    budget_gb: float | None = None,
    results_path: str | os.PathLike | None = None,
    segmenter: tuple[Any, Any] | None = None,
    gate_fraction: float = GATE_FRACTION,
    progress: bool = True,
    constrain: Any = None,
    ask: Callable[..., Answer] = chat,
) -> LongVideoAnswer:
    """Track ``prompt`` ("Track the players.") through the whole of ``video``, window by window.

    Windows come from ``plan_windows``: ``window_seconds=None`` takes the longest that fits
    ``max_frames`` at ``fps`` and the GPU's memory (``budget_gb``, by default the GPU's; none on a
    CPU), by the memory planner; the plan is printed. Each window is asked on its own frames, in its
    own time, and its answer kept in ``results_path`` (by default one file per video, model, prompt
    and settings under ``downloaded_data/outputs/long_video/``): run the same call again after an
    interruption and it asks only the windows not answered yet. The windows' tracks are joined by
    ``stitch_windows``; with ``segmenter=(sam, sam_processor)`` SAM 2 masks each window's tracks
    and mask overlap at the shared frames decides the joins. ``constrain`` is ``chat``'s ("tracks": every
    window's answer parses), recorded with the settings. ``ask`` is called like ``chat``.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f'prompt must be the question as text, e.g. "Track the cars.", got {prompt!r}')
    info = video_info(video)
    budget = budget_gb if budget_gb is not None else gpu_budget_gb()
    config = _molmo_config(model)
    plan = plan_windows(
        info.duration,
        fps=fps,
        window_seconds=window_seconds,
        overlap_seconds=overlap_seconds,
        max_frames=max_frames,
        config=config,
        budget_gb=budget if config is not None else None,
        precision=_precision(model),
        new_tokens=max_new_tokens,
    )
    if progress:
        print(f"{info.path.name}, {info.duration:g} s: {plan}")
    whole = plan_frames(info.path, 10**9, fps)  # every window's frames are a slice of this plan
    media = MediaSettings(fps=fps, max_frames=plan.frames)
    settings = RunSettings.for_model(
        model, prompt=prompt, max_new_tokens=max_new_tokens, media=media, constrain=constrain
    )
    ask_kwargs = settings.constraint()  # the run's constraint, as its results file records it
    settings = settings.record()
    plan_key = f"{plan.window_seconds:g}/{plan.overlap_seconds:g}"
    path = (
        Path(results_path)
        if results_path is not None
        else default_results_path(info.path, settings, plan_key)
    )
    keys = [window_key(a, b) for a, b in plan.windows]
    identity = file_identity(info.path)
    done = _run_windows(
        model, processor, info.path, prompt, plan.windows, keys, whole, settings, identity, path,
        max_new_tokens, progress, ask, ask_kwargs,
    )  # fmt: skip
    results = tuple(done[key] for key in keys)
    masks = _window_masks(segmenter, info.path, plan.windows, whole, results) if segmenter else None
    windows = [(a, b, r.tracks) for (a, b), r in zip(plan.windows, results, strict=True)]
    stitched = stitch(windows, (info.width, info.height), masks=masks, gate_fraction=gate_fraction)
    return LongVideoAnswer(info, prompt, plan, results, stitched, path, whole)


def _run_windows(
    model, processor, video: Path, prompt: str, spans: Sequence[tuple[float, float]], keys: list[str],
    whole: FramePlan, settings: dict, identity: dict, path: Path, max_new_tokens: int, progress: bool, ask,
    ask_kwargs: dict,
) -> dict[str, ItemResult]:  # fmt: skip
    """Ask every window not in the results file yet, appending each answer as it comes."""
    earlier = read_results(path)
    check_settings(earlier, settings, path)
    done = latest(earlier)

    def todo(done: dict[str, ItemResult]) -> list[int]:
        return [
            k for k, key in enumerate(keys)
            if key not in done or done[key].error is not None or not same_file(video, done[key].file)
        ]  # fmt: skip

    if not todo(done):
        return done
    with open_results(path) as (file, locked):
        if locked != earlier:  # another run wrote meanwhile
            check_settings(locked, settings, path)
            done = latest(locked)
        waiting = todo(done)
        with tqdm(total=len(keys), initial=len(keys) - len(waiting), desc="windows", unit="window",
                  disable=not progress) as bar:  # fmt: skip
            for k in waiting:
                start, end = spans[k]
                frames = frames_of(video, window_frames(whole, start, end))
                began = time.perf_counter()
                answer = ask(
                    model,
                    processor,
                    [user_message(frames, text=prompt)],
                    max_new_tokens=max_new_tokens,
                    **ask_kwargs,
                )
                result = _window_result(
                    keys[k], prompt, settings, answer, start, time.perf_counter() - began, identity
                )
                append_line(file, encode_line(result.to_record()))
                done[keys[k]] = result
                bar.update()
    return done


def _window_masks(segmenter, video: Path, spans, whole: FramePlan, results) -> list[dict[float, Any]]:
    """Per window, SAM 2's masks of its tracks at the frames it shares with a neighbour (video seconds).

    Only those frames are kept: the masks of a long video's every frame would not fit in memory.
    """
    sam, sam_processor = segmenter
    out = []
    for k, ((start, end), result) in enumerate(zip(spans, results, strict=True)):
        shared = [(start, spans[k - 1][1])] if k else []
        shared += [(spans[k + 1][0], end)] if k + 1 < len(spans) else []
        local = window_frames(whole, start, end)
        kept: dict[float, Any] = {}
        if result.tracks:
            answer = Answer(result.answer or "", videos=[frames_of(video, local)])
            for t, masks in zip(local.times, segment(sam, sam_processor, answer).masks, strict=True):
                if any(lo - 1e-6 <= t + start <= hi + 1e-6 for lo, hi in shared):
                    kept[round(t + start, 9)] = masks
        out.append(kept)
    return out
