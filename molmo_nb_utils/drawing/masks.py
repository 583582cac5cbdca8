"""Masks on images and video frames: a translucent fill in the id's colour, its outline, box and id.

A "masks" argument is either an (N, H, W) boolean array with its ``ids``, or anything that carries
both as ``.masks`` and ``.ids`` (``masks.PictureMasks``), so this module needs no model. Masks are at
the size of the picture they belong to (upright for phone videos, as the frames shown are); their boxes
come from ``masks.geometry.mask_box``, the rule every export uses. A picture is a PIL image, an RGB
array or an image file's path.

``clicks`` are the points the segmenter was given (``Segmentation.clicks()``), drawn as lesson 03 draws
points, so a picture shows what was asked as well as what came back; its title then says both ("coins: 3
clicks, 1 non-empty mask of 3"): an empty mask is drawn as nothing, and only the title tells it apart
from a click that was never made.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from molmo_nb_utils.drawing.points import strip_height
from molmo_nb_utils.drawing.style import (
    BLACK,
    DISPLAY_WIDTH,
    WHITE,
    color_for,
    draw_markers,
    draw_tag,
    style_for,
    titled,
    to_array,
    with_header,
)
from molmo_nb_utils.drawing.video import write_video
from molmo_nb_utils.grounding import Point, nearest_index
from molmo_nb_utils.masks.geometry import mask_box
from molmo_nb_utils.media import VideoFrames

MASK_ALPHA = 0.45  # opacity of a mask's fill: the object stays visible under its colour


def unpack_masks(masks: Any, ids: Sequence[int] | None = None) -> tuple[np.ndarray, list[int]]:
    """(N, H, W) bool masks and their N ids, from a ``PictureMasks`` or an array with ``ids``."""
    if hasattr(masks, "masks") and hasattr(masks, "ids"):
        if ids is not None:
            raise ValueError("these masks carry their own ids: pass the masks alone")
        masks, ids = masks.masks, masks.ids
    array = np.asarray(masks)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) or one (H, W) mask, got shape {array.shape}")
    ids = list(range(1, len(array) + 1)) if ids is None else [int(i) for i in ids]
    if len(ids) != len(array):
        raise ValueError(f"got {len(array)} masks but {len(ids)} ids: pass one id per mask")
    return array.astype(bool, copy=False), ids


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def mask_title(label: str | None, masks: int, non_empty: int, clicks: int | None = None) -> str:
    """What a mask picture shows, in words: "coins: 3 clicks, 3 masks", "3 clicks, 1 non-empty mask of
    3", "Image 2: no clicks". A label that is a sentence takes the rest in brackets (as ``count_text``)."""
    if not masks:
        text = (
            "no masks"
            if clicks is None
            else "no clicks"
            if not clicks
            else f"{_plural(clicks, 'click')}, no masks"
        )
    else:
        if non_empty == masks:
            found = _plural(masks, "mask")
        elif non_empty == 0:
            found = "1 empty mask" if masks == 1 else f"all {masks} masks empty"
        else:
            found = f"{_plural(non_empty, 'non-empty mask')} of {masks}"
        text = found if clicks is None else f"{_plural(clicks, 'click')}, {found}"
    if not label:
        return text
    return f"{label.rstrip()} ({text})" if label.rstrip()[-1:] in ".?!" else f"{label}: {text}"


def _points(clicks: Iterable[Point] | None) -> list[Point] | None:
    if clicks is None:
        return None
    clicks = list(clicks)
    if not all(isinstance(p, Point) for p in clicks):
        raise TypeError("clicks are Points: pass segmentation.clicks() (or points of your own)")
    return clicks


