"""Join the tracks of overlapping windows into tracks over the whole video, one id per object.

Why: Molmo2 answers about one window of a long video at a time, and numbers the objects of each
answer from 1. Consecutive windows share some time (the overlap), where both answers place the
same objects at the same times; that is what joins them:

* at each border, every track of the earlier window that is seen in the overlap is paired with at
  most one track of the later window by optimal assignment (scipy's ``linear_sum_assignment``) on
  the mean distance of their points at the times both show them;
* a pair further apart than the gate, ``GATE_FRACTION`` of the frame's diagonal, is two objects:
  two points that each hit their object by the hit rule of 04_video_pointing (5% of the diagonal,
  ``evaluation.DIAGONAL_FRACTION``) are at most twice that apart. Leaving a track unpaired costs
  the gate, so a pair is made only where it is closer than that;
* where SAM 2 masks of both windows are given (``masks``), mask overlap at the shared frames
  decides instead: the IoU of the two tracks' masks, pooled over those frames, at least
  ``MASK_IOU_GATE`` (0.5, the usual "same object" overlap). Each ``Border`` says which rule it used.

An object's local id holds within its window, so one that leaves and comes back inside a window
keeps it. In the overlap each object keeps one point per time: that of the window owning the time
(each window owns its times up to the middle of its overlaps, away from its cut edges), or, where
that window missed it, the other's. Global ids run 1, 2, ... in order of first appearance (then by
x, y), and the result is deterministic. An object unseen during a whole overlap cannot be joined
across it and gets a new id after it: nothing in either answer says it is the same.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from molmo_nb_utils.evaluation import DIAGONAL_FRACTION
from molmo_nb_utils.grounding import Point, one_size

# The gate of point matching, as a fraction of the frame's diagonal (see the module docstring).
GATE_FRACTION = 2 * DIAGONAL_FRACTION
# The least pooled mask IoU at the shared frames for two tracks to be one object.
MASK_IOU_GATE = 0.5
POINT_RULE = "point distance"
MASK_RULE = "mask IoU"
# Times equal to the microsecond are one time: windows cut from one clock share theirs exactly.
_DECIMALS = 6
_EPS = 1e-6


@dataclass(frozen=True)
class Window:
    """One window: its time span in the video's seconds and the points of its answer (local ids)."""

    start: float
    end: float
    points: tuple[Point, ...]
    given: bool = True  # False: a bare list of points, spanning its points' times


@dataclass(frozen=True)
class Border:
    """How window ``index`` (0-based) and the next were joined over their shared times."""

    index: int
    start: float  # the shared time span
    end: float
    rule: str  # POINT_RULE or MASK_RULE
    pairs: tuple[tuple[int, int, float], ...]  # (id in window index, id in the next, distance px or IoU)
    unpaired: tuple[tuple[int, ...], tuple[int, ...]]  # ids seen in the overlap that found no partner

    def __str__(self) -> str:
        unit = "IoU" if self.rule == MASK_RULE else "px apart"
        pairs = ", ".join(
            f"{a}->{b} ({c:.2f} {unit})" if self.rule == MASK_RULE else f"{a}->{b} ({c:.1f} {unit})"
            for a, b, c in self.pairs
        )
        left, right = self.unpaired
        extra = f"; unpaired: {list(left)} before, {list(right)} after" if left or right else ""
        found = (
            f"{len(self.pairs)} pair{'s' if len(self.pairs) != 1 else ''}: {pairs}"
            if self.pairs
            else "no pairs"
        )
        when = f"{self.start:g}-{self.end:g} s" if self.start <= self.end else "no shared time"
        return f"border {self.index + 1} ({when}), by {self.rule}: {found}{extra}"


@dataclass(frozen=True)
class Stitched:
    """The joined tracks, how each border was joined, and each window's local id -> global id."""

    points: tuple[Point, ...]
    borders: tuple[Border, ...]
    ids: tuple[Mapping[int, int], ...]


