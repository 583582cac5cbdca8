"""From Molmo2's points to masks: a segmenter (SAM 2) prompted with the points of an answer.

Why: Molmo2 answers with points; most pipelines want a mask or a box next. SAM 2 turns one positive
click into a mask, and on a video follows that mask over the frames. ``segment`` takes an ``Answer``,
which knows the pictures and frames Molmo2 saw, so every point reaches the segmenter on the very
picture (and frame) it was given on, and the masks come back at the size that picture is shown, upright::

    sam, sam_processor = load_segmenter()              # $MOLMO_SEGMENTER_ID, or SAM 2.1 small
    masks = segment(sam, sam_processor, answer)        # one PictureMasks per image or frame shown
    masks[0].boxes()                                   # (N, 4) x0, y0, x1, y1 around each mask

This module is Molmo2's side (which point prompts which picture and frame; nothing before an object's
first prompt); the segmenter's side is a ``backend.Backend`` (``sam2.SAM2``). The segmenter comes from
one place, ``$MOLMO_SEGMENTER_ID``; when Molmo2 itself is the tiny test model it is the tiny SAM 2, so an
offline run stays offline.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from molmo_nb_utils.asking import Answer
from molmo_nb_utils.grounding import Point, nearest_index
from molmo_nb_utils.loading import model_id
from molmo_nb_utils.masks.backend import SEGMENTER_ENV, Backend, SegmenterLoadError
from molmo_nb_utils.masks.geometry import PictureMasks, empty_masks
from molmo_nb_utils.masks.sam2 import DEFAULT_SEGMENTER_ID, SAM2
from molmo_nb_utils.media import VideoFrames, rgb_image
from molmo_nb_utils.tiny import TINY_NAME, is_tiny_molmo2

# The kinds of segmenter, in the order they are asked whether a name is theirs: SAM 2 takes every Hub id,
# folder and 'tiny', so it comes last.
BACKENDS: tuple[Backend, ...] = (SAM2,)

__all__ = [
    "BACKENDS",
    "Segmentation",
    "SegmenterLoadError",
    "load_segmenter",
    "prompt_frames",
    "segment",
    "segmenter_id",
]


def segmenter_id() -> str:
    """The segmenter the notebooks use: ``$MOLMO_SEGMENTER_ID``; else ``tiny`` when Molmo2 is the tiny
    test model (so an offline run stays offline); else ``facebook/sam2.1-hiera-small``."""
    chosen = os.environ.get(SEGMENTER_ENV, "").strip()
    if chosen:
        return chosen
    molmo = model_id()
    if molmo == TINY_NAME or (Path(molmo).is_dir() and is_tiny_molmo2(molmo)):
        return TINY_NAME
    return DEFAULT_SEGMENTER_ID


_segmenter_id = segmenter_id  # load_segmenter's argument has the same name


def load_segmenter(
    segmenter_id: str | os.PathLike | None = None, *, device: str | None = None, dtype: str | None = None
) -> tuple[Any, Any]:
    """``(model, processor)`` of the segmenter ``segmenter_id`` (default: ``segmenter_id()``): a SAM 2 Hub
    id, a folder or ``"tiny"``. ``dtype`` defaults to bfloat16 on GPUs that have it, float32 elsewhere.

    A name that cannot be loaded raises ``SegmenterLoadError`` saying why (a folder that does not exist,
    a model that is not a segmenter, the Hub out of reach) and what to set instead.
    """
    name = str(segmenter_id) if segmenter_id is not None else _segmenter_id()
    backend = next(b for b in BACKENDS if b.claims(name))
    return backend.load(name, device, dtype)


def _backend_of(model: Any) -> Backend:
    for backend in BACKENDS:
        if backend.runs(model):
            return backend
    raise TypeError(
        f"segment takes the model and processor of load_segmenter(...), got a {type(model).__name__} as the model"
    )


# ---------------------------------------------------------------------------------------------
# The masks of one answer


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The masks of one answer: one ``PictureMasks`` per image, or per frame shown of the video.

    ``answer`` is the answer segmented, so the pictures are never re-derived: ``pictures()`` gives the
    images or frames the masks are on, in order; ``prompts`` the (picture index, id, x, y) clicks the
    segmenter was given, in the pixels of those pictures.
    """

    masks: tuple[PictureMasks, ...]
    answer: Answer
    prompts: tuple[tuple[int, int, float, float], ...]

    @property
    def video(self) -> VideoFrames | None:
        return self.answer.video

    @property
    def ids(self) -> list[int]:
        """Every object id, in increasing order."""
        return sorted({i for m in self.masks for i in m.ids})

    def pictures(self) -> list[Any]:
        """The images (PIL) or frames shown (RGB arrays) the masks belong to, in order."""
        return list(self.video.frames) if self.video is not None else list(self.answer.images)

    def boxes(self) -> list[np.ndarray]:
        """Each picture's (N, 4) boxes, as ``PictureMasks.boxes``."""
        return [m.boxes() for m in self.masks]

    def track(self, id: int) -> np.ndarray:
        """(frames, H, W) bool: object ``id``'s mask on every picture (all False where it has none)."""
        return np.stack([m.mask(id) for m in self.masks])

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> PictureMasks:
        return self.masks[index]

    def __iter__(self) -> Iterator[PictureMasks]:
        return iter(self.masks)

    def __repr__(self) -> str:
        n, s = len(self.masks), "" if len(self.masks) == 1 else "s"
        kind = f"{n} frame{s} shown" if self.video is not None else f"{n} image{s}"
        return f"Segmentation({kind}, ids {self.ids})"


