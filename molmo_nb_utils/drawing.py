"""Show what Molmo2 pointed at: points on images, frame grids, tracks and annotated videos.

Every function returns a picture (a PIL image, an RGB ``uint8`` array or a matplotlib figure) or
writes a file and returns its path, so a notebook can both show and save the result.

Sizes of markers, lines and text grow with the image, so a 64 px thumbnail and a 4K frame are
both readable. Colours come from :func:`color_for`: one fixed colour per id, the same in every
picture, video and plot.

Videos are written as H.264 MP4 (yuv420p, even width and height, ``+faststart``), the format every
browser plays inline; files are written under a temporary name and renamed at the end, so an
interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import math
import numbers
import os
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import av
import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from molmo_nb_utils.grounding import nearest_index, time_to_frame
from molmo_nb_utils.media import VideoFrames, video_info
from molmo_nb_utils.paths import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from molmo_nb_utils.grounding import Point

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
VIDEO_PRESET = "superfast"  # measured: x264 "veryfast" is slower than real time for 720p on 2 cores
VIDEO_CRF = 23


def color_for(id: int) -> tuple[int, int, int]:
    """The RGB colour of point or object ``id``: ids 1..20 get distinct colours, then they repeat."""
    return PALETTE[(int(id) - 1) % len(PALETTE)]


# ---------------------------------------------------------------------------------------------
# sizes, fonts and conversions


class _Style(NamedTuple):
    radius: int  # marker radius in pixels
    outline: int  # width of the white and black rings around a marker
    font_px: int  # label text height in pixels
    line: int  # width of the newest trail segment
    header_px: int  # header and title text height in pixels


def _style(width: int, height: int) -> _Style:
    """Marker, line and text sizes that read well at this image size."""
    side = max(width, height)
    radius = max(5, round(side / 90))
    return _Style(
        radius,
        max(1, round(radius / 4)),
        max(10, round(side / 40)),
        max(2, round(radius * 0.6)),
        max(12, round(side / 30)),
    )


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _to_pil(image: Any) -> Image.Image:
    """A new RGB PIL image from a PIL image or an (H, W[, 3|4]) uint8 array; the input is never changed."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image.copy()
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
    raise TypeError(f"expected a PIL image or a numpy uint8 array, got {type(image).__name__}")


