"""Tracks on video frames: each object's point, its id and a fading trail (OpenCV: fast on big frames)."""

from __future__ import annotations

import numbers
from bisect import bisect_right
from collections.abc import Iterable
from typing import Any, NamedTuple

import cv2
import numpy as np

from molmo_nb_utils.drawing.style import BLACK, WHITE, Style, color_for, style_for, text_color_on, to_array
from molmo_nb_utils.grounding import Point


class Tracks(NamedTuple):
    """Tracks indexed for drawing frame after frame: the distinct sample times, and per object id
    the sample indices where it is present with its (x, y) there."""

    times: list[float]
    objects: dict[int, tuple[list[int], list[tuple[float, float]]]]


def index_tracks(points: Iterable[Point]) -> Tracks:
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
    return Tracks(times, objects)


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


def draw_tracks_on(
    canvas: np.ndarray, tracks: Tracks, k: int, trail: int, scale: tuple[float, float], style: Style
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
    for pid, path in visible:
        c = path[-1]
        cv2.circle(canvas, c, r + o, BLACK, -1, cv2.LINE_AA)
        cv2.circle(canvas, c, r, WHITE, -1, cv2.LINE_AA)
        cv2.circle(canvas, c, max(1, r - o), color_for(pid), -1, cv2.LINE_AA)
    for pid, path in visible:
        draw_id_tag(canvas, path[-1], pid, r + 2 * o, style.font_px)


def draw_id_tag(canvas: np.ndarray, at: tuple[int, int], pid: int, gap: int, font_px: int) -> None:
    """ "id 3" in place, on a box of the id's colour with a black edge, right of and above ``at``.

    Why a box: white text with a thin outline was small and hard to read on grey coins; a filled
    box in the id's own colour reads on any background and ties the label to its marker. The text
    is black or white, whichever contrasts more with the colour, and a quarter larger than the
    point labels of still pictures (a video is watched, not studied).
    """
    text = f"id {pid}"
    scale = font_px * 1.25 / 22  # Hershey simplex capitals are about 22 px tall at scale 1
    thick = max(1, round(scale * 1.6))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(2, round(th / 4))
    w, h = tw + 2 * pad, th + base + 2 * pad
    height, width = canvas.shape[:2]
    x = at[0] + gap if at[0] + gap + w <= width else at[0] - gap - w
    y = at[1] - gap - h
    x, y = min(max(0, x), max(0, width - w - 1)), min(max(0, y), max(0, height - h - 1))
    color = color_for(pid)
    cv2.rectangle(canvas, (x, y), (x + w, y + h), color, -1)
    cv2.rectangle(canvas, (x, y), (x + w, y + h), BLACK, max(1, thick // 2))
    cv2.putText(
        canvas,
        text,
        (x + pad, y + pad + th),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        text_color_on(color),
        thick,
        cv2.LINE_AA,
    )


def check_trail(trail: int) -> None:
    if isinstance(trail, bool) or not isinstance(trail, numbers.Integral) or trail < 0:
        raise ValueError(f"trail must be a whole number of positions >= 0, got {trail!r}")


def draw_tracks(frame: Any, points: Iterable[Point], time: float, *, trail: int = 8) -> np.ndarray:
    """A copy of one RGB frame with the tracked objects visible at ``time``, each with a fading trail.

    Visible means present at the latest sample time ``s <= time`` among all times in ``points``;
    an object missing from that sample (occluded, or gone) is not drawn. The trail joins the
    object's previous ``trail`` positions, older segments fainter and thinner.
    """
    check_trail(trail)
    canvas = to_array(frame)
    tracks = index_tracks(points)
    k = bisect_right(tracks.times, time + 1e-6) - 1
    if k >= 0:
        draw_tracks_on(canvas, tracks, k, trail, (1.0, 1.0), style_for(canvas.shape[1], canvas.shape[0]))
    return canvas
