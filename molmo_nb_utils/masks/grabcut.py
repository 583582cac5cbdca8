"""GrabCut: a segmenter with no weights and no learning, seeded by each point (OpenCV's ``cv2.grabCut``).

Why: offline, the only SAM 2 is the tiny random one, whose masks are noise; GrabCut needs nothing to
download, so the lessons' worked examples show real masks and real scores offline, and readers with a
GPU see what SAM 2 adds over a method that learned nothing (lesson 10 scores both). ``load_segmenter
("grabcut")`` gives it; ``segment`` runs it as it runs SAM 2.

How one click becomes a mask. GrabCut separates a foreground from a background by colour (a Gaussian
mixture for each) and a graph cut that keeps the border where colours change. It is given a window
around the click: a small disc at the click is the object for certain, the disc inscribed in the window
probably the object, the window's corners probably not, and a margin around the window (as wide again)
certainly background. The object's size is not known, so the window grows from 4% of the picture's
shorter side by a factor of 1.45 until two windows in a row give nearly the same mask (IoU >= 0.9): a
window smaller than the object cuts it off, and one just larger encloses it, so the first mask that a
larger window no longer changes is the object's. That IoU is the mask's score (1 = the cut did not
move). The mask is the connected part that holds the click, its holes filled (a coin's relief is not
background). A window's half-side is worked at most ``work_px`` pixels wide (larger windows are scaled
down, the mask scaled back), so a click costs about the same on any picture.

Why GrabCut and not flood fill: measured on the same 200 clicks on the sample coins
(``scripts/benchmark_classical.py``: five photos, two clips at 8 fps), GrabCut's masks have a mean IoU of
0.973 (worst coin 0.935) and J&F 0.973 / 0.992 on the clips; flood fill's, at its best colour tolerance of
five tried, 0.909 (worst 0.511) and 0.889 / 0.979, and they swing with that tolerance (0.564 at +-20). Flood
fill took about a tenth of GrabCut's time; a click costs GrabCut about 0.1 s on a 2-core machine.

A video: GrabCut follows nothing over time, so ``segment`` prompts it on every frame that has a point of
an id (``Backend.follows`` is False): Molmo2's track is the tracker, and where the track has no point
(an occlusion) the mask is empty. Along a track an id's search starts one step below its last frame's
window (a coin keeps about its size from frame to frame), which halves the windows tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from molmo_nb_utils.checks import positive_int
from molmo_nb_utils.masks.backend import Backend, Click
from molmo_nb_utils.masks.geometry import PictureMasks

GRABCUT_NAME = "grabcut"  # load_segmenter("grabcut"), MOLMO_SEGMENTER_ID=grabcut


@dataclass(frozen=True)
class GrabCut:
    """The settings of the GrabCut segmenter: ``load_segmenter("grabcut")`` gives the defaults, and
    ``segment(GrabCut(iterations=3), None, answer)`` runs other ones.

    ``start`` and ``largest``: the smallest and largest window's half-side, as a share of the picture's
    shorter side; ``growth``: how much each window is larger than the last; ``stable``: the IoU of two
    windows' masks at which the mask is taken; ``core``: the click's certain disc, as a share of the
    half-side; ``margin``: the certain background around the window, as a share of the half-side;
    ``iterations``: GrabCut's own; ``work_px``: the half-side a window is scaled down to.
    """

    start: float = 0.04
    largest: float = 0.5
    growth: float = 1.45
    stable: float = 0.9
    core: float = 1 / 6
    iterations: int = 5
    work_px: int = 48
    margin: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.start <= self.largest or self.growth <= 1 or not 0 < self.stable <= 1:
            raise ValueError(
                "GrabCut needs 0 < start <= largest, growth > 1 and 0 < stable <= 1, "
                f"got start={self.start}, largest={self.largest}, growth={self.growth}, stable={self.stable}"
            )
        positive_int(self.iterations, "iterations")
        if self.work_px < 8 or not 0 < self.core < 1 or self.margin <= 0:
            raise ValueError(
                "GrabCut needs work_px >= 8, 0 < core < 1 and margin > 0, got "
                f"work_px={self.work_px}, core={self.core}, margin={self.margin}"
            )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def _window_mask(rgb: np.ndarray, x: float, y: float, half: float, settings: GrabCut) -> np.ndarray:
    """(H, W) bool: GrabCut's object in a window of half-side ``half`` around the click (x, y)."""
    height, width = rgb.shape[:2]
    reach = (1 + settings.margin) * half  # the window and a margin of certain background
    x0, y0 = max(0, int(x - reach)), max(0, int(y - reach))
    x1, y1 = min(width, int(np.ceil(x + reach)) + 1), min(height, int(np.ceil(y + reach)) + 1)
    scale = min(1.0, settings.work_px / half)
    crop = rgb[y0:y1, x0:x1]
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    work = cv2.resize(crop, size, interpolation=cv2.INTER_AREA) if scale < 1 else crop
    work = np.ascontiguousarray(work[..., ::-1])  # OpenCV's BGR
    cx, cy, r = (x - x0) * scale, (y - y0) * scale, half * scale
    rows, cols = np.mgrid[: work.shape[0], : work.shape[1]]
    dx, dy = cols + 0.5 - cx, rows + 0.5 - cy
    seeds = np.full(work.shape[:2], cv2.GC_BGD, np.uint8)
    seeds[(np.abs(dx) <= r) & (np.abs(dy) <= r)] = cv2.GC_PR_BGD
    seeds[dx**2 + dy**2 <= r**2] = cv2.GC_PR_FGD
    seeds[dx**2 + dy**2 <= max(1.5, settings.core * r) ** 2] = cv2.GC_FGD
    background = (seeds == cv2.GC_BGD) | (seeds == cv2.GC_PR_BGD)
    if background.any():  # a picture of a few pixels may leave GrabCut no background to learn from
        cv2.setRNGSeed(0)  # GrabCut starts its colour models with k-means: the same mask on every run
        cv2.grabCut(
            work,
            seeds,
            None,
            np.zeros((1, 65)),
            np.zeros((1, 65)),
            settings.iterations,
            cv2.GC_INIT_WITH_MASK,
        )
    found = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    labels, _ = ndimage.label(found)
    at = labels[min(int(cy), work.shape[0] - 1), min(int(cx), work.shape[1] - 1)]
    found = ndimage.binary_fill_holes(labels == at) if at else found
    if scale < 1:
        found = (
            cv2.resize(found.astype(np.uint8) * 255, crop.shape[1::-1], interpolation=cv2.INTER_LINEAR) > 127
        )
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = found
    return mask


