"""Masks out of the notebooks: COCO instance segmentation for pycocotools, and plain files.

Why COCO: it is what detection and segmentation tools read (pycocotools' ``COCOeval``, CVAT, FiftyOne,
Roboflow). ``to_coco`` writes one COCO "image" per picture SAM 2 saw (each image, or each frame shown of
the video, with its frame index and time) and one annotation per mask: its RLE (pycocotools' own
encoding), area, box ``[x, y, width, height]`` around the mask, and SAM 2's score. The same file loads
as ground truth (``COCO``), and its annotations as results (``COCO.loadRes``), for ``iouType="segm"``
and ``"bbox"`` alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from molmo_nb_utils.mask_scores import rle
from molmo_nb_utils.paths import atomic_path
from molmo_nb_utils.segmentation import PictureMasks, Segmentation


def _names(segmentation: Segmentation) -> list[str]:
    video = segmentation.video
    if video is not None:
        return [f"{video.info.path.name}#frame={i}" for i in video.indices]
    return [f"image_{k}" for k in range(1, len(segmentation) + 1)]


def to_coco(
    masks: Segmentation | Sequence[PictureMasks],
    *,
    names: Sequence[str] | None = None,
    category: str = "object",
) -> dict[str, Any]:
    """A COCO instance-segmentation dataset of these masks (a ``Segmentation``, or one ``PictureMasks``
    per picture with their file ``names``); image ids are 1, 2, ... in picture order.

    A mask's ``track_id`` is its Molmo2 id; an empty mask is left out (COCO has no empty instances).
    """
    pictures = list(masks)
    if names is None:
        if not isinstance(masks, Segmentation):
            raise ValueError("give the file names of the pictures (names=[...]), one per set of masks")
        names = _names(masks)
    if len(names) != len(pictures):
        raise ValueError(f"got {len(names)} names for {len(pictures)} pictures: give one name per picture")
    video = masks.video if isinstance(masks, Segmentation) else None
    images, annotations = [], []
    for k, (picture, name) in enumerate(zip(pictures, names, strict=True), start=1):
        width, height = picture.size
        image = {"id": k, "file_name": str(name), "width": width, "height": height}
        if video is not None:
            image |= {"frame": int(video.indices[k - 1]), "time": float(video.timestamps[k - 1])}
        images.append(image)
        for mask, pid, score, box in zip(
            picture.masks, picture.ids, picture.scores, picture.boxes(), strict=True
        ):
            area = int(mask.sum())
            if not area:
                continue
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": k,
                    "category_id": 1,
                    "segmentation": rle(mask),
                    "area": area,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                    "score": float(score),
                    "track_id": int(pid),
                }
            )
    return {
        "info": {"description": "masks from molmo_nb_utils.segmentation (SAM 2 on Molmo2's points)"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": category}],
    }


def save_coco(coco: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a ``to_coco`` dataset as JSON (atomically: an interrupted write leaves no file)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ValueError(f"a COCO file is JSON: name it *.json, not {path.name}")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(coco))
    return path
