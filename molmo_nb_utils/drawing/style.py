"""What every picture shares: one colour per id, sizes that grow with the image, fonts, headers.

Sizes of markers, lines and text grow with the image, so a 64 px thumbnail and a 4K frame are
both readable. Colours come from :func:`color_for`: one fixed colour per id, the same in every
picture, video and plot.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from molmo_nb_utils.grounding import Point
from molmo_nb_utils.media import load_image, rgb_image

# matplotlib's tab10 followed by the light half of tab20: distinct, colour-blind friendlier than
# random colours, and the same ids get the same colours as matplotlib plots.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
# A notebook shows a picture at most about this wide (JupyterLab's output area at a common window
# size is 860-1000 px; wider pictures are shrunk to fit, and their labels with them). Pictures that
# put several images side by side are laid out at this width, so their labels are read at the size
# they are drawn.
DISPLAY_WIDTH = 1000


def color_for(id: int) -> tuple[int, int, int]:
    """The RGB colour of point or object ``id``: ids 1..20 get distinct colours, then they repeat."""
    return PALETTE[(int(id) - 1) % len(PALETTE)]


def text_color_on(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``color`` (WCAG relative luminance)."""
    channels = [c / 255 for c in color]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    # contrast with black (L + 0.05) / 0.05 against white 1.05 / (L + 0.05): equal at L = 0.179
    return BLACK if luminance > 0.179 else WHITE


class Style(NamedTuple):
    radius: int  # marker radius in pixels
    outline: int  # width of the white and black rings around a marker
    font_px: int  # label text height in pixels
    line: int  # width of the newest trail segment
    header_px: int  # header and title text height in pixels


def style_for(width: int, height: int) -> Style:
    """Marker, line and text sizes that read well at this image size."""
    side = max(width, height)
    radius = max(5, round(side / 90))
    return Style(
        radius,
        max(1, round(radius / 4)),
        max(10, round(side / 40)),
        max(2, round(radius * 0.6)),
        max(12, round(side / 30)),
    )


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def to_pil(image: Any) -> Image.Image:
    """A new RGB PIL image from an image file's path or URL (loaded upright, ``load_image``), a PIL image
    or an (H, W[, 3|4]) uint8 array; the input is never changed. A PIL image is made RGB by load_image's
    rule (a 16-bit picture scaled to 8 bits, transparency on white), so a picture is drawn as the model
    saw it."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return rgb_image(image)
    if isinstance(image, np.ndarray):
        if (
            image.dtype != np.uint8
            or image.ndim not in (2, 3)
            or (image.ndim == 3 and image.shape[2] not in (3, 4))
        ):
            raise ValueError(
                f"an image array must be uint8 with shape (H, W), (H, W, 3) or (H, W, 4), "
                f"got {image.dtype} {image.shape}"
            )
        return Image.fromarray(image).convert("RGB")
    raise TypeError(
        f"expected an image file's path, a PIL image or a numpy uint8 array, got {type(image).__name__}"
    )


def to_array(image: Any) -> np.ndarray:
    """A new, contiguous (H, W, 3) uint8 RGB array (OpenCV draws on it in place)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return np.array(image, copy=True, order="C")
    return np.array(to_pil(image))  # np.array, not np.asarray: OpenCV needs a writable array


def count_text(label: str | None, count: int, noun: str = "point") -> str:
    """A title that reads well: "coins: 24 points", "Point to the eyes. (2 points)", "eyes: no points".

    A label that is a sentence (ends in . ? or !) takes the count in brackets. With no label and
    nothing counted the title is empty: a plain picture is not titled "0 points".
    """
    counted = f"{count} {noun}" + ("" if count == 1 else "s") if count else f"no {noun}s"
    if not label:
        return counted if count else ""
    if label.rstrip()[-1:] in ".?!":
        return f"{label.rstrip()} ({counted})"
    return f"{label}: {counted}"


def with_header(image: Image.Image, text: str, font_px: int | None = None) -> Image.Image:
    """The image below a white strip holding ``text`` (shrunk until it fits the width)."""
    font_px = font_px or style_for(*image.size).header_px
    pad = max(2, font_px // 4)
    size = font_px
    while size > 8 and font(size).getlength(text) > image.width - 2 * pad:
        size -= 1
    height = round(font_px * 1.6)
    out = Image.new("RGB", (image.width, image.height + height), WHITE)
    ImageDraw.Draw(out).text((pad, height // 2), text, fill=BLACK, font=font(size), anchor="lm")
    out.paste(image, (0, height))
    return out


def titled(image: Image.Image, text: str, font_px: int | None = None) -> Image.Image:
    """``with_header`` when there is a title to give, the image itself otherwise."""
    return with_header(image, text, font_px) if text else image


def draw_markers(image: Image.Image, points: Iterable[Point], scale: float, style: Style) -> list[Point]:
    """Draw ``points`` (coordinates times ``scale``) on ``image`` in place; return those drawn.

    A point on the border (x == width, as 1000/1000 gives) is clamped inside; a point further out
    belongs to no pixel of this image and is skipped, so the header counts only what is shown.
    """
    draw = ImageDraw.Draw(image)
    width, height = image.size
    r, o = style.radius, style.outline
    label_font = font(style.font_px)
    drawn, labels = [], []
    for p in points:
        x, y = p.x * scale, p.y * scale
        if not (0 <= x <= width and 0 <= y <= height):
            continue
        x, y = min(x, width - 1), min(y, height - 1)
        draw.ellipse((x - r - o, y - r - o, x + r + o, y + r + o), fill=BLACK)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color_for(p.id), outline=WHITE, width=o)
        drawn.append(p)
        labels.append((x, y, str(p.id)))
    for x, y, text in labels:  # after all circles, so no marker hides a number
        gap = r + 2 * o
        right = x + gap + label_font.getlength(text) <= width
        draw.text(
            (x + gap if right else x - gap, y),
            text,
            fill=WHITE,
            font=label_font,
            anchor="lm" if right else "rm",
            stroke_width=max(1, style.font_px // 8),
            stroke_fill=BLACK,
        )
    return drawn


def draw_tag(image: Image.Image, x: float, y: float, text: str, color, font_px: int) -> None:
    """A label on a filled box of ``color`` with a black edge, in place: readable on any background.

    Placed right of and above (x, y), moved inside the image where it would leave it.
    """
    draw = ImageDraw.Draw(image)
    tag_font = font(font_px)
    pad = max(2, font_px // 5)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=tag_font, anchor="lt")
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    x0 = min(max(0, round(x)), max(0, image.width - w - 1))
    y0 = min(max(0, round(y) - h), max(0, image.height - h - 1))
    draw.rectangle((x0, y0, x0 + w, y0 + h), fill=tuple(color), outline=BLACK, width=max(1, font_px // 12))
    draw.text((x0 + pad, y0 + pad), text, fill=text_color_on(tuple(color)), font=tag_font, anchor="lt")
