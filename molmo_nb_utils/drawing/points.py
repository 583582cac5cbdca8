"""Points on images and on video frames: numbered dots, titles that say what was found.

Every function returns a new PIL image; the input is never changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from PIL import Image, ImageDraw

from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.drawing.style import (
    BLACK,
    DISPLAY_WIDTH,
    WHITE,
    count_text,
    draw_markers,
    font,
    style_for,
    titled,
    to_pil,
    with_header,
)
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.media import FramePlan, VideoFrames


def strip_height(sizes: Sequence[tuple[int, int]], max_width: int, gap: int) -> int:
    """The one height at which pictures of these (width, height) sizes fit side by side in ``max_width``
    (``gap`` pixels apart): never taller than the tallest, nor than 1024 px."""
    aspects = sum(w / h for w, h in sizes)
    return max(8, min(max(h for _, h in sizes), 1024, int((max_width - gap * (len(sizes) - 1)) / aspects)))


def draw_points(
    image: Any,
    points: Iterable[Point] = (),
    *,
    label: str | None = None,
    image_index: int | None = None,
) -> Image.Image:
    """A copy of ``image`` with each point as a numbered dot, under a header such as "coins: 24 points".

    The count is the number of distinct ids drawn (the title's wording: ``style.count_text``; a
    picture with no points and no label has no title). With ``image_index`` only points on that
    1-based image (or with no image) are drawn. Points outside the image are skipped (see
    ``style.draw_markers``).
    """
    canvas = to_pil(image)
    if image_index is not None:
        points = [p for p in points if p.image is None or p.image == image_index]
    style = style_for(*canvas.size)
    drawn = draw_markers(canvas, points, 1.0, style)
    return titled(canvas, count_text(label, len({p.id for p in drawn})), style.header_px)


def draw_points_on_images(
    images: Sequence[Any],
    points: Iterable[Point] = (),
    *,
    label: str | None = None,
    max_width: int = DISPLAY_WIDTH,
) -> Image.Image:
    """Several images side by side at one height, titled "Image 1", "Image 2", ..., each with its points.

    A point goes to the image ``Point.image`` (1-based) names; a point without an image goes on
    every image. The top header gives the total count of distinct (image, id) pairs, each image's
    title its own ("Image 2: 3 points"); with no points at all the images are titled "Image 1",
    "Image 2", ... alone, and the strip has no header unless ``label`` gives one.

    The strip is at most ``max_width`` pixels wide (the width a notebook shows it at), and markers
    and labels are sized for the whole strip, so they read as well as on a single image.
    """
    if len(images) == 0:
        raise ValueError("draw_points_on_images needs at least one image")
    pictures = [to_pil(im) for im in images]
    points = list(points)
    missing = sorted({p.image for p in points if p.image is not None and not 1 <= p.image <= len(pictures)})
    if missing:
        raise ValueError(
            f"points refer to image(s) {missing} but only {len(pictures)} image(s) were given; "
            "pass all the images the model saw, in the same order"
        )
    if max_width < 16 * len(pictures):
        raise ValueError(f"max_width={max_width} is too small for {len(pictures)} images side by side")
    gap = 8
    height = strip_height([im.size for im in pictures], max_width, gap)
    strip = round(sum(im.width / im.height for im in pictures) * height) + gap * (len(pictures) - 1)
    # Sized as for one image of 3/4 of the strip's width: a label is about 1/53 of the strip wide
    # (19 px on a 1000 px strip), half again as large as each panel's own size would give.
    style = style_for(round(strip * 0.75), height)
    panels, shown, counts = [], set(), []
    for index, picture in enumerate(pictures, start=1):
        scale = height / picture.height
        if scale != 1:
            picture = picture.resize(
                (max(1, round(picture.width * scale)), height), Image.Resampling.BILINEAR
            )
        own = [p for p in points if p.image is None or p.image == index]
        drawn = draw_markers(picture, own, scale, style)
        shown |= {(p.image, p.id) for p in drawn}
        panels.append(picture)
        counts.append(len({p.id for p in drawn}))
    panels = [
        with_header(picture, count_text(f"Image {index}", n) if shown else f"Image {index}", style.header_px)
        for index, (picture, n) in enumerate(zip(panels, counts, strict=True), start=1)
    ]
    row = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), WHITE)
    x = 0
    for panel in panels:
        row.paste(panel, (x, 0))
        x += panel.width + gap
    return titled(row, count_text(label, len(shown)), style.header_px)


def _format_time(seconds: float) -> str:
    return f"{seconds:.1f}" if abs(seconds * 10 - round(seconds * 10)) < 1e-6 else f"{seconds:.2f}"


def frame_grid(
    frames: Any,
    timestamps: Sequence[float] | None = None,
    *,
    points: Iterable[Point] | None = None,
    fps: float | None = None,
    cols: int = 4,
    width: int = 1024,
) -> Image.Image:
    """Video frames in a grid ``width`` pixels wide, each captioned "t = 2.5 s (frame 40)".

    ``frames`` is the ``VideoFrames`` of ``sample_frames`` or an answer (``answer.video``): its
    frames, with the times the model was told and their frame indices. Plain frames work too: an
    (N, H, W, 3) array or a list of arrays / PIL images, with their ``timestamps`` in seconds (or
    ``fps`` to number them ``i / fps``). Each point (``Point.time`` set) is drawn on the frame whose
    timestamp is nearest to its time.
    """
    plan, numbered = None, True  # numbered: the frames' numbers in their video are known
    if isinstance(frames, VideoFrames):
        if timestamps is not None:
            raise ValueError("VideoFrames carry their own timestamps: pass the VideoFrames alone")
        frames, plan = frames.frames, frames.plan
    pictures = [to_pil(f) for f in frames]
    if not pictures:
        raise ValueError("frame_grid needs at least one frame")
    if plan is None:  # plain frames, at the times given or at i / fps
        if timestamps is None:
            if not fps or fps <= 0:
                raise ValueError(
                    "frame_grid needs timestamps, or fps > 0 to compute them as frame_index / fps"
                )
            timestamps = [i / fps for i in range(len(pictures))]
        times = tuple(float(t) for t in timestamps)
        if len(times) != len(pictures):
            raise ValueError(
                f"got {len(pictures)} frames but {len(times)} timestamps; pass one timestamp per frame"
            )
        numbered = bool(fps)
        numbers = tuple(round(t * fps) for t in times) if fps else tuple(range(len(times)))
        plan = FramePlan(times, numbers, pictures[0].size)
    times = plan.times
    cols = min(positive_int(cols, "cols"), len(pictures))
    gap = 4
    thumb_w = (width - gap * (cols - 1)) // cols
    if thumb_w < 8:
        raise ValueError(f"width={width} is too small for {cols} columns; use a larger width or fewer cols")
    on_frame: dict[int, list[Point]] = {}
    for p in points or ():
        if p.time is None:
            raise ValueError(
                f"frame_grid draws video points (with .time); got {p}. Use draw_points for images"
            )
        on_frame.setdefault(plan.position(p.time), []).append(p)
    thumbs = []
    for i, picture in enumerate(pictures):
        scale = thumb_w / picture.width
        thumb = picture.resize((thumb_w, max(1, round(picture.height * scale))), Image.Resampling.BILINEAR)
        draw_markers(thumb, on_frame.get(i, ()), scale, style_for(*thumb.size))
        thumbs.append(thumb)
    captions = []
    for i, t in enumerate(times):
        frame = plan.indices[i] if numbered else None
        captions.append(f"t = {_format_time(t)} s" + ("" if frame is None else f" (frame {frame})"))
    # Captions at least 13 px (readable when the notebook shows the grid a little smaller), but
    # never wider than a thumbnail.
    font_px = max(13, round(thumb_w / 16))
    longest = max(captions, key=len)
    while font_px > 8 and font(font_px).getlength(longest) > thumb_w - 4:
        font_px -= 1
    caption_h = round(font_px * 1.6)
    cell_h = caption_h + max(t.height for t in thumbs)
    rows = math.ceil(len(thumbs) / cols)
    grid = Image.new("RGB", (width, rows * cell_h + gap * (rows - 1)), WHITE)
    draw = ImageDraw.Draw(grid)
    for i, (thumb, caption) in enumerate(zip(thumbs, captions, strict=True)):
        x, y = (i % cols) * (thumb_w + gap), (i // cols) * (cell_h + gap)
        draw.text((x + 2, y + caption_h // 2), caption, fill=BLACK, font=font(font_px), anchor="lm")
        grid.paste(thumb, (x, y + caption_h))
    return grid