def _to_array(image: Any) -> np.ndarray:
    """A new, contiguous (H, W, 3) uint8 RGB array (OpenCV draws on it in place)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return np.array(image, copy=True, order="C")
    return np.array(_to_pil(image))  # np.array, not np.asarray: OpenCV needs a writable array


def _count_text(label: str | None, count: int) -> str:
    noun = "point" if count == 1 else "points"
    return f"{label}: {count} {noun}" if label else f"{count} {noun}"


def with_header(image: Image.Image, text: str, font_px: int | None = None) -> Image.Image:
    """The image below a white strip holding ``text`` (shrunk until it fits the width)."""
    font_px = font_px or _style(*image.size).header_px
    pad = max(2, font_px // 4)
    size = font_px
    while size > 8 and _font(size).getlength(text) > image.width - 2 * pad:
        size -= 1
    height = round(font_px * 1.6)
    out = Image.new("RGB", (image.width, image.height + height), WHITE)
    ImageDraw.Draw(out).text((pad, height // 2), text, fill=BLACK, font=_font(size), anchor="lm")
    out.paste(image, (0, height))
    return out


def _draw_markers(image: Image.Image, points: Iterable[Point], scale: float, style: _Style) -> list[Point]:
    """Draw ``points`` (coordinates times ``scale``) on ``image`` in place; return those drawn.

    A point on the border (x == width, as 1000/1000 gives) is clamped inside; a point further out
    belongs to no pixel of this image and is skipped, so the header counts only what is shown.
    """
    draw = ImageDraw.Draw(image)
    width, height = image.size
    r, o = style.radius, style.outline
    font = _font(style.font_px)
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
        right = x + gap + font.getlength(text) <= width
        draw.text(
            (x + gap if right else x - gap, y),
            text,
            fill=WHITE,
            font=font,
            anchor="lm" if right else "rm",
            stroke_width=max(1, style.font_px // 8),
            stroke_fill=BLACK,
        )
    return drawn


# ---------------------------------------------------------------------------------------------
# images


def draw_points(
    image: Any, points: Iterable[Point], *, label: str | None = None, image_index: int | None = None
) -> Image.Image:
    """A copy of ``image`` with each point as a numbered dot, under a header such as "coins: 24 points".

    The count is the number of distinct ids drawn. With ``image_index`` only points on that 1-based
    image (or with no image) are drawn. Points outside the image are skipped (see ``_draw_markers``).
    """
    canvas = _to_pil(image)
    if image_index is not None:
        points = [p for p in points if p.image is None or p.image == image_index]
    style = _style(*canvas.size)
    drawn = _draw_markers(canvas, points, 1.0, style)
    return with_header(canvas, _count_text(label, len({p.id for p in drawn})), style.header_px)


def draw_points_on_images(
    images: Sequence[Any],
    points: Iterable[Point],
    *,
    label: str | None = None,
    max_width: int = DISPLAY_WIDTH,
) -> Image.Image:
    """Several images side by side at one height, titled "Image 1", "Image 2", ..., each with its points.

    A point goes to the image ``Point.image`` (1-based) names; a point without an image goes on
    every image. The top header gives the total count of distinct (image, id) pairs.

    The strip is at most ``max_width`` pixels wide (the width a notebook shows it at), and markers
    and labels are sized for the whole strip, so they read as well as on a single image.
    """
    if len(images) == 0:
        raise ValueError("draw_points_on_images needs at least one image")
    pictures = [_to_pil(im) for im in images]
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
    aspects = sum(im.width / im.height for im in pictures)
    height = max(
        8,
        min(max(im.height for im in pictures), 1024, int((max_width - gap * (len(pictures) - 1)) / aspects)),
    )
    strip = round(aspects * height) + gap * (len(pictures) - 1)
    # Sized as for one image of 3/4 of the strip's width: a label is about 1/53 of the strip wide
    # (19 px on a 1000 px strip), half again as large as each panel's own size would give.
    style = _style(round(strip * 0.75), height)
    panels, shown = [], set()
    for index, picture in enumerate(pictures, start=1):
        scale = height / picture.height
        if scale != 1:
            picture = picture.resize(
                (max(1, round(picture.width * scale)), height), Image.Resampling.BILINEAR
            )
        own = [p for p in points if p.image is None or p.image == index]
        drawn = _draw_markers(picture, own, scale, style)
        shown |= {(p.image, p.id) for p in drawn}
        panels.append(with_header(picture, f"Image {index}: {len({p.id for p in drawn})}", style.header_px))
    row = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), WHITE)
    x = 0
    for panel in panels:
        row.paste(panel, (x, 0))
        x += panel.width + gap
    return with_header(row, _count_text(label, len(shown)), style.header_px)


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
    indices = None
    if isinstance(frames, VideoFrames):
        if timestamps is not None:
            raise ValueError("VideoFrames carry their own timestamps: pass the VideoFrames alone")
        frames, timestamps, indices = frames.frames, frames.timestamps, frames.indices
    pictures = [_to_pil(f) for f in frames]
    if not pictures:
        raise ValueError("frame_grid needs at least one frame")
    if timestamps is None:
        if not fps or fps <= 0:
            raise ValueError("frame_grid needs timestamps, or fps > 0 to compute them as frame_index / fps")
        timestamps = [i / fps for i in range(len(pictures))]
    times = [float(t) for t in timestamps]
    if len(times) != len(pictures):
        raise ValueError(
            f"got {len(pictures)} frames but {len(times)} timestamps; pass one timestamp per frame"
        )
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    cols = min(cols, len(pictures))
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
        on_frame.setdefault(nearest_index(p.time, times), []).append(p)
    thumbs = []
    for i, picture in enumerate(pictures):
        scale = thumb_w / picture.width
        thumb = picture.resize((thumb_w, max(1, round(picture.height * scale))), Image.Resampling.BILINEAR)
        _draw_markers(thumb, on_frame.get(i, ()), scale, _style(*thumb.size))
        thumbs.append(thumb)
    captions = []
    for i, t in enumerate(times):
        frame = indices[i] if indices is not None else round(t * fps) if fps else None
        captions.append(f"t = {_format_time(t)} s" + ("" if frame is None else f" (frame {frame})"))
    # Captions at least 13 px (readable when the notebook shows the grid a little smaller), but
    # never wider than a thumbnail.
    font_px = max(13, round(thumb_w / 16))
    longest = max(captions, key=len)
    while font_px > 8 and _font(font_px).getlength(longest) > thumb_w - 4:
        font_px -= 1
    caption_h = round(font_px * 1.6)
    cell_h = caption_h + max(t.height for t in thumbs)
    rows = math.ceil(len(thumbs) / cols)
    grid = Image.new("RGB", (width, rows * cell_h + gap * (rows - 1)), WHITE)
    draw = ImageDraw.Draw(grid)
    for i, (thumb, caption) in enumerate(zip(thumbs, captions, strict=True)):
        x, y = (i % cols) * (thumb_w + gap), (i // cols) * (cell_h + gap)
        draw.text((x + 2, y + caption_h // 2), caption, fill=BLACK, font=_font(font_px), anchor="lm")
        grid.paste(thumb, (x, y + caption_h))
    return grid


# ---------------------------------------------------------------------------------------------
# tracks


class _Tracks(NamedTuple):
    """Tracks indexed for drawing frame after frame: the distinct sample times, and per object id
    the sample indices where it is present with its (x, y) there."""

    times: list[float]
    objects: dict[int, tuple[list[int], list[tuple[float, float]]]]


def _index_tracks(points: Iterable[Point]) -> _Tracks:
    points = list(points)
    for p in points:
        if p.time is None:
            raise ValueError(
                f"tracks need points with .time (seconds); got {p}. Parse them with parse_tracks"
            )
    times = sorted({float(p.time) for p in points})
    sample = {t: k for k, t in enumerate(times)}
    where: dict[int, dict[int, tuple[float, float]]] = {}
    for p in points:
        where.setdefault(p.id, {})[sample[float(p.time)]] = (p.x, p.y)  # a repeated (id, time): the last wins
    objects = {}
    for pid, at in sorted(where.items()):
        ks = sorted(at)
        objects[pid] = (ks, [at[k] for k in ks])
    return _Tracks(times, objects)


def _blend_line(
    canvas: np.ndarray, a: tuple[int, int], b: tuple[int, int], color, thickness: int, alpha: float
):
    """Draw a line with opacity ``alpha``, blending only the line's bounding box (cheap on big frames)."""
    if alpha >= 0.99:
        cv2.line(canvas, a, b, color, thickness, cv2.LINE_AA)
        return
    h, w = canvas.shape[:2]
    pad = thickness + 2
    x0, x1 = max(0, min(a[0], b[0]) - pad), min(w, max(a[0], b[0]) + pad + 1)
    y0, y1 = max(0, min(a[1], b[1]) - pad), min(h, max(a[1], b[1]) + pad + 1)
    if x0 >= x1 or y0 >= y1:
        return
    box = canvas[y0:y1, x0:x1]
    over = box.copy()
    cv2.line(over, (a[0] - x0, a[1] - y0), (b[0] - x0, b[1] - y0), color, thickness, cv2.LINE_AA)
    box[:] = cv2.addWeighted(over, alpha, box, 1 - alpha, 0)


