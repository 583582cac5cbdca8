"""Run Molmo2 over the items, one by one or in batches, resumably; and answers written by hand.

Why: the run is where hours go. It appends one line per finished item to the results file
(``results``), skips what is done, asks again what changed, records a failure and goes on, and,
with ``batch_size``, asks several items per ``generate`` call, which is what makes a GPU pay.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from molmo_nb_utils.asking import DEFAULT_MAX_NEW_TOKENS, Answer, chat, chat_batch, user_message
from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.constrain import as_constraint
from molmo_nb_utils.dataset.items import DatasetItem, check_items, file_identity, item_prompt, same_file
from molmo_nb_utils.dataset.results import (
    ItemResult,
    append_line,
    check_settings,
    encode_line,
    latest,
    model_identity,
    now,
    open_results,
    read_results,
    weights_identity,
)
from molmo_nb_utils.evaluation import load_ground_truth
from molmo_nb_utils.grounding import Point, format_points
from molmo_nb_utils.media import DEFAULT_MEDIA, MediaSettings, image_size, load_image


@dataclass(frozen=True)
class RunSettings:
    """What answered and how it was asked: recorded on every line, and what a resumed run must match.

    Built once per run (``for_model``), shared by ``run_dataset`` and every shard of ``run_sharded``.
    ``model`` is the full ``name_or_path``; ``adapter`` the identity of a peft adapter; ``weights``
    a fingerprint of the weights themselves (``fingerprint.weights_fingerprint``), with their
    ``dtype`` and ``quantization``: another model in the same folder, a merged adapter, or the same
    weights in another precision is another model. ``prompt`` is the run's (an item's own wins);
    ``media`` how the media are shown (``MediaSettings``).
    """

    model: str | None = None
    adapter: Mapping[str, Any] | None = None
    weights: str | None = None
    dtype: str | None = None
    quantization: str | None = None
    prompt: str | None = None
    max_new_tokens: int | None = DEFAULT_MAX_NEW_TOKENS
    constrain: str | None = None  # Constraint.name: constrained answers are another run's answers
    media: MediaSettings = DEFAULT_MEDIA

    @classmethod
    def for_model(
        cls,
        model: Any,
        *,
        prompt: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        media: MediaSettings = DEFAULT_MEDIA,
        constrain: Any = None,
    ) -> RunSettings:
        """The settings of a run of ``model``: its identity (weights read once) and how it is asked."""
        positive_int(max_new_tokens, "max_new_tokens")
        if not isinstance(media, MediaSettings):
            raise TypeError(
                f"media must be a MediaSettings(fps=..., max_frames=..., max_crops=...), got {media!r}"
            )
        name, adapter = model_identity(model)
        weights = weights_identity(model)
        return cls(
            model=name,
            adapter=adapter,
            weights=weights["weights"],
            dtype=weights["dtype"],
            quantization=weights["quantization"],
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            media=media,
            constrain=None if (constraint := as_constraint(constrain)) is None else constraint.name,
        )

    def constraint(self) -> dict[str, Any]:
        """``constrain=`` for ``chat``/``chat_batch`` when the run has one (stand-ins in tests need not know it)."""
        return {} if self.constrain is None else {"constrain": self.constrain}

    def record(self) -> dict[str, Any]:
        """The settings as every line of the results file stores them: flat, the media's three fields last
        (as files written before ``MediaSettings`` have them, so those runs resume); ``constrain`` only when
        given, so the files of unconstrained runs stay as they were."""
        record = asdict(self)
        media = record.pop("media")
        if record["constrain"] is None:
            del record["constrain"]
        return {**record, **media}


def make_result(
    item: DatasetItem, prompt: str, settings: RunSettings, answer: Answer, seconds: float
) -> ItemResult:
    """The record of an answer: its text, its points in pixels, and what the model was shown."""
    skipped: list[str] = []
    video = answer.video
    if video is not None:
        plan = video.plan
        extra = {
            "tracks": tuple(answer.tracks(skipped=skipped)),
            "size": plan.size,
            "times": plan.times,
            "frame_indices": plan.indices,
        }
    elif answer.images:
        # In the file's own pixels, as its true points and the exports are: a photo past
        # media.MAX_IMAGE_PIXELS is shown to the model at a reduced scale.
        extra = {"size": image_size(item.path)}
    else:
        raise ValueError("the answer carries no image or video: ask with chat(), which keeps what it showed")
    points = answer.points(skipped=skipped)
    if video is None:
        points = in_pixels_of(points, answer.image_sizes[0], extra["size"])
    return ItemResult(
        key=item.key,
        kind=item.kind,
        prompt=prompt,
        settings=settings.record(),
        answer=str.__str__(answer),
        points=tuple(points),
        prompt_tokens=getattr(answer, "prompt_tokens", None),
        visual_tokens=getattr(answer, "visual_tokens", None),
        seconds=seconds,
        skipped=tuple(skipped),
        finished=now(),
        file=_identity(item),
        **extra,
    )


def in_pixels_of(points: Iterable[Point], shown: tuple[int, int], size: tuple[int, int]) -> list[Point]:
    """Points given in pixels of a ``shown`` (width, height) picture, in pixels of one of ``size``."""
    if tuple(shown) == tuple(size):
        return list(points)
    sx, sy = size[0] / shown[0], size[1] / shown[1]
    return [replace(p, x=p.x * sx, y=p.y * sy) for p in points]


def _identity(item: DatasetItem) -> dict[str, Any] | None:
    try:
        return file_identity(item.path)
    except OSError:
        return None


def items_to_ask(
    items: Sequence[DatasetItem], prompt: str | None, done: Mapping[str, ItemResult], retry_failed: bool, path
) -> tuple[list[DatasetItem], int]:
    """The items to ask (not done, failed with ``retry_failed``, or changed since), and how many changed."""
    todo, changed = [], 0
    for item in items:
        r = done.get(item.key)
        asked = item_prompt(item, prompt)
        if r is not None and r.prompt != asked:
            raise ValueError(
                f"{path} answered {item.key} to {r.prompt!r}, but its prompt is now {asked!r}: "
                "use a new results file, or delete this one to start over."
            )
        if r is None or (retry_failed and r.error is not None):
            todo.append(item)
        elif not same_file(item.path, r.file):
            todo.append(item)  # another file under the same name: its old answer is not its answer
            changed += 1
    return todo, changed


def run_dataset(
    model: Any,
    processor: Any,
    items: Sequence[DatasetItem],
    results_path: str | Path,
    *,
    prompt: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    media: MediaSettings = DEFAULT_MEDIA,
    limit: int | None = None,
    retry_failed: bool = False,
    batch_size: int = 1,
    ask: Callable[..., Answer] = chat,
    ask_batch: Callable[..., list[Answer]] = chat_batch,
    constrain: Any = None,
) -> list[ItemResult]:
    """Ask about every item, appending one JSON line per item to ``results_path``; return all results.

    Each item is asked ``item_prompt(item, prompt)``: its own prompt, else ``prompt``, else
    ``DEFAULT_PROMPT``, with ``{label}`` filled in (the rule ``fine_tune`` trains with), its media shown as
    ``media`` says (``MediaSettings``: a video's ``fps`` and ``max_frames``, an image's ``max_crops``). Items
    already in the file are skipped, so after an interruption the same call resumes; an item whose file changed since it
    was answered (another folder with the same names, a picture replaced) is asked again. ``limit``
    answers at most that many new items (to try a prompt first). A failed item is recorded with
    its error and skipped on later runs unless ``retry_failed``.

    ``batch_size`` > 1 asks that many items per ``generate`` call (``asking.chat_batch``), images and
    videos in separate batches; if a batch fails, each of its items is asked alone, so a broken
    file fails on its own. ``ask`` and ``ask_batch`` are called like ``chat`` and ``chat_batch``
    (tests pass stand-ins). The results come back in the order of ``items``, one per item answered
    so far. A file of another model (other weights, adapter, precision) or settings is refused, not mixed.
    ``constrain`` is ``chat``'s (e.g. "points": every answer parses), recorded with the settings.
    """
    settings = RunSettings.for_model(
        model, prompt=prompt, max_new_tokens=max_new_tokens, media=media, constrain=constrain
    )
    return run_items(
        model,
        processor,
        items,
        results_path,
        settings,
        limit=limit,
        retry_failed=retry_failed,
        batch_size=batch_size,
        ask=ask,
        ask_batch=ask_batch,
    )


def run_items(
    model: Any,
    processor: Any,
    items: Sequence[DatasetItem],
    results_path: str | Path,
    settings: RunSettings,
    *,
    limit: int | None = None,
    retry_failed: bool = False,
    batch_size: int = 1,
    ask: Callable[..., Answer] = chat,
    ask_batch: Callable[..., list[Answer]] = chat_batch,
) -> list[ItemResult]:
    """``run_dataset`` with its ``RunSettings`` built already (``run_sharded`` builds them once)."""
    results_path = Path(results_path)
    items = list(items)
    check_items(items, "items")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a whole number >= 0 or None, got {limit!r}")
    batch_size = positive_int(batch_size, "batch_size")
    record = settings.record()
    # Nothing to do needs no write access: a finished run in a read-only folder just reads.
    earlier = read_results(results_path)
    check_settings(earlier, record, results_path)
    done = latest(earlier)
    todo, changed = items_to_ask(items, settings.prompt, done, retry_failed, results_path)
    if not todo or limit == 0:
        return [done[item.key] for item in items if item.key in done]
    with open_results(results_path) as (file, locked):
        if locked != earlier:  # another run wrote meanwhile: look again (hashing changed files costs)
            check_settings(locked, record, results_path)
            done = latest(locked)
            todo, changed = items_to_ask(items, settings.prompt, done, retry_failed, results_path)
        finished = len(items) - len(todo)
        todo = todo[:limit] if limit is not None else todo
        failed = 0
        # The bar starts at the items done before; its rate and time left count this run's items only.
        with tqdm(total=finished + len(todo), initial=finished, desc="items", unit="item") as bar:
            if changed:
                bar.write(f"{changed} item(s) changed since they were answered: asking them again")
            for batch in _batches(todo, batch_size):
                for item, result in _ask_batch(model, processor, batch, settings, ask, ask_batch):
                    append_line(file, encode_line(result.to_record()))
                    done.pop(item.key, None)
                    done[item.key] = result
                    failed += result.error is not None
                    bar.update()
                    if failed:
                        bar.set_postfix(failed=failed)
    return [done[item.key] for item in items if item.key in done]


def _batches(todo: list[DatasetItem], size: int):
    """Batches of up to ``size`` items of one kind, in the order the items come."""
    pending: dict[str, list[DatasetItem]] = {}
    for item in todo:
        batch = pending.setdefault(item.kind, [])
        batch.append(item)
        if len(batch) == size:
            yield pending.pop(item.kind)
    yield from (batch for batch in pending.values() if batch)


def _ask_batch(
    model, processor, batch: list[DatasetItem], settings: RunSettings, ask, ask_batch
) -> list[tuple[DatasetItem, ItemResult]]:
    if len(batch) == 1:
        return [(batch[0], _ask_one(model, processor, batch[0], settings, ask))]
    start = time.perf_counter()
    prompts = [item_prompt(item, settings.prompt) for item in batch]
    try:
        answers = ask_batch(
            model,
            processor,
            [[user_message(item.path, text=text)] for item, text in zip(batch, prompts, strict=True)],
            max_new_tokens=settings.max_new_tokens,
            **settings.media.keywords(),
            **settings.constraint(),
        )
        share = (time.perf_counter() - start) / len(batch)
        return [
            (item, make_result(item, text, settings, answer, share))
            for item, text, answer in zip(batch, prompts, answers, strict=True)
        ]
    except Exception:  # one bad item spoils its batch: ask each alone, so it fails on its own
        return [(item, _ask_one(model, processor, item, settings, ask)) for item in batch]


def _ask_one(model, processor, item: DatasetItem, settings: RunSettings, ask) -> ItemResult:
    """One item's result; an exception becomes a recorded error (Ctrl-C still stops the run)."""
    prompt = item_prompt(item, settings.prompt)
    start = time.perf_counter()
    try:
        answer = ask(
            model,
            processor,
            [user_message(item.path, text=prompt)],
            max_new_tokens=settings.max_new_tokens,
            **settings.media.keywords(),
            **settings.constraint(),
        )
        return make_result(item, prompt, settings, answer, time.perf_counter() - start)
    except Exception as error:
        return ItemResult(
            key=item.key,
            kind=item.kind,
            prompt=prompt,
            settings=settings.record(),
            seconds=time.perf_counter() - start,
            error=f"{type(error).__name__}: {error}",
            finished=now(),
            file=_identity(item),
        )