def _paint(canvas: np.ndarray, masks: np.ndarray, ids: list[int], boxes: bool) -> None:
    """Fill, outline, box and tag each mask on ``canvas`` (RGB, the masks' size) in place."""
    style = style_for(canvas.shape[1], canvas.shape[0])
    for mask, pid in zip(masks, ids, strict=True):
        color = np.array(color_for(pid), np.float32)
        canvas[mask] = (canvas[mask] * (1 - MASK_ALPHA) + color * MASK_ALPHA).astype(np.uint8)
    line = max(1, style.line // 2)
    for mask, pid in zip(masks, ids, strict=True):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, WHITE, line + 2, cv2.LINE_AA)
        cv2.drawContours(canvas, contours, -1, color_for(pid), line, cv2.LINE_AA)
        if boxes and mask.any():
            x0, y0, x1, y1 = (round(v) for v in mask_box(mask))
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), BLACK, line + 2)
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), color_for(pid), line)


def _tags(picture: Image.Image, masks: np.ndarray, ids: list[int]) -> None:
    """ "id N" on a box of the id's colour at the top left of each non-empty mask's box, in place."""
    style = style_for(*picture.size)
    for mask, pid in zip(masks, ids, strict=True):
        if mask.any():
            x0, y0, _, _ = mask_box(mask)
            draw_tag(picture, x0, y0, f"id {pid}", color_for(pid), style.font_px)


def _on_picture(
    image: Any, masks: Any, ids: Sequence[int] | None, boxes: bool
) -> tuple[Image.Image, int, int]:
    """The picture with its masks painted, how many masks it has and how many of them are not empty."""
    canvas = to_array(image)
    array, ids = unpack_masks(masks, ids)
    if array.shape[1:] != canvas.shape[:2]:
        raise ValueError(
            f"masks are {array.shape[2]}x{array.shape[1]} but the picture is {canvas.shape[1]}x{canvas.shape[0]}: "
            "draw masks on the picture they were made for (answer.images[k], or the frame shown)"
        )
    _paint(canvas, array, ids, boxes)
    picture = Image.fromarray(canvas)
    _tags(picture, array, ids)
    return picture, len(array), int(sum(bool(m.any()) for m in array))


def draw_masks(
    image: Any,
    masks: Any,
    *,
    ids: Sequence[int] | None = None,
    clicks: Iterable[Point] | None = None,
    label: str | None = None,
    boxes: bool = True,
) -> Image.Image:
    """A copy of ``image`` with each mask filled in its id's colour, outlined, boxed and tagged "id N".

    ``masks`` is a ``PictureMasks`` (or an (N, H, W) bool array with ``ids``) at the image's size.
    ``clicks``: the points the segmenter was given on this image (``Segmentation.clicks()``), drawn as
    numbered dots. The header says how many clicks and masks there are and how many masks are empty
    (``mask_title``: "coins: 3 clicks, 1 non-empty mask of 3").
    """
    points = _points(clicks)
    picture, total, shown = _on_picture(image, masks, ids, boxes)
    style = style_for(*picture.size)
    drawn = draw_markers(picture, points or (), 1.0, style)
    return titled(picture, mask_title(label, total, shown, None if points is None else len(drawn)))


def draw_masks_on_images(
    images: Sequence[Any],
    masks_per_image: Sequence[Any],
    *,
    clicks: Iterable[Point] | None = None,
    titles: Sequence[str] | None = None,
    label: str | None = None,
    boxes: bool = True,
    max_width: int = DISPLAY_WIDTH,
) -> Image.Image:
    """Several images side by side, each with its own masks, titled "Image 1: 2 clicks, 2 masks", ...

    ``masks_per_image[k]`` belongs to ``images[k]`` (a ``Segmentation`` of several images is such
    a list); a click goes to the image its ``Point.image`` names (1-based), a click without an image to
    every image, as in ``draw_points_on_images``. ``titles`` replace "Image 1", "Image 2", ... (e.g. "true masks" and
    "GrabCut" for one picture twice; then the strip has a header only if ``label`` gives one). Laid out
    as ``draw_points_on_images`` lays out points.
    """
    if len(images) == 0 or len(images) != len(masks_per_image):
        raise ValueError(
            f"got {len(images)} images and {len(masks_per_image)} sets of masks: pass one set per image, in order"
        )
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images: pass one title per image")
    points = _points(clicks)
    names = list(titles) if titles is not None else [f"Image {k}" for k in range(1, len(images) + 1)]
    drawn = [
        _on_picture(image, masks, None, boxes) for image, masks in zip(images, masks_per_image, strict=True)
    ]
    gap = 8
    height = strip_height([p.size for p, _, _ in drawn], max_width, gap)
    style = style_for(
        round((sum(p.width * height / p.height for p, _, _ in drawn) + gap * (len(drawn) - 1)) * 0.75), height
    )
    panels, clicked = [], 0
    for k, (picture, total, shown) in enumerate(drawn, start=1):
        scale = height / picture.height
        picture = picture.resize((max(1, round(picture.width * scale)), height), Image.Resampling.BILINEAR)
        mine = [p for p in points or () if p.image is None or p.image == k]
        own = None if points is None else draw_markers(picture, mine, scale, style)
        clicked += len(own or ())
        text = mask_title(names[k - 1], total, shown, None if own is None else len(own))
        panels.append(with_header(picture, text, style.header_px))
    row = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), WHITE)
    x = 0
    for panel in panels:
        row.paste(panel, (x, 0))
        x += panel.width + gap
    if titles is not None and not label:
        return row  # panels of their own (true masks beside a segmenter's): no total to give
    total, shown = sum(t for _, t, _ in drawn), sum(n for _, _, n in drawn)
    title = mask_title(label, total, shown, None if points is None else clicked)
    return titled(row, title, style.header_px)