def _draw_tracks_on(
    canvas: np.ndarray, tracks: _Tracks, k: int, trail: int, scale: tuple[float, float], style: _Style
) -> None:
    """Draw, in place, the objects present at sample ``k`` with their trails (OpenCV: fast on big frames)."""
    sx, sy = scale
    visible = []
    for pid, (ks, xys) in tracks.objects.items():
        j = bisect_right(ks, k) - 1
        if j < 0 or ks[j] != k:
            continue  # absent at this sample: occluded or gone
        path = [(round(x * sx), round(y * sy)) for x, y in xys[max(0, j - trail) : j + 1]]
        visible.append((pid, path))
    for pid, path in visible:
        n = len(path) - 1
        for s in range(n):  # oldest segment first, faintest and thinnest
            weight = 0.25 + 0.75 * (s + 1) / n
            _blend_line(
                canvas, path[s], path[s + 1], color_for(pid), max(1, round(style.line * weight)), weight
            )
    r, o = style.radius, style.outline
    font_scale = style.font_px / 25  # Hershey simplex capitals are about 22 px tall at scale 1
    thick = max(1, round(font_scale * 1.5))
    width = canvas.shape[1]
    for pid, path in visible:
        c = path[-1]
        cv2.circle(canvas, c, r + o, BLACK, -1, cv2.LINE_AA)
        cv2.circle(canvas, c, r, WHITE, -1, cv2.LINE_AA)
        cv2.circle(canvas, c, max(1, r - o), color_for(pid), -1, cv2.LINE_AA)
    for pid, path in visible:
        text = f"id {pid}"
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        gap = r + 2 * o
        x = path[-1][0] + gap if path[-1][0] + gap + tw <= width else path[-1][0] - gap - tw
        y = max(path[-1][1] - gap, style.font_px)
        cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, BLACK, thick + 2, cv2.LINE_AA)
        cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, WHITE, thick, cv2.LINE_AA)


