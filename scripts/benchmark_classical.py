"""Which classical segmenter gives better coin masks from one click: GrabCut or flood fill? (Issue 35, item 6.)

Both get the same clicks: the true centres of every coin in the six sample photos (``input/coin_table``), and
the true tracks of both sample clips at 8 fps, one click per frame a coin is listed on (as ``segment`` gives
GrabCut a track). Masks are scored against the coins' exact true masks: mean mask IoU over the photos' coins,
J&F on each clip. Flood fill (``cv2.floodFill`` from the click on a lightly blurred copy, its holes filled)
is tried at a few colour tolerances, each shown, since its result depends on that one number; GrabCut runs
as ``load_segmenter("grabcut")`` gives it. The tiny random SAM 2 is shown for scale: its masks are noise.
Times are seconds for all clicks of one method in this run, and each classical method's time as a ratio to
GrabCut's (one run, one machine: compare ratios, not seconds).

    python scripts/benchmark_classical.py
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from molmo_nb_utils.asking import Answer
from molmo_nb_utils.dataset import load_dataset, true_masks, with_coin_masks
from molmo_nb_utils.evaluation import load_ground_truth
from molmo_nb_utils.grounding import format_points
from molmo_nb_utils.masks import PictureMasks, load_segmenter, mask_scores, segment, video_mask_scores
from molmo_nb_utils.media import load_image, sample_frames
from molmo_nb_utils.paths import INPUT_DIR
from molmo_nb_utils.tiny import build_tiny_sam2

Cut = Callable[[np.ndarray, float, float], np.ndarray]


def flood(tolerance: int) -> Cut:
    """Flood fill from the click: pixels within ``tolerance`` of the click's colour (each channel),
    connected to it, on a 5x5 Gaussian blur of the picture; holes filled."""

    def cut(rgb: np.ndarray, x: float, y: float) -> np.ndarray:
        height, width = rgb.shape[:2]
        blurred = cv2.GaussianBlur(rgb, (5, 5), 0)
        mask = np.zeros((height + 2, width + 2), np.uint8)
        flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (255 << 8)
        seed = (min(int(round(x)), width - 1), min(int(round(y)), height - 1))
        cv2.floodFill(blurred, mask, seed, 0, (tolerance,) * 3, (tolerance,) * 3, flags)
        return ndimage.binary_fill_holes(mask[1:-1, 1:-1] > 0)

    return cut


def worked_answers() -> tuple[list[tuple[Answer, PictureMasks]], list[tuple[Answer, list[PictureMasks]]]]:
    """(answer, true masks) of every sample photo with coins, and of both sample clips at 8 fps."""
    photos = []
    images = [item for item in load_dataset(INPUT_DIR / "coin_table.json") if item.kind == "image"]
    for item in with_coin_masks(images):
        if item.points and item.masks:
            image = load_image(item.path)
            answer = Answer(format_points(list(item.points), [image.size], label="coins"), images=[image])
            photos.append((answer, item.picture_masks(image.size)))
    clips = []
    for name in ("moving_objects", "counting"):
        truth_path = INPUT_DIR / "ground_truth" / f"{name}.json"
        seen = sample_frames(INPUT_DIR / f"{name}.mp4", fps=8)
        tracks = load_ground_truth(truth_path).at_plan(seen.plan)
        answer = Answer(format_points(tracks, seen.size, label="coins", tag="tracks"), videos=[seen])
        clips.append((answer, true_masks(truth_path, seen.plan)))
    return photos, clips


def with_cut(found, cut: Cut) -> list[PictureMasks]:
    """The clicks of a GrabCut ``Segmentation`` cut again by ``cut``: the same clicks, the same ids."""
    pictures = found.pictures()
    out = []
    for k, masks in enumerate(found):
        rgb = np.asarray(pictures[k].convert("RGB")) if hasattr(pictures[k], "convert") else pictures[k]
        array = np.zeros_like(masks.masks)
        for f, pid, x, y in found.prompts:
            if f == k:
                array[masks.ids.index(pid)] = cut(rgb, x, y)
        out.append(PictureMasks(array, masks.ids, tuple(float(m.any()) for m in array)))
    return out


def score(per_photo: list, per_clip: list, photos, clips) -> str:
    ious = [
        iou
        for m, (_, t) in zip(per_photo, photos, strict=True)
        for _, iou in mask_scores(m, t).pairs.values()
    ]
    ious += [0.0] * (sum(len(t) for _, t in photos) - len(ious))  # a coin with no overlapping mask scores 0
    jf = [video_mask_scores(m, t).j_and_f for m, (_, t) in zip(per_clip, clips, strict=True)]
    return f"photo IoU {np.mean(ious):.3f} (worst {min(ious):.3f})   J&F {jf[0]:.3f} / {jf[1]:.3f}"


def main() -> None:
    photos, clips = worked_answers()
    grab = load_segmenter("grabcut")
    start = time.perf_counter()
    grab_photos = [segment(*grab, a) for a, _ in photos]
    grab_clips = [segment(*grab, a) for a, _ in clips]
    grab_s = time.perf_counter() - start
    clicks = sum(len(s.prompts) for s in grab_photos + grab_clips)
    print(f"{clicks} clicks: {len(photos)} photos, moving_objects / counting clips at 8 fps\n")
    print(
        f"{'GrabCut':<24} {score([s[0] for s in grab_photos], grab_clips, photos, clips)}   {grab_s:6.1f} s  1.00"
    )
    for tolerance in (20, 30, 40, 50, 60):
        start = time.perf_counter()
        cut = flood(tolerance)
        flood_photos = [with_cut(s, cut)[0] for s in grab_photos]
        flood_clips = [with_cut(s, cut) for s in grab_clips]
        took = time.perf_counter() - start
        line = score(flood_photos, flood_clips, photos, clips)
        print(f"{f'flood fill, +-{tolerance}':<24} {line}   {took:6.1f} s  {took / grab_s:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tiny = load_segmenter(build_tiny_sam2(Path(tmp) / "tiny-sam2"))
        start = time.perf_counter()
        tiny_photos = [segment(*tiny, a)[0] for a, _ in photos]
        tiny_clips = [segment(*tiny, a) for a, _ in clips]
        took = time.perf_counter() - start
    line = score(tiny_photos, tiny_clips, photos, clips)
    print(f"{'tiny random SAM 2':<24} {line}   {took:6.1f} s  (noise, for scale)")


if __name__ == "__main__":
    main()