def _painted(
    frames: VideoFrames, masks_per_frame: Sequence[Any], clicks: Iterable[Point] | None, boxes: bool
):
    """Each frame shown with its masks and the clicks given on it (by their time), as RGB arrays."""
    if len(masks_per_frame) != len(frames.timestamps):
        raise ValueError(
            f"got masks for {len(masks_per_frame)} frames but {len(frames.timestamps)} frames were shown: "
            "pass one set of masks per frame shown (segment(...) gives them)"
        )
    on_frame: dict[int, list[Point]] = {}
    for p in _points(clicks) or ():
        if p.time is None:
            raise ValueError(f"clicks on video frames have a time; got {p}")
        on_frame.setdefault(nearest_index(p.time, frames.timestamps), []).append(p)
    for k, (frame, masks) in enumerate(zip(frames.frames, masks_per_frame, strict=True)):
        picture = _on_picture(frame, masks, None, boxes)[0]
        draw_markers(picture, on_frame.get(k, ()), 1.0, style_for(*picture.size))
        yield np.asarray(picture)


def masked_frames(
    frames: VideoFrames,
    masks_per_frame: Sequence[Any],
    *,
    clicks: Iterable[Point] | None = None,
    boxes: bool = True,
) -> list[np.ndarray]:
    """Each frame shown with its masks painted (RGB arrays, upright): for ``frame_grid`` or a video.
    ``clicks`` (``Segmentation.clicks()``) are drawn on the frame of their time."""
    return list(_painted(frames, masks_per_frame, clicks, boxes))


def shown_rate(frames: VideoFrames) -> float:
    """Frames per second at which the frames shown play in their own time (one over the usual gap)."""
    gaps = np.diff(np.asarray(frames.timestamps, dtype=np.float64))
    gaps = gaps[gaps > 1e-9]
    return float(1 / np.median(gaps)) if gaps.size else 1.0


def render_masks_video(
    frames: VideoFrames,
    masks_per_frame: Sequence[Any],
    out_path: str | os.PathLike,
    *,
    clicks: Iterable[Point] | None = None,
    boxes: bool = True,
    progress: bool = True,
) -> Path:
    """An H.264 MP4 of the frames shown, each with its masks, ids kept: what SAM 2 followed.

    The frames are the ones Molmo2 was shown (``answer.video``), upright, so a phone video plays
    upright; they play at the rate they were sampled (``shown_rate``: 8 fps for tracking), since
    masks exist only on those frames. ``clicks`` are drawn on the frame of their time. Written atomically
    (``write_video``).
    """
    painted = _painted(frames, masks_per_frame, clicks, boxes)
    bar = tqdm(painted, total=len(masks_per_frame), disable=not progress, unit="frame", desc="masks")
    try:
        return write_video(bar, out_path, shown_rate(frames))
    finally:
        bar.close()