def stitch_windows(
    windows: Sequence[Any],
    size: Any,
    *,
    masks: Sequence[Mapping[float, Any] | None] | None = None,
    gate_fraction: float = GATE_FRACTION,
) -> list[Point]:
    """Tracks over the whole video from the tracks of overlapping windows, one global id per object.

    ``windows``: in time order, each the ``Point``s of one window (ids local to it, times in the
    video's seconds), or ``(start, end, points)`` (or an object with ``start``, ``end``, ``points``)
    to give its span; a bare list spans its points' times. ``size``: the video's (width, height).
    ``masks``: optionally, per window, time -> that frame's SAM 2 masks (a ``PictureMasks`` or
    ``{local id: (H, W) bool array}``); where both windows of a border have them, mask IoU decides.
    Returns the points, ids 1, 2, ... in order of first appearance, sorted by time then id; see the
    module docstring for the rules. Bad input (windows out of order, points outside the video or
    their window) raises ``ValueError``; an empty window is fine.
    """
    return list(stitch(windows, size, masks=masks, gate_fraction=gate_fraction).points)


def stitch(
    windows: Sequence[Any],
    size: Any,
    *,
    masks: Sequence[Mapping[float, Any] | None] | None = None,
    gate_fraction: float = GATE_FRACTION,
) -> Stitched:
    """``stitch_windows`` with its workings: each ``Border`` and each window's id mapping."""
    width, height = map(float, one_size(size))
    if (
        isinstance(gate_fraction, bool)
        or not isinstance(gate_fraction, numbers.Real)
        or not gate_fraction > 0
    ):
        raise ValueError(f"gate_fraction must be a fraction of the diagonal > 0, got {gate_fraction!r}")
    spans = _windows(windows, width, height)
    mask_maps = _mask_maps(masks, len(spans))
    gate = gate_fraction * math.hypot(width, height)
    tracks = [_tracks(w.points) for w in spans]
    owner_of: list[dict[int, int]] = []  # per window: local id -> object number
    borders: list[Border] = []
    objects = 0
    for k in range(len(spans)):
        mapping: dict[int, int] = {}
        if k:
            border = _border(k - 1, spans, tracks, mask_maps, gate)
            borders.append(border)
            mapping = {b: owner_of[k - 1][a] for a, b, _ in border.pairs}
        for local in tracks[k]:
            if local not in mapping:
                mapping[local] = objects
                objects += 1
        owner_of.append(mapping)
    chosen = _choose_points(spans, tracks, owner_of)
    numbers_ = _number_objects(chosen)
    points = sorted(
        (Point(numbers_[obj], p.x, p.y, time=p.time) for (obj, _), p in chosen.items()),
        key=lambda p: (p.time, p.id),
    )
    ids = tuple({local: numbers_[obj] for local, obj in m.items() if obj in numbers_} for m in owner_of)
    return Stitched(tuple(points), tuple(borders), ids)


# ---------------------------------------------------------------------------------------------
# Input


def _key(time: float) -> float:
    return round(float(time), _DECIMALS)


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def _explicit(window: Any) -> tuple[float, float, Any] | None:
    """(start, end, points) of a window given with its span, else None (a bare list of points)."""
    if isinstance(window, Mapping):
        if {"start", "end", "points"} <= set(window):
            return window["start"], window["end"], window["points"]
        return None
    if all(hasattr(window, name) for name in ("start", "end", "points")):
        return window.start, window.end, window.points
    if isinstance(window, (tuple, list)) and len(window) == 3 and _number(window[0]) and _number(window[1]):
        return window[0], window[1], window[2]
    return None


