"""The windows of a long video on a timeline, with when each id was seen (closed in pyplot)."""

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


def plot_windows(
    plan: WindowPlan | Sequence[tuple[float, float]],
    points: Iterable[Point] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """The windows as bars over time, their overlaps shaded, and below, when each id of ``points`` was seen.

    Ids are drawn in their own colours (those of every other picture); with ``points`` of several
    windows' own answers, the same id in two windows is two objects, which is what joining fixes.
    """
    spans = _spans(plan)
    points = list(points or [])
    if any(p.time is None for p in points):
        raise ValueError("plot_windows needs video points (with .time in seconds)")
    ids = sorted({p.id for p in points})
    rows = len(ids)
    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(9, 1.2 + 0.4 * len(spans) + min(8, 0.25 * rows + (1 if rows else 0))),
        gridspec_kw={"height_ratios": [0.4 * len(spans) + 0.4, max(1.0, min(8, 0.25 * rows + 1))]},
    )  # fmt: skip
    for k, (a, b) in enumerate(spans):
        top.barh(k, b - a, left=a, height=0.6, color="#9ecae1" if k % 2 else "#3182bd", edgecolor="black")
        top.text((a + b) / 2, k, f"window {k + 1}", ha="center", va="center", fontsize="small")
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        if start < end:
            for ax in (top, bottom):
                ax.axvspan(start, end, color="orange", alpha=0.25, lw=0)
    top.set_yticks([])
    top.invert_yaxis()
    top.set_title(title or f"{len(spans)} window{'s' if len(spans) != 1 else ''}; overlaps shaded")
    for pid in ids:
        times = sorted(p.time for p in points if p.id == pid)
        r, g, b = color_for(pid)
        bottom.scatter(times, [pid] * len(times), color=(r / 255, g / 255, b / 255), s=12, zorder=3)
    if 0 < rows <= 30:
        bottom.set_yticks(ids)
    bottom.set_ylabel("id")
    bottom.set_xlabel("time (s)")
    bottom.set_xlim(min(a for a, _ in spans), max(b for _, b in spans))
    bottom.grid(axis="x", alpha=0.3)
    if not rows:
        bottom.text(0.5, 0.5, "no points", transform=bottom.transAxes, ha="center", va="center")
    fig.tight_layout()
    plt.close(fig)
    return fig
