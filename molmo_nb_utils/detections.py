"""Masks as ``supervision.Detections``, so roboflow's annotators, trackers and tools work on them.

supervision is an optional install (``pip install supervision``): the package imports without it, and
``to_detections`` says how to install it when it is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from molmo_nb_utils.segmentation import PictureMasks, Segmentation

try:
    import supervision as sv
except ImportError:  # optional: only to_detections needs it
    sv = None


def _one(masks: PictureMasks, class_name: str) -> Any:
    n = len(masks)
    return sv.Detections(
        xyxy=masks.boxes().astype(np.float32).reshape(-1, 4),
        mask=masks.masks,
        confidence=np.asarray(masks.scores, dtype=np.float32),
        class_id=np.zeros(n, dtype=int),
        tracker_id=np.asarray(masks.ids, dtype=int),
        data={"class_name": np.array([class_name] * n, dtype=object)},
    )


def to_detections(masks: PictureMasks | Segmentation, *, class_name: str = "object") -> Any:
    """``supervision.Detections`` of one picture's masks (``xyxy`` boxes, ``mask``, ``confidence``,
    ``tracker_id`` = Molmo2's ids, ``class_name``), or a list of them, one per picture of a ``Segmentation``."""
    if sv is None:
        raise ImportError(
            "to_detections needs supervision, an optional install: pip install supervision (then restart "
            "the kernel)"
        )
    if isinstance(masks, Segmentation):
        return [_one(m, class_name) for m in masks]
    if isinstance(masks, PictureMasks):
        return _one(masks, class_name)
    raise TypeError(f"to_detections takes PictureMasks or a Segmentation, got {type(masks).__name__}")