def _windows(windows: Any, width: float, height: float) -> list[Window]:
    """The windows with their spans, checked: points in the video and in their window, in time order."""
    if isinstance(windows, (str, bytes, Point)) or not isinstance(windows, Sequence):
        raise ValueError(
            "windows must be a list of windows in time order, each a list of Points (or (start, end, points))"
        )
    spans: list[Window] = []
    for k, window in enumerate(windows, start=1):
        explicit = _explicit(window)
        raw = explicit[2] if explicit else window
        if isinstance(raw, (str, bytes, Point)) or not isinstance(raw, Sequence):
            raise ValueError(
                f"window {k} must be a list of Points (or (start, end, points)), got {type(raw).__name__}"
            )
        points = tuple(_check_point(p, k, n, width, height) for n, p in enumerate(raw, start=1))
        if explicit:
            start, end = explicit[0], explicit[1]
            if not (_number(start) and _number(end)) or not 0 <= start <= end:
                raise ValueError(f"window {k} spans {start!r} to {end!r} s: give 0 <= start <= end seconds")
            outside = [p for p in points if not start - _EPS <= p.time <= end + _EPS]
            if outside:
                p = outside[0]
                raise ValueError(
                    f"window {k} spans {start:g}-{end:g} s, but its point {p.id} is at {p.time:g} s "
                    f"({len(outside)} point(s) outside it): give each window its own answer's points, "
                    "in the video's seconds (a window's answer is in its own time: add the window's start)"
                )
        elif points:
            start, end = min(p.time for p in points), max(p.time for p in points)
        else:
            start = end = math.nan  # an empty window with no span given: it owns no time
        spans.append(Window(float(start), float(end), points, explicit is not None))
    _check_order(spans)
    return spans


def _check_point(p: Any, k: int, n: int, width: float, height: float) -> Point:
    if not isinstance(p, Point):
        raise ValueError(f"window {k}, item {n}: expected a Point (id, x, y, time=...), got {p!r}")
    if p.time is None or not _number(p.time) or p.time < 0:
        raise ValueError(
            f"window {k}, point {n} ({p}): needs a video time in seconds >= 0; tracks come from "
            "parse_tracks or answer.tracks()"
        )
    if not (_number(p.x) and _number(p.y)):
        raise ValueError(f"window {k}, point {n} ({p}): x and y must be finite numbers of pixels")
    if not (-_EPS <= p.x <= width + _EPS and -_EPS <= p.y <= height + _EPS):
        raise ValueError(
            f"window {k}, point {n} at ({p.x:g}, {p.y:g}) is outside the {width:g}x{height:g} video: "
            "points are in pixels of the video's frames (is size the video's (width, height)?)"
        )
    return p


def _check_order(spans: list[Window]) -> None:
    """Windows in time order: each starts and ends no earlier than the one before.

    A bare list's span is that of its points: a later window may start before an earlier one's
    first point (the earlier window saw nobody at first), so between two bare lists only a window
    that both starts and ends before the one before is out of order.
    """
    known = [(k, w) for k, w in enumerate(spans, start=1) if not math.isnan(w.start)]
    for (i, a), (j, b) in zip(known, known[1:], strict=False):
        earlier = b.start < a.start - _EPS, b.end < a.end - _EPS
        if all(earlier) or (a.given and b.given and any(earlier)):
            raise ValueError(
                f"windows are out of order: window {j} spans {b.start:g}-{b.end:g} s, window {i} before it "
                f"{a.start:g}-{a.end:g} s; give the windows in time order, each starting and ending after "
                "the one before"
            )


def _tracks(points: Sequence[Point]) -> dict[int, dict[float, Point]]:
    """Local id -> time -> point; a second point of one id at one time is dropped (the first stands)."""
    tracks: dict[int, dict[float, Point]] = {}
    for p in points:
        tracks.setdefault(p.id, {}).setdefault(_key(p.time), p)
    return tracks