# ---------------------------------------------------------------------------------------------
# Answers written by hand (worked examples, tests)


def worked_answer(
    item: DatasetItem,
    *,
    drop: Iterable[int] = (),
    add: Iterable[tuple[float, float]] = (),
    shift: tuple[float, float] = (0.0, 0.0),
    swap: tuple[int, int, float] | None = None,
    tag: str = "points",
    media: MediaSettings = DEFAULT_MEDIA,
) -> str:
    """An answer in Molmo2's format written from the item's ground truth, with known mistakes.

    ``drop``: true ids left out (missed objects); ``add``: extra points (x, y) in pixels (on every
    frame shown, for a video); ``shift``: (dx, dy) pixels added to every true point; ``swap``:
    ``(a, b, t)``: ids a and b trade places from time t on (an identity switch in tracks).
    Videos are written at the frames ``media`` shows (``MediaSettings``: ``fps``, ``max_frames``). With nothing left to point
    at, the answer is "There are none.".
    """
    dropped = set(drop)
    dx, dy = shift
    if item.kind == "image":
        if item.points is None:
            raise ValueError(f"{item.key} has no true points to write an answer from")
        size = image_size(item.path)  # the true points' pixels (load_image may scale a huge photo)
        places: list[tuple[int | None, float | None]] = [(1, None)]
        truth = list(item.points)
    else:
        if item.truth is None:
            raise ValueError(f"{item.key} has no ground-truth file to write an answer from")
        plan = media.plan(item.path)
        size = plan.size
        places = [(None, t) for t in plan.prompt_times]
        truth = load_ground_truth(item.truth).at_plan(plan)  # evaluation's one rule
    points = [replace(p, x=p.x + dx, y=p.y + dy) for p in truth if p.id not in dropped]
    if swap is not None:
        a, b, since = swap
        swapped = {a: b, b: a}
        points = [replace(p, id=swapped.get(p.id, p.id)) if (p.time or 0.0) >= since else p for p in points]
    extras = list(add)
    first_extra = max((p.id for p in truth), default=0) + 1
    for image, t in places:
        points += [Point(first_extra + k, x, y, image, t) for k, (x, y) in enumerate(extras)]
    if not points:
        return "There are none."
    points.sort(key=lambda p: (p.time or 0.0, p.id))
    return format_points(points, size, label=item.label, tag=tag)


def results_from_answers(
    items: Sequence[DatasetItem],
    answers: Mapping[str, str],
    *,
    prompt: str = "(answers written by hand)",
    media: MediaSettings = DEFAULT_MEDIA,
) -> list[ItemResult]:
    """The results a run would record if the model had answered ``answers`` (item key -> text).

    The images are loaded and the video frames sampled as a run with ``media`` would, so sizes, times
    and frame indices are the real ones. For worked examples and for checking scores by hand.
    """
    by_key = {item.key: item for item in items}
    unknown = [key for key in answers if key not in by_key]
    if unknown:
        raise ValueError(f"answers for items not in the dataset: {unknown}")
    settings = RunSettings(prompt=prompt, max_new_tokens=None, media=media)
    results = []
    for key, text in answers.items():
        item = by_key[key]
        if item.kind == "image":
            answer = Answer(text, images=[load_image(item.path)])
        else:
            answer = Answer(text, videos=[media.sample(item.path)])
        results.append(make_result(item, prompt, settings, answer, 0.0))
    return results