def _first_points(points: Sequence[Point]) -> dict[int, Point]:
    """One point per id, the first given: the segmenter gets one positive click per object."""
    first: dict[int, Point] = {}
    for p in points:
        first.setdefault(p.id, p)
    return first


def _rgb(picture: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a picture an answer holds, not turned, by load_image's rule (a 16-bit
    picture scaled to 8 bits, not clipped; transparency on white)."""
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture))
    return np.asarray(rgb_image(image))


def _segment_images(backend: Backend, model, processor, answer: Answer, points: list[Point]) -> Segmentation:
    pictures, prompts = [], []
    for k, shown in enumerate(answer.images, start=1):
        rgb = _rgb(shown)
        clicks = [(p.id, p.x, p.y) for p in _first_points([p for p in points if p.image == k]).values()]
        if not clicks:
            pictures.append(empty_masks(rgb.shape[1], rgb.shape[0]))
            continue
        pictures.append(backend.on_picture(model, processor, rgb, clicks))
        prompts.extend((k - 1, pid, x, y) for pid, x, y in clicks)
    return Segmentation(tuple(pictures), answer, tuple(prompts))


def prompt_frames(
    points: Sequence[Point], times: Sequence[float], *, reprompt: bool = True
) -> dict[int, list[Point]]:
    """Which points the segmenter is prompted with, by frame index (into ``times``): each id where it
    first appears, and (``reprompt``) again on the first frame it is back after frames without it (an
    occlusion), so SAM 2 picks it up where Molmo2 found it again."""
    seen: dict[int, dict[int, Point]] = {}
    for p in points:
        seen.setdefault(p.id, {}).setdefault(nearest_index(p.time, times), p)
    chosen: dict[int, list[Point]] = {}
    for at in seen.values():
        frames = sorted(at)
        starts = [f for n, f in enumerate(frames) if n == 0 or (reprompt and frames[n - 1] != f - 1)]
        for f in starts:
            chosen.setdefault(f, []).append(at[f])
    return dict(sorted(chosen.items()))


def _from_first_prompt(masks: PictureMasks, frame: int, first: dict[int, int]) -> PictureMasks:
    """The masks of the ids already prompted by ``frame``; an id prompted later is empty here (score 0).

    Why: SAM 2 also propagates backwards in time (a prompt on frame 3 gives masks on frames 0-2), but
    Molmo2 had not found the object there, and those masks would count in J&F and in the exports.
    """
    later = [k for k, pid in enumerate(masks.ids) if first[pid] > frame]
    if not later:
        return masks
    array = masks.masks.copy()
    array[later] = False
    scores = tuple(0.0 if k in later else s for k, s in enumerate(masks.scores))
    return PictureMasks(array, masks.ids, scores)


def _segment_video(
    backend: Backend, model, processor, answer: Answer, points: list[Point], reprompt, progress
):
    video = answer.video
    width, height = video.size
    n = len(video.timestamps)
    chosen = prompt_frames(points, video.timestamps, reprompt=reprompt)
    if not chosen:
        return Segmentation(tuple(empty_masks(width, height) for _ in range(n)), answer, ())
    clicks = {f: [(p.id, p.x, p.y) for p in on_frame] for f, on_frame in chosen.items()}
    first: dict[int, int] = {}
    for f, on_frame in chosen.items():
        for p in on_frame:
            first.setdefault(p.id, f)
    ids = sorted(first)
    start = min(chosen)
    followed = backend.on_video(model, processor, video.frames, clicks, ids, progress)
    pictures = [empty_masks(width, height)] * start  # before Molmo2 saw anything
    pictures += [_from_first_prompt(m, f, first) for f, m in enumerate(followed, start=start)]
    prompts = tuple((f, p.id, p.x, p.y) for f, on_frame in chosen.items() for p in on_frame)
    return Segmentation(tuple(pictures), answer, prompts)


_WRAP_POINTS = (
    "To segment points of your own, wrap them with the picture they are on: "
    "segment(model, processor, Answer(format_points(points, [image.size]), images=[image])) for an image "
    "(points with image=1), or Answer(format_points(points, frames.size, tag='tracks'), videos=[frames]) "
    "with frames = sample_frames(video) for a video (points with their times)."
)


def segment(
    model: Any,
    processor: Any,
    answer: Answer,
    *,
    reprompt: bool = True,
    progress: bool = False,
) -> Segmentation:
    """Masks for the points of ``answer``: one mask per point id, on the picture it was given on.

    Images: each id's first point is a positive click on its image; the masks are at the image's size.
    Video: the answer's ``<tracks>`` (or, without them, its video ``<points>``) prompt the segmenter on
    the frame each id first appears on, and again where it comes back after an occlusion
    (``prompt_frames``); SAM 2 follows every id over the frames shown, so every frame has a mask for
    every id: empty before the id's first prompt (SAM 2 would also follow it backwards), and where SAM 2
    finds the object gone. Masks are at the size of the frames shown, upright for phone videos.
    """
    if not isinstance(answer, Answer):
        if isinstance(answer, Point) or (
            isinstance(answer, (list, tuple)) and answer and all(isinstance(p, Point) for p in answer)
        ):
            raise TypeError(
                f"segment takes an Answer, not bare points: they do not say which picture. {_WRAP_POINTS}"
            )
        raise TypeError(
            f"segment takes the Answer of chat(...) (it knows the pictures Molmo2 saw), got "
            f"{type(answer).__name__}. {_WRAP_POINTS}"
        )
    backend = _backend_of(model)
    if answer.video is not None:
        points = answer.tracks() or answer.points()
        return _segment_video(backend, model, processor, answer, points, reprompt, progress)
    if not answer.images:
        raise ValueError("This answer was about text only: there is no image or video to segment.")
    return _segment_images(backend, model, processor, answer, answer.points())