def draw_tracks(frame: Any, points: Iterable[Point], time: float, *, trail: int = 8) -> np.ndarray:
    """A copy of one RGB frame with the tracked objects visible at ``time``, each with a fading trail.

    Visible means present at the latest sample time ``s <= time`` among all times in ``points``;
    an object missing from that sample (occluded, or gone) is not drawn. The trail joins the
    object's previous ``trail`` positions, older segments fainter and thinner.
    """
    _check_trail(trail)
    canvas = _to_array(frame)
    tracks = _index_tracks(points)
    k = bisect_right(tracks.times, time + 1e-6) - 1
    if k >= 0:
        _draw_tracks_on(canvas, tracks, k, trail, (1.0, 1.0), _style(canvas.shape[1], canvas.shape[0]))
    return canvas


# ---------------------------------------------------------------------------------------------
# video files


def _rate(fps: float | Fraction) -> Fraction:
    """fps as the exact fraction containers want (29.97002997 -> 30000/1001)."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps < math.inf:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(100_000)


def _check_trail(trail: int) -> None:
    if isinstance(trail, bool) or not isinstance(trail, numbers.Integral) or trail < 0:
        raise ValueError(f"trail must be a whole number of positions >= 0, got {trail!r}")


def _to_video_frame(rgb: np.ndarray) -> av.VideoFrame:
    # OpenCV's RGB -> I420 matches swscale's BT.601 conversion and is about 3x faster.
    return av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")


def write_video(
    frames: Iterable[Any], out_path: str | os.PathLike, fps: float | Fraction, *, preset: str = VIDEO_PRESET
) -> Path:
    """Write RGB frames (arrays or PIL images, all one size) to a browser-playable H.264 MP4.

    Odd widths or heights lose their last column or row (yuv420p needs even sizes). The file is
    written under a temporary name and renamed when complete.
    """
    out_path = Path(out_path)
    rate = _rate(fps)
    with (
        atomic_path(out_path) as tmp,
        av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out,
    ):
        stream = None
        for n, frame in enumerate(frames):
            rgb = frame if isinstance(frame, np.ndarray) else np.asarray(_to_pil(frame))
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise ValueError(
                    f"frame {n} must be an (H, W, 3) uint8 RGB array, got {rgb.dtype} {rgb.shape}"
                )
            if stream is None:
                size = rgb.shape[:2]
                height, width = size[0] // 2 * 2, size[1] // 2 * 2
                if height < 2 or width < 2:
                    raise ValueError(f"frames must be at least 2x2 pixels, got {size[1]}x{size[0]}")
                stream = out.add_stream(
                    "libx264", rate=rate, options={"preset": preset, "crf": str(VIDEO_CRF)}
                )
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.thread_type = "AUTO"
            elif rgb.shape[:2] != size:
                raise ValueError(
                    f"frame {n} is {rgb.shape[1]}x{rgb.shape[0]} but the first frame was {size[1]}x{size[0]}; "
                    "all frames of a video must have one size"
                )
            video_frame = _to_video_frame(rgb[:height, :width])
            video_frame.pts = n
            video_frame.time_base = 1 / rate
            out.mux(stream.encode(video_frame))
        if stream is None:
            raise ValueError(f"write_video got no frames for {out_path}")
        out.mux(stream.encode(None))
    return out_path


def _open_video(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}; check the path (download it first?)")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise ValueError(f"cannot read video {path}: {error}; is it a video file?") from error
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} has no video stream")
    return container


def _decode_rgb(frame: av.VideoFrame, width: int, height: int, resize: bool) -> np.ndarray:
    """The frame as a contiguous (height, width) RGB array: scaled, or else cropped by at most 1 px."""
    if resize:
        return frame.to_ndarray(format="rgb24", width=width, height=height)
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        rgb = cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)  # faster than swscale, same result
    else:
        rgb = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(rgb[:height, :width])


def render_tracks_video(
    video: str | os.PathLike | VideoFrames,
    points: Iterable[Point],
    out_path: str | os.PathLike,
    *,
    trail: int = 8,
    max_width: int | None = None,
    progress: bool = True,
) -> Path:
    """Draw tracks on every frame of ``video`` and save a browser-playable H.264 MP4 at its frame rate.

    Frame-accurate: ``video`` is best the ``VideoFrames`` the model was shown (``answer.video``):
    then the sample at time t is drawn from exactly the frame shown at t until the next sample
    (the rule of :func:`draw_tracks`). Given a path, the frame is ``round(t * fps)``.
    ``max_width`` scales wider videos down (points scale with them).

    A phone video stored sideways with a rotation is drawn and written upright (points are in
    upright pixels, as ``sample_frames`` gives them), so the MP4 plays upright in every player
    without needing the rotation tag.
    """
    seen = video if isinstance(video, VideoFrames) else None
    path = seen.info.path if seen is not None else Path(video)
    tracks = _index_tracks(points)
    _check_trail(trail)
    with _open_video(path) as container:
        turns = (seen.info if seen is not None else video_info(path)).rotation // 90
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = stream.average_rate or stream.guessed_rate
        if not fps:
            raise ValueError(f"{path} does not say its frame rate; re-encode it with a constant frame rate")
        src_w, src_h = stream.codec_context.width, stream.codec_context.height
        if turns % 2:  # sizes below are upright; frames are decoded as stored, then turned
            src_w, src_h = src_h, src_w
        if max_width is not None and src_w > max_width:
            width, height = max(2, max_width // 2 * 2), max(2, round(src_h * max_width / src_w) // 2 * 2)
        else:
            width, height = src_w // 2 * 2, src_h // 2 * 2
        resize = (width, height) != (src_w // 2 * 2, src_h // 2 * 2)
        scale = (width / src_w, height / src_h) if resize else (1.0, 1.0)
        starts = [seen.frame_at(t) if seen else time_to_frame(t, fps) for t in tracks.times]
        style = _style(width, height)
        stored = (height, width) if turns % 2 else (width, height)

        def annotated() -> Iterator[np.ndarray]:
            k = -1
            for index, frame in enumerate(container.decode(stream)):
                rgb = _decode_rgb(frame, *stored, resize)
                if turns:
                    rgb = np.ascontiguousarray(np.rot90(rgb, turns))  # OpenCV draws on contiguous arrays
                while k + 1 < len(starts) and starts[k + 1] <= index:
                    k += 1
                if k >= 0:
                    _draw_tracks_on(rgb, tracks, k, trail, scale, style)
                yield rgb

        frames = tqdm(
            annotated(), total=stream.frames or None, disable=not progress, unit="frame", desc=path.name
        )
        try:
            return write_video(frames, out_path, fps)
        finally:
            frames.close()


def write_gif(
    frames: Iterable[Any],
    out_path: str | os.PathLike,
    fps: float,
    *,
    max_width: int = 320,
    max_frames: int | None = None,
) -> Path:
    """A small looping GIF preview: frames scaled down to ``max_width``, at most ``max_frames`` of them.

    With ``max_frames`` the frames are picked evenly across the clip and each is shown longer, so
    the preview lasts as long as the video. Frames are held in memory after scaling down.
    """
    rate = float(_rate(fps))
    if max_width < 2:
        raise ValueError(f"max_width must be >= 2 pixels, got {max_width}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    small = []
    for frame in frames:
        picture = _to_pil(frame)
        if picture.width > max_width:
            size = (max_width, max(1, round(picture.height * max_width / picture.width)))
            picture = picture.resize(size, Image.Resampling.BILINEAR)
        small.append(picture)
    if not small:
        raise ValueError(f"write_gif got no frames for {out_path}")
    seconds = len(small) / rate
    if max_frames is not None and len(small) > max_frames:
        small = [small[i] for i in np.linspace(0, len(small) - 1, max_frames).round().astype(int)]
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        small[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=small[1:],
            duration=max(20, round(1000 * seconds / len(small))),  # browsers slow down shorter delays
            loop=0,
        )
    return out_path


def show_video(path: str | os.PathLike, *, width: int | None = None) -> Any:
    """An object that shows an MP4 or GIF inline in a notebook, embedded so it survives export and offline use.

    Shown ``width`` pixels wide; by default at its own width, at most 640 px, never enlarged
    (an enlarged GIF is blurry). Embedding puts the whole file in the notebook: keep clips short
    and small (``max_width``).
    """
    from IPython.display import Image as IPythonImage
    from IPython.display import Video

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    suffix = path.suffix.lower()
    if width is None and suffix in (".gif", ".mp4", ".m4v"):
        if suffix == ".gif":
            with Image.open(path) as gif:
                own = gif.width
        else:
            own = video_info(path).width
        width = min(own, 640)
    if suffix == ".gif":
        return IPythonImage(filename=str(path), width=width)
    if suffix in (".mp4", ".m4v"):
        return Video(
            str(path),
            embed=True,
            mimetype="video/mp4",
            width=width,
            html_attributes="controls loop muted autoplay playsinline",
        )
    raise ValueError(f"show_video shows .mp4 and .gif files, got {path.name}")


# ---------------------------------------------------------------------------------------------
# plots


def _timed(points: Iterable[Point], what: str) -> list[Point]:
    points = list(points)
    for p in points:
        if p.time is None:
            raise ValueError(f"{what} needs video points (with .time in seconds); got {p}")
    return points


def _rgb01(pid: int) -> tuple[float, float, float]:
    r, g, b = color_for(pid)
    return r / 255, g / 255, b / 255


def plot_timeline(
    points: Iterable[Point], *, duration: float | None = None, label: str | None = None
) -> Figure:
    """When each id was pointed at: x is time in seconds, y the id.

    The figure is closed in pyplot before it is returned, so a notebook shows it once (as the
    cell's value) and ``fig.savefig`` still works.
    """
    import matplotlib.pyplot as plt

    points = _timed(points, "plot_timeline")
    ids = sorted({p.id for p in points})
    fig, ax = plt.subplots(figsize=(8, min(12, 1.5 + 0.3 * max(1, len(ids)))))
    for pid in ids:
        times = sorted(p.time for p in points if p.id == pid)
        ax.scatter(times, [pid] * len(times), color=_rgb01(pid), s=30, zorder=3)
    end = duration if duration else max((p.time for p in points), default=0) * 1.05 or 1.0
    ax.set_xlim(0, end)
    if 0 < len(ids) <= 30:
        ax.set_yticks(ids)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("id")
    ax.set_title(f"{label}: {len(ids)} ids" if label else f"{len(ids)} ids")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_trajectories(frame: Any, points: Iterable[Point]) -> Figure:
    """Each track's path (x, y in time order) over ``frame`` (normally the first), coloured by id.

    Closed in pyplot before it is returned, like :func:`plot_timeline`.
    """
    import matplotlib.pyplot as plt

    image = _to_array(frame)
    points = _timed(points, "plot_trajectories")
    height, width = image.shape[:2]
    fig, ax = plt.subplots(figsize=(8, max(2.0, 8 * height / width)))
    ax.imshow(image)
    for pid in sorted({p.id for p in points}):
        track = sorted((p for p in points if p.id == pid), key=lambda p: p.time)
        xs, ys = [p.x for p in track], [p.y for p in track]
        ax.plot(xs, ys, "-o", color=_rgb01(pid), markersize=3, linewidth=2, label=f"id {pid}")
        ax.plot(xs[-1:], ys[-1:], "o", color=_rgb01(pid), markersize=8, markeredgecolor="white")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    if points:
        ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    plt.close(fig)
    return fig
