"""Plots: when each id was seen, and each track's path over a frame.

Every figure is closed in pyplot before it is returned, so a notebook shows it once (as the cell's
value) and ``fig.savefig`` still works.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from molmo_nb_utils.drawing.style import color_for, to_array
from molmo_nb_utils.grounding import Point


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
    """When each id was pointed at: x is time in seconds, y the id (closed in pyplot, see the module)."""
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

    A square marks where each track starts, a large white-edged dot where it was last seen; the
    legend says so, next to each id's colour. Closed in pyplot, see the module.
    """
    image = to_array(frame)
    points = _timed(points, "plot_trajectories")
    height, width = image.shape[:2]
    fig, ax = plt.subplots(figsize=(8, max(2.0, 8 * height / width)))
    ax.imshow(image)
    for pid in sorted({p.id for p in points}):
        track = sorted((p for p in points if p.id == pid), key=lambda p: p.time)
        xs, ys = [p.x for p in track], [p.y for p in track]
        ax.plot(xs, ys, "-o", color=_rgb01(pid), markersize=3, linewidth=2, label=f"id {pid}")
        ax.plot(xs[:1], ys[:1], "s", color=_rgb01(pid), markersize=7, markeredgecolor="white")
        ax.plot(xs[-1:], ys[-1:], "o", color=_rgb01(pid), markersize=10, markeredgecolor="white")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    if points:
        handles, _ = ax.get_legend_handles_labels()
        ends = [
            Line2D([], [], linestyle="none", marker="s", markersize=7, color="grey", markeredgecolor="white",
                   label="start"),
            Line2D([], [], linestyle="none", marker="o", markersize=10, color="grey", markeredgecolor="white",
                   label="last seen"),
        ]  # fmt: skip
        ax.legend(handles=[*handles, *ends], loc="upper right", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    plt.close(fig)
    return fig