def _mask_maps(masks: Any, n: int) -> list[dict[float, dict[int, np.ndarray]] | None]:
    if masks is None:
        return [None] * n
    if isinstance(masks, (str, bytes)) or not isinstance(masks, Sequence) or len(masks) != n:
        raise ValueError(f"masks must be a list with one entry per window ({n}), each None or time -> masks")
    out: list[dict[float, dict[int, np.ndarray]] | None] = []
    for k, by_time in enumerate(masks, start=1):
        if by_time is None:
            out.append(None)
            continue
        if not isinstance(by_time, Mapping):
            raise ValueError(f"masks of window {k} must map a time (s) to that frame's masks, or be None")
        frames: dict[float, dict[int, np.ndarray]] = {}
        for t, found in by_time.items():
            if hasattr(found, "ids") and hasattr(found, "mask"):  # a PictureMasks
                found = {i: found.mask(i) for i in found.ids}
            if not isinstance(found, Mapping):
                raise ValueError(
                    f"masks of window {k} at {t} s: give {{id: (H, W) bool mask}} or a PictureMasks"
                )
            frames[_key(t)] = {int(i): np.asarray(m, dtype=bool) for i, m in found.items()}
        out.append(frames)
    return out


# ---------------------------------------------------------------------------------------------
# One border


def _border(k: int, spans: list[Window], tracks: list[dict], mask_maps: list, gate: float) -> Border:
    a, b = spans[k], spans[k + 1]
    lo, hi = max(a.start, b.start), min(a.end, b.end)
    if math.isnan(lo) or math.isnan(hi) or lo > hi + _EPS:
        return Border(k, lo if not math.isnan(lo) else b.start, hi, POINT_RULE, (), ((), ()))
    if mask_maps[k] is not None and mask_maps[k + 1] is not None:
        return _mask_border(k, lo, hi, mask_maps[k], mask_maps[k + 1])
    left, right = tracks[k], tracks[k + 1]
    shared = sorted({t for tr in left.values() for t in tr} & {t for tr in right.values() for t in tr})
    shared = [t for t in shared if lo - _EPS <= t <= hi + _EPS]
    rows = [i for i, tr in left.items() if any(t in tr for t in shared)]
    cols = [j for j, tr in right.items() if any(t in tr for t in shared)]
    rows, cols = sorted(rows), sorted(cols)
    if not rows or not cols:
        return Border(k, lo, hi, POINT_RULE, (), (tuple(rows), tuple(cols)))
    ta, tb = _positions(left, rows, shared), _positions(right, cols, shared)  # (n, T, 2), NaN where absent
    dist = np.hypot(ta[:, None, :, 0] - tb[None, :, :, 0], ta[:, None, :, 1] - tb[None, :, :, 1])
    both = ~np.isnan(dist)
    together = both.sum(axis=2)
    mean = np.where(
        together > 0, np.nansum(np.where(both, dist, 0.0), axis=2) / np.maximum(together, 1), np.inf
    )
    # Ties (a track that shows up only where another is) go to the pair seen together longest.
    present_a, present_b = ~np.isnan(ta[:, :, 0]), ~np.isnan(tb[:, :, 0])
    union = (present_a[:, None, :] | present_b[None, :, :]).sum(axis=2)
    tie = 1e-6 * gate * (1 - together / np.maximum(union, 1))
    pairs = _assign(mean + tie, mean <= gate, gate)
    found = tuple((rows[i], cols[j], float(mean[i, j])) for i, j in pairs)
    return Border(k, lo, hi, POINT_RULE, found, _unpaired(rows, cols, found))


def _positions(tracks: dict[int, dict[float, Point]], ids: list[int], times: list[float]) -> np.ndarray:
    out = np.full((len(ids), len(times), 2), np.nan)
    for r, i in enumerate(ids):
        for c, t in enumerate(times):
            p = tracks[i].get(t)
            if p is not None:
                out[r, c] = (p.x, p.y)
    return out


def _assign(cost: np.ndarray, feasible: np.ndarray, unpaired_cost: float) -> list[tuple[int, int]]:
    """Optimal pairs where leaving a track unpaired costs ``unpaired_cost``: pairs costing more are not made."""
    capped = np.where(feasible, np.minimum(cost, unpaired_cost), unpaired_cost * (1 + 1e-9) + 1e-9)
    rows, cols = linear_sum_assignment(capped)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if feasible[i, j]]


