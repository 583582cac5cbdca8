"""What ``segment`` asks of a segmenter: the one interface each kind of segmenter (SAM 2 today) fills in.

Why: Molmo2's side of segmenting (which point prompts which picture and frame, masks at the size the
picture is shown, nothing before an object's first prompt) is the same whatever turns a click into a
mask. ``segmenting`` does that side once; a backend only loads its model and turns clicks on pixels into
masks. Another segmenter is one more ``Backend`` in ``segmenting.BACKENDS``, picked by the name given to
``load_segmenter`` and recognised by its model in ``segment``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from molmo_nb_utils.masks.geometry import PictureMasks

SEGMENTER_ENV = "MOLMO_SEGMENTER_ID"  # the one place the notebooks' segmenter comes from

Click = tuple[int, float, float]  # one positive click: object id, x, y in pixels of the picture shown


class SegmenterLoadError(OSError):
    """The segmenter could not be loaded; the message says what to do (an OSError, as transformers' own)."""


@dataclass(frozen=True)
class Backend:
    """One kind of segmenter: how it is loaded, how its model is told apart, and how it makes masks.

    ``claims(name)``: whether ``load_segmenter(name)`` means this kind. ``load(name, device, dtype)``
    gives ``(model, processor)``. ``runs(model)``: whether ``model`` is one of its models.
    ``on_picture(model, processor, rgb, clicks)``: one mask per click on an (H, W, 3) uint8 picture, in
    the order of the clicks. ``on_video(model, processor, frames, prompts, ids, progress)``: ``frames``
    (N, H, W, 3) uint8, ``prompts`` the clicks by frame index (ascending); the masks of ``ids`` on every
    frame from the first prompted one to the last frame.
    """

    name: str
    claims: Callable[[str], bool]
    load: Callable[[str, str | None, str | None], tuple[Any, Any]]
    runs: Callable[[Any], bool]
    on_picture: Callable[[Any, Any, np.ndarray, Sequence[Click]], PictureMasks]
    on_video: Callable[
        [Any, Any, np.ndarray, dict[int, list[Click]], Sequence[int], bool], list[PictureMasks]
    ]
