"""Masks out of the notebooks: COCO instance segmentation for pycocotools, and supervision's Detections.

Why COCO: it is what detection and segmentation tools read (pycocotools' ``COCOeval``, CVAT, FiftyOne,
Roboflow). ``to_coco`` writes one COCO "image" per picture the segmenter saw (each image, or each frame
shown of the video, named and numbered as ``coco_images`` says, as the point export of the same video
names them) and one annotation per mask: its RLE (pycocotools' own encoding), area, box
``[x, y, width, height]`` around the mask, and the segmenter's score. The same file loads as ground
truth (``COCO``), and its annotations as results (``COCO.loadRes``), for ``iouType="segm"`` and
``"bbox"`` alike.

Why supervision: roboflow's annotators, trackers and zones take ``sv.Detections``. supervision is an
optional install (``pip install supervision``): the package imports without it, and ``to_detections``
says how to install it when it is missing.

One rule for both: an empty mask is no object (``PictureMasks.present``), so neither a COCO file nor
``len(detections)`` counts an object the segmenter did not find.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from molmo_nb_utils.coco_images import frame_images, picture_image
from molmo_nb_utils.masks.geometry import PictureMasks, encode_rle
from molmo_nb_utils.masks.segmenting import Segmentation
from molmo_nb_utils.media import VideoFrames
from molmo_nb_utils.paths import atomic_path

try:
    import supervision as sv
except ImportError:  # optional: only to_detections needs it
    sv = None


def _pictures(masks: Any) -> list[PictureMasks]:
    if isinstance(masks, PictureMasks):
        return [masks]
    pictures = (
        list(masks) if isinstance(masks, (Segmentation, Sequence)) and not isinstance(masks, str) else None
    )
    if pictures is None or not all(isinstance(m, PictureMasks) for m in pictures):
        raise TypeError(
            "give the masks of segment(...) (a Segmentation), one PictureMasks, or a list of them; got "
            f"{type(masks).__name__}"
        )
    return pictures


def _images(
    pictures: list[PictureMasks], names: Sequence[str] | None, video: VideoFrames | None, key: str | None
) -> dict[int, dict[str, Any]]:
    """The COCO image of each picture, by its place; a frame whose prompt time repeats an earlier one has none."""
    if video is not None:
        if names is not None:
            raise ValueError(
                "a video's frames are named after the video: give key='name in your dataset', not names"
            )
        if len(pictures) != len(video.timestamps):
            raise ValueError(
                f"got masks for {len(pictures)} pictures but {len(video.timestamps)} frames were shown: give "
                "one PictureMasks per frame shown (segment(...) or true_masks(...) of the same frames)"
            )
        return frame_images(key or video.info.path.name, video.plan)
    if key is not None:
        raise ValueError("key names a video: give video=answer.video with it, or names=[...] for pictures")
    names = [f"image_{k}" for k in range(1, len(pictures) + 1)] if names is None else list(names)
    if len(names) != len(pictures):
        raise ValueError(f"got {len(names)} names for {len(pictures)} pictures: give one name per picture")
    return {
        k: picture_image(name, p.size, k + 1) for k, (p, name) in enumerate(zip(pictures, names, strict=True))
    }


def to_coco(
    masks: Segmentation | PictureMasks | Sequence[PictureMasks],
    *,
    names: Sequence[str] | None = None,
    video: VideoFrames | None = None,
    key: str | None = None,
    category: str = "object",
) -> dict[str, Any]:
    """A COCO instance-segmentation dataset of these masks: a ``Segmentation``, one ``PictureMasks``, or
    a list of them.

    Images are named ``names`` (default ``image_1``, ``image_2``, ...), or, for the frames shown of a
    video (a ``Segmentation`` of a video carries them; give ``video=answer.video`` with a list, such as
    ``true_masks`` of the same frames), ``<key>/<frame index>.jpg`` with ``key`` the video's name in your
    dataset (default its file name): the names and ids ``export_coco`` gives the same frames, so the
    point and mask exports of one video load together. A mask's ``track_id`` is its Molmo2 id; an empty
    mask is left out (COCO has no empty instances).
    """
    pictures = _pictures(masks)
    if isinstance(masks, Segmentation):
        video = video if video is not None else masks.video
    images = _images(pictures, names, video, key)
    annotations = []
    for place, image in images.items():
        picture = pictures[place].present()
        if picture.size != (image["width"], image["height"]):
            raise ValueError(
                f"masks of picture {place + 1} are {picture.size[0]}x{picture.size[1]}, but it is shown "
                f"{image['width']}x{image['height']}: are they the masks of these frames?"
            )
        for mask, pid, score, box in zip(
            picture.masks, picture.ids, picture.scores, picture.boxes(), strict=True
        ):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": 1,
                    "segmentation": encode_rle(mask),
                    "area": int(mask.sum()),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                    "score": float(score),
                    "track_id": int(pid),
                }
            )
    return {
        "info": {"description": "masks from molmo_nb_utils.masks (a segmenter on Molmo2's points)"},
        "images": list(images.values()),
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


def _detections(masks: PictureMasks, class_name: str) -> Any:
    found = masks.present()
    n = len(found)
    return sv.Detections(
        xyxy=found.boxes().astype(np.float32).reshape(-1, 4),
        mask=found.masks,
        confidence=np.asarray(found.scores, dtype=np.float32),
        class_id=np.zeros(n, dtype=int),
        tracker_id=np.asarray(found.ids, dtype=int),
        data={"class_name": np.array([class_name] * n, dtype=object)},
    )


def to_detections(masks: PictureMasks | Segmentation, *, class_name: str = "object") -> Any:
    """``supervision.Detections`` of one picture's masks (``xyxy`` boxes, ``mask``, ``confidence``,
    ``tracker_id`` = Molmo2's ids, ``class_name``), or a list of them, one per picture of a
    ``Segmentation``. Empty masks are left out, as ``to_coco`` leaves them out."""
    if sv is None:
        raise ImportError(
            "to_detections needs supervision, an optional install: pip install supervision (then restart "
            "the kernel)"
        )
    if isinstance(masks, Segmentation):
        return [_detections(m, class_name) for m in masks]
    if isinstance(masks, PictureMasks):
        return _detections(masks, class_name)
    raise TypeError(f"to_detections takes PictureMasks or a Segmentation, got {type(masks).__name__}")