def click_mask(
    rgb: np.ndarray, x: float, y: float, settings: GrabCut = GrabCut(), *, first_half: float | None = None
) -> tuple[np.ndarray, float, float]:
    """The mask of the object under the click (x, y) on an (H, W, 3) uint8 RGB picture, its score and the
    half-side of the window it was taken from: windows grow from ``first_half`` (default ``settings.start``
    of the shorter side) until two in a row agree (IoU >= ``settings.stable``); else the most stable pair's."""
    height, width = rgb.shape[:2]
    x, y = min(max(float(x), 0.0), width - 1.0), min(max(float(y), 0.0), height - 1.0)
    side = min(width, height)
    largest = settings.largest * side * (1 + 1e-9)
    half = min(first_half or settings.start * side, settings.largest * side)
    last, best = None, None
    while half <= largest:
        mask = _window_mask(rgb, x, y, max(half, 1.0), settings)
        if last is not None:
            agree = _iou(last, mask)
            if agree >= settings.stable:
                return mask, float(agree), half
            if best is None or agree > best[1]:
                best = (mask, float(agree), half)
        last, half = mask, half * settings.growth
    return best if best is not None else (last, 0.0, half / settings.growth)


def _masks(
    model: GrabCut, rgb: np.ndarray, clicks: Sequence[Click], ids: Sequence[int], halves: dict[int, float]
) -> PictureMasks:
    """The masks of ``ids`` on one picture, each cut on its own (objects may overlap); an id without a
    click has an empty mask (score 0). ``halves``: each id's last window, where its next search starts
    one step smaller (a tracked object keeps about its size from frame to frame); updated in place."""
    height, width = rgb.shape[:2]
    array, scores = np.zeros((len(ids), height, width), bool), [0.0] * len(ids)
    for pid, x, y in clicks:
        last = halves.get(pid)
        mask, score, halves[pid] = click_mask(rgb, x, y, model, first_half=last and last / model.growth)
        array[list(ids).index(pid)], scores[list(ids).index(pid)] = mask, score
    return PictureMasks(array, tuple(int(i) for i in ids), tuple(scores))


def on_picture(model: GrabCut, processor: None, rgb: np.ndarray, clicks: Sequence[Click]) -> PictureMasks:
    """One mask per click on one (H, W, 3) uint8 picture, in the order of the clicks."""
    return _masks(model, rgb, clicks, [pid for pid, _, _ in clicks], {})


def on_video(
    model: GrabCut,
    processor: None,
    frames: np.ndarray,
    prompts: dict[int, list[Click]],
    ids: Sequence[int],
    progress: bool,
) -> list[PictureMasks]:
    """The masks of ``ids`` on every frame from the first prompted one: on each frame, the clicks given on
    it; an id without a click there has an empty mask (score 0)."""
    halves: dict[int, float] = {}
    steps = tqdm(range(min(prompts), len(frames)), disable=not progress, unit="frame", desc="GrabCut")
    return [_masks(model, frames[index], prompts.get(index, []), ids, halves) for index in steps]


def _claims(name: str) -> bool:
    return name.strip().lower() == GRABCUT_NAME and not Path(name).is_dir()


GRABCUT = Backend(
    name="GrabCut",
    claims=_claims,
    load=lambda name, device, dtype: (GrabCut(), None),  # OpenCV on the CPU: no weights, no device
    runs=lambda model: isinstance(model, GrabCut),
    on_picture=on_picture,
    on_video=on_video,
    follows=False,
)
