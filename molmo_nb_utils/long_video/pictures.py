"""The windows of a long video on a timeline, with when each track was seen (closed in pyplot)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from molmo_nb_utils.drawing.style import color_for
from molmo_nb_utils.grounding import Point
from molmo_nb_utils.long_video.windows import WindowPlan


def _spans(plan: WindowPlan | Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    spans = list(plan.windows if isinstance(plan, WindowPlan) else plan)
    if not spans or any(len(s) != 2 or not s[0] <= s[1] for s in spans):
        raise ValueError("plot_windows takes a WindowPlan or a list of (start, end) seconds")
    return [(float(a), float(b)) for a, b in spans]


def _rows(points) -> list[tuple[str, int, list[float]]]:
    """(row label, colour id, times) per track: one row per id, or per (window, id) for per-window lists."""
    points = list(points or [])
    per_window = bool(points) and all(isinstance(w, (list, tuple)) for w in points)
    groups: dict[tuple[int, int], list[float]] = {}
    for k, window in enumerate(points if per_window else [points], start=1):
        for p in window:
            if not isinstance(p, Point) or p.time is None:
                raise ValueError(f"plot_windows needs video points (with .time in seconds), got {p!r}")
            groups.setdefault((k, p.id), []).append(p.time)
    return [
        (f"w{k} id {pid}" if per_window else str(pid), pid, sorted(times))
        for (k, pid), times in sorted(groups.items())
    ]


def plot_windows(
    plan: WindowPlan | Sequence[tuple[float, float]],
    points: Iterable[Point] | Sequence[Sequence[Point]] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """The windows as bars over time, their overlaps shaded, and below, when each track was seen.

    ``points``: tracks over the video (one row per id), or one list of points per window, each in
    that window's own ids (one row per window and id: what joining turns into one row per object).
    Ids keep their colours of every other picture.
    """
    spans = _spans(plan)
    rows = _rows(points)
    n = len(rows)
    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(9, 1.6 + 0.4 * len(spans) + min(8, 0.25 * n)),
        gridspec_kw={"height_ratios": [0.4 * len(spans) + 0.4, max(1.0, min(8, 0.25 * n + 0.5))]},
    )  # fmt: skip
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        if start < end:
            for ax in (top, bottom):
                ax.axvspan(start, end, color="orange", alpha=0.25, lw=0, zorder=0)
    for k, (a, b) in enumerate(spans):
        top.barh(
            k, b - a, left=a, height=0.6, color="#9ecae1" if k % 2 else "#6baed6", edgecolor="black", zorder=2
        )
        top.text((a + b) / 2, k, f"window {k + 1}", ha="center", va="center", fontsize="small", zorder=3)
    top.set_yticks([])
    top.invert_yaxis()
    top.set_title(title or f"{len(spans)} window{'s' if len(spans) != 1 else ''}; overlaps shaded")
    for y, (_, pid, times) in enumerate(rows):
        r, g, b = color_for(pid)
        bottom.scatter(times, [y] * len(times), color=(r / 255, g / 255, b / 255), s=12, zorder=3)
    if 0 < n <= 40:
        bottom.set_yticks(range(n), [label for label, _, _ in rows], fontsize="small")
    bottom.set_ylim(n - 0.5 if n else 0.5, -0.5)
    bottom.set_ylabel("track")
    bottom.set_xlabel("time (s)")
    bottom.set_xlim(min(a for a, _ in spans), max(b for _, b in spans))
    bottom.grid(axis="x", alpha=0.3)
    if not n:
        bottom.text(0.5, 0.5, "no points", transform=bottom.transAxes, ha="center", va="center")
    fig.tight_layout()
    plt.close(fig)
    return fig