def _unpaired(rows: list[int], cols: list[int], pairs) -> tuple[tuple[int, ...], tuple[int, ...]]:
    used_a, used_b = {a for a, _, _ in pairs}, {b for _, b, _ in pairs}
    return tuple(i for i in rows if i not in used_a), tuple(j for j in cols if j not in used_b)


def _mask_border(k: int, lo: float, hi: float, left: dict, right: dict) -> Border:
    shared = sorted(t for t in set(left) & set(right) if lo - _EPS <= t <= hi + _EPS)
    rows = sorted({i for t in shared for i, m in left[t].items() if m.any()})
    cols = sorted({j for t in shared for j, m in right[t].items() if m.any()})
    if not rows or not cols:
        return Border(k, lo, hi, MASK_RULE, (), (tuple(rows), tuple(cols)))
    inter = np.zeros((len(rows), len(cols)))
    union = np.zeros((len(rows), len(cols)))
    for t in shared:
        for r, i in enumerate(rows):
            ma = left[t].get(i)
            for c, j in enumerate(cols):
                mb = right[t].get(j)
                if ma is None and mb is None:
                    continue
                if ma is not None and mb is not None:
                    if ma.shape != mb.shape:
                        raise ValueError(
                            f"masks at {t:g} s have different sizes in windows {k + 1} and {k + 2}"
                        )
                    inter[r, c] += np.logical_and(ma, mb).sum()
                    union[r, c] += np.logical_or(ma, mb).sum()
                else:
                    union[r, c] += (ma if ma is not None else mb).sum()
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    pairs = _assign(1 - iou, iou >= MASK_IOU_GATE, 1 - MASK_IOU_GATE)
    found = tuple((rows[i], cols[j], float(iou[i, j])) for i, j in pairs)
    return Border(k, lo, hi, MASK_RULE, found, _unpaired(rows, cols, found))


# ---------------------------------------------------------------------------------------------
# Output


def _owned(spans: list[Window]) -> list[tuple[float, float]]:
    """The times each window owns: up to the middle of its overlap with each neighbour."""
    known = [k for k, w in enumerate(spans) if not math.isnan(w.start)]
    owned = [(math.nan, math.nan)] * len(spans)
    for n, k in enumerate(known):
        lo = -math.inf if n == 0 else _middle(spans[known[n - 1]], spans[k])
        hi = math.inf if n == len(known) - 1 else _middle(spans[k], spans[known[n + 1]])
        owned[k] = (lo, hi)
    return owned


def _middle(a: Window, b: Window) -> float:
    lo, hi = max(a.start, b.start), min(a.end, b.end)
    return (lo + hi) / 2 if lo <= hi else (a.end + b.start) / 2


def _choose_points(spans, tracks, owner_of) -> dict[tuple[int, float], Point]:
    """One point per (object, time): the owning window's, else the nearest window's that has one."""
    owned = _owned(spans)
    best: dict[tuple[int, float], tuple[tuple[float, int], Point]] = {}
    for k, window_tracks in enumerate(tracks):
        lo, hi = owned[k]
        for local, by_time in window_tracks.items():
            obj = owner_of[k][local]
            for t, p in by_time.items():
                away = 0.0 if lo <= t < hi else min(abs(t - lo), abs(t - hi))
                rank = (away, k)
                if (obj, t) not in best or rank < best[(obj, t)][0]:
                    best[(obj, t)] = (rank, p)
    return {key: p for key, (_, p) in best.items()}


def _number_objects(chosen: dict[tuple[int, float], Point]) -> dict[int, int]:
    """Object -> global id, 1, 2, ... in order of first appearance, then by x, y of that point."""
    first: dict[int, tuple[float, float, float, int]] = {}
    for (obj, t), p in chosen.items():
        key = (t, p.x, p.y, obj)
        if obj not in first or key < first[obj]:
            first[obj] = key
    order = sorted(first, key=lambda obj: first[obj])
    return {obj: n for n, obj in enumerate(order, start=1)}
