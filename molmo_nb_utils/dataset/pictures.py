"""Pictures of a run: an item with its truth and the answer's points, and predicted against true counts.

Why here: the worst items are understood by looking at them. A picture is drawn only on the file
that was answered: one replaced since is refused, so an old answer is never shown on a new picture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from molmo_nb_utils.dataset.items import DatasetItem, check_unchanged
from molmo_nb_utils.dataset.results import ItemResult
from molmo_nb_utils.dataset.running import in_pixels_of
from molmo_nb_utils.dataset.scoring import DatasetScore
from molmo_nb_utils.drawing import draw_points, frame_grid, with_header
from molmo_nb_utils.evaluation import DIAGONAL_FRACTION, distance_threshold, load_ground_truth
from molmo_nb_utils.grounding import Point, group_by_time
from molmo_nb_utils.media import frames_of, load_image


def _draw_rings(image: Image.Image, points: Iterable[Point], radius: float) -> Image.Image:
    """A copy of ``image`` with a ring of ``radius`` around each true point: a prediction inside can match."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 320))
    for p in points:
        box = (p.x - radius, p.y - radius, p.x + radius, p.y + radius)
        draw.ellipse(box, outline=(0, 0, 0), width=width + 2)
        draw.ellipse((box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1), outline=(255, 255, 255), width=width)
    return out


def draw_result(
    item: DatasetItem,
    result: ItemResult,
    *,
    fraction: float = DIAGONAL_FRACTION,
    cols: int = 3,
    answer: str = "answer",
) -> Image.Image:
    """The item with its truth as white rings (the matching distance) and the answer's points as dots.

    A video shows the frames the model was given, in a grid, each with its truth and points.
    ``answer`` names the answer in the title ("answer before fine-tuning"), so two pictures of one item
    say which is which.
    """
    if result.error is not None:
        raise ValueError(f"{item.key} failed ({result.error}): there is no answer to draw")
    check_unchanged(item, result.file, "drawn")
    radius = distance_threshold(*result.size, fraction=fraction)
    predicted = [*result.points, *result.tracks]
    true = "?" if item.count is None else item.count
    if item.kind == "image":
        image = load_image(item.path)  # a huge photo loads smaller than the pixels results are in
        scale = image.size[0] / result.size[0]
        picture = _draw_rings(image, in_pixels_of(item.points or (), result.size, image.size), radius * scale)
        return draw_points(
            picture,
            in_pixels_of(predicted, result.size, image.size),
            label=f"{_printable(item.key)} ({true} true, in rings), {answer}",
        )
    shown = frames_of(item.path, result.plan)  # the frames the model was shown, as the run recorded them
    true_at = group_by_time(load_ground_truth(item.truth).at_plan(result.plan) if item.truth else [])
    ringed = [
        np.asarray(_draw_rings(Image.fromarray(frame), true_at.get(t, []), radius))
        for frame, t in zip(shown.frames, shown.timestamps, strict=True)
    ]
    grid = frame_grid(replace(shown, frames=np.stack(ringed)), points=predicted, cols=cols)
    return with_header(grid, f"{_printable(item.key)} ({true} true, in rings), {answer}: {result.count} ids")


def _dot_area(items: int) -> float:
    """A dot's area in points squared: one item's is 40; a shared dot grows, and holds its number."""
    return 40.0 if items == 1 else 120.0 + 30.0 * items


def _printable(key: str) -> str:
    """A file name that is not valid UTF-8 (its bytes kept as surrogates) shown with escapes, not an error."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def plot_counts(score: DatasetScore) -> Figure:
    """Predicted against true counts, one dot per item, the diagonal exact; wrong counts are labelled with
    their items. Several items on one spot share one bigger dot with their number in it, and the legend
    says so, so two items never read as one.

    Closed in pyplot before it is returned, so a notebook shows it once.
    """
    pairs = [(s.true_count, s.predicted_count, s.key) for s in score.items if s.count_error is not None]
    if not pairs:
        raise ValueError("no item has both a true and a predicted count: give counts in the dataset")
    fig, ax = plt.subplots(figsize=(5, 5))
    top = max(max(t, p) for t, p, _ in pairs) + 1
    ax.plot([0, top], [0, top], color="0.6", linestyle="--", label="exact")
    tally: dict[tuple[int, int], list[str]] = {}
    for t, p, key in pairs:
        tally.setdefault((t, p), []).append(key)
    for (t, p), keys in tally.items():
        ax.scatter([t], [p], s=_dot_area(len(keys)), color="tab:red" if t != p else "tab:blue", zorder=3)
        if len(keys) > 1:
            ax.annotate(str(len(keys)), (t, p), ha="center", va="center", color="white", fontsize=9,
                        fontweight="bold", zorder=4)  # fmt: skip
        if t != p:
            ax.annotate(
                ", ".join(_printable(Path(k).stem) for k in keys),
                (t, p),
                textcoords="offset points",
                xytext=(8, 5),
                fontsize=8,
            )
    if any(len(keys) > 1 for keys in tally.values()):
        ax.scatter(
            [], [], s=_dot_area(2), color="0.45", label="several items on one spot:\ntheir number in the dot"
        )
    ax.set_xlim(-0.5, top)
    ax.set_ylim(-0.5, top)
    ax.set_xlabel("true count")
    ax.set_ylabel("predicted count")
    c = score.counts
    ax.set_title(f"{c.exact}/{c.n} exact, mean absolute error {c.mean_abs_error:.2f}" if c else "counts")
    ax.legend(loc="upper left")
    fig.tight_layout()
    plt.close(fig)
    return fig
