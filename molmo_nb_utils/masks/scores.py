"""Scores for masks: mask IoU per picture and J&F per video, against true masks.

Why masks need their own scores: the hit rule of ``04_video_pointing`` asks whether a point lies
within 5% of the diagonal of the true centre; it cannot tell a mask that covers the coin from one that
spills over the table. Mask IoU (intersection over union) can, and J&F, the score of the DAVIS video
benchmark and of Molmo2's own tracking results, adds the boundary: J is the IoU, F the F-measure of
the mask's contour against the true contour within 0.8% of the picture's diagonal.

J&F is TrackEval's (``trackeval.metrics.JAndF``, the DAVIS 2017 code): predicted and true objects are
paired by the best mean J (ids need not agree: Molmo2 numbers objects its own way), a true object left
unpaired scores 0, and a frame where both masks are empty counts as 1. Masks are plain (H, W) bool
arrays, or ``PictureMasks`` (SAM 2's, or the true masks of ``dataset.true_masks``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment
from trackeval.metrics import JAndF

from molmo_nb_utils.masks.geometry import PictureMasks


def _encoded(mask: np.ndarray) -> dict:
    """pycocotools' own RLE (bytes counts), what its ``iou`` and TrackEval's J&F read."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def mask_iou(predicted: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two (H, W) bool masks; 1.0 when both are empty (nothing to find, none found)."""
    if predicted.shape != true.shape:
        raise ValueError(f"masks of {predicted.shape} and {true.shape}: compare masks of the same picture")
    union = np.logical_or(predicted, true).sum()
    return 1.0 if union == 0 else float(np.logical_and(predicted, true).sum() / union)


def _objects(n: int) -> str:
    return f"{n} true object" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class MaskScore:
    """Masks on one picture against its true masks: each true object paired with the predicted mask
    that overlaps it best (one to one), ``pairs[true_id] = (predicted_id, iou)``."""

    pairs: dict[int, tuple[int, float]]
    true_objects: int
    predicted_masks: int

    @property
    def mean_iou(self) -> float:
        """Mean IoU over the true objects; an object without a paired mask scores 0 (1.0 with none to find)."""
        if not self.true_objects:
            return 1.0 if not self.predicted_masks else 0.0
        return sum(iou for _, iou in self.pairs.values()) / self.true_objects

    @property
    def extra_masks(self) -> int:
        """Predicted masks paired with no true object."""
        return self.predicted_masks - len(self.pairs)

    def __str__(self) -> str:
        return (
            f"mean mask IoU {self.mean_iou:.3f} over {_objects(self.true_objects)} "
            f"({len(self.pairs)} paired, {self.extra_masks} extra masks)"
        )


def _iou_matrix(predicted: PictureMasks, true: PictureMasks) -> np.ndarray:
    if predicted.size != true.size:
        raise ValueError(
            f"predicted masks are {predicted.size[0]}x{predicted.size[1]} but true masks "
            f"{true.size[0]}x{true.size[1]}: score masks of the same picture"
        )
    if not len(predicted) or not len(true):
        return np.zeros((len(predicted), len(true)))
    pred = [_encoded(m) for m in predicted.masks]
    gt = [_encoded(m) for m in true.masks]
    return np.asarray(mask_utils.iou(pred, gt, [0] * len(gt)), dtype=np.float64).reshape(len(pred), len(gt))


def mask_scores(predicted: PictureMasks, true: PictureMasks) -> MaskScore:
    """Mask IoU on one picture: predicted and true masks paired one to one for the largest total IoU
    (ids need not agree); pairs with no overlap at all are not pairs. An empty mask is no object, on either
    side (as ``to_coco`` and ``to_detections`` leave it out): it is neither an extra mask nor an object to find."""
    predicted, true = predicted.present(), true.present()
    ious = _iou_matrix(predicted, true)
    rows, cols = linear_sum_assignment(-ious) if ious.size else ((), ())
    pairs = {
        int(true.ids[c]): (int(predicted.ids[r]), float(ious[r, c]))
        for r, c in zip(rows, cols, strict=True)
        if ious[r, c] > 0
    }
    return MaskScore(pairs, len(true), len(predicted))


@dataclass(frozen=True)
class VideoMaskScore:
    """J&F of a video (TrackEval's DAVIS J&F): means over the true objects of their per-frame J and F.

    ``j_recall`` / ``f_recall``: the share of frames with J (F) above 0.5.
    """

    j: float
    f: float
    j_recall: float
    f_recall: float
    true_objects: int
    frames: int

    @property
    def j_and_f(self) -> float:
        return (self.j + self.f) / 2

    def __str__(self) -> str:
        return (
            f"J&F {self.j_and_f:.3f} (J {self.j:.3f}, F {self.f:.3f}) over {_objects(self.true_objects)} "
            f"and {self.frames} frames"
        )


def _tracks(per_frame: Sequence[PictureMasks]) -> tuple[list[int], list[list[int]], list[list[dict]]]:
    """Every id in order, and per frame the (0-based) object indices and RLE masks TrackEval reads."""
    ids = sorted({i for m in per_frame for i in m.ids})
    index = {i: k for k, i in enumerate(ids)}
    at = [[index[i] for i in m.ids] for m in per_frame]
    dets = [[_encoded(mask) for mask in m.masks] for m in per_frame]
    return ids, at, dets


def video_mask_scores(predicted: Sequence[PictureMasks], true: Sequence[PictureMasks]) -> VideoMaskScore:
    """J&F of predicted masks on the frames shown (a ``Segmentation``) against the true masks of those frames."""
    predicted, true = list(predicted), list(true)
    if len(predicted) != len(true) or not true:
        raise ValueError(
            f"got predicted masks for {len(predicted)} frames and true masks for {len(true)}: give both for "
            "the same frames shown (true_masks(..., answer.video.plan))"
        )
    for k, (p, t) in enumerate(zip(predicted, true, strict=True)):
        if p.size != t.size:
            raise ValueError(f"frame {k}: predicted masks are {p.size} but true masks {t.size}")
    gt_ids, gt_at, gt_dets = _tracks(true)
    tr_ids, tr_at, tr_dets = _tracks(predicted)
    data = {
        "num_timesteps": len(true),
        "num_gt_ids": len(gt_ids),
        "num_tracker_ids": len(tr_ids),
        "gt_ids": gt_at,
        "tracker_ids": tr_at,
        "gt_dets": gt_dets,
        "tracker_dets": tr_dets,
    }
    if not gt_ids:
        raise ValueError("the true masks hold no object: J&F needs at least one true object")
    with warnings.catch_warnings():
        # TrackEval's J/F-Decay (unused here) bins frames with uint8 indices: past 255 frames some bins are
        # empty and numpy warns about their mean; J and F themselves are unaffected
        warnings.simplefilter("ignore", RuntimeWarning)
        res = JAndF().eval_sequence(data)
    return VideoMaskScore(
        j=float(res["J-Mean"]),
        f=float(res["F-Mean"]),
        j_recall=float(res["J-Recall"]),
        f_recall=float(res["F-Recall"]),
        true_objects=len(gt_ids),
        frames=len(true),
    )
