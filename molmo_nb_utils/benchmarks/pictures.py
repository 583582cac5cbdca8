"""One benchmark item as a picture: its truth (masks shaded, true points) and, if given, an answer's points."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from molmo_nb_utils.dataset.items import DatasetItem
from molmo_nb_utils.dataset.results import ItemResult
from molmo_nb_utils.drawing import color_for, draw_points
from molmo_nb_utils.grounding import parse_points
from molmo_nb_utils.media import image_size, load_image

__all__ = ["draw_benchmark_item"]

SHADE = 0.45  # how much of a mask's colour covers the picture


def _shade(image: Image.Image, masks: np.ndarray) -> Image.Image:
    """The picture with each (H, W) mask filled half-transparent in colour k (``color_for``), no title."""
    canvas = np.asarray(image.convert("RGB")).astype(np.float32)
    for k, mask in enumerate(masks, start=1):
        canvas[mask] = canvas[mask] * (1 - SHADE) + np.array(color_for(k), np.float32) * SHADE
    return Image.fromarray(canvas.astype(np.uint8))


def draw_benchmark_item(item: DatasetItem, answer: Any = None, *, label: str | None = None) -> Image.Image:
    """The item's picture with its masks shaded (one colour each), its true points as numbered dots and,
    with ``answer`` (a text, ``Answer`` or ``ItemResult``), the answer's points instead of the true ones;
    the title says which, and the prompt."""
    image = load_image(item.path)
    size = image_size(item.path)
    if item.masks:
        pixels = np.stack([m.decode(size) for m in item.masks])
        if size != image.size:  # a huge photo loads smaller
            pixels = np.stack(
                [np.asarray(Image.fromarray(p).resize(image.size, Image.NEAREST)) for p in pixels]
            )
        image = _shade(image, pixels)
    text = answer.answer if isinstance(answer, ItemResult) else answer
    scale = image.size[0] / size[0]
    if text is None:
        points, what = item.points or (), f"truth: {item.count if item.count is not None else 'a region'}"
    else:
        points, what = parse_points(str.__str__(text), size), "answer"
    shown = [type(p)(p.id, p.x * scale, p.y * scale, p.image, p.time) for p in points]
    title = label or f"{item.key} ({what}): {item.prompt or ''}".strip()
    return draw_points(image, shown, label=title[:120])
