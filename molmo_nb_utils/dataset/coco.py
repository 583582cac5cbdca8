"""COCO instances files (what CVAT, Label Studio and Roboflow export) as dataset items with masks.

Why: people who label their own data export it as COCO "instances": images, categories and one
annotation per object with its ``segmentation`` (polygons or RLE) and ``bbox``. Read as a dataset
list, every image becomes an item whose true points carry their objects' masks, so it is scored
by Molmo2's own in-mask rule (``evaluation.MASK_RULE``). ``load_dataset("instances.json")`` reads
such a file through ``coco_entries``.

COCO has masks but no points: each object's true point is the pixel deepest inside its mask
(``Mask.inner_point``), which lies inside even a ring or a crescent. An annotation without a
segmentation (a box only) uses its box as its mask, with a warning; crowd regions
(``iscrowd``: many objects in one mask) are left out, with a warning, since they cannot be
counted or pointed at one by one.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping
from typing import Any

from molmo_nb_utils.masks import mask_from_coco

__all__ = ["coco_entries", "is_coco"]


def is_coco(data: Any) -> bool:
    """Does this parsed JSON look like a COCO instances file (``images`` and ``annotations`` lists)?"""
    return (
        isinstance(data, Mapping)
        and isinstance(data.get("images"), list)
        and isinstance(data.get("annotations"), list)
    )


def _category(data: Mapping[str, Any], where: str, label: str) -> tuple[Any, str]:
    """The category to read: the one named ``label``, or the file's only one."""
    categories = {c["id"]: str(c["name"]) for c in data.get("categories") or [] if "id" in c and "name" in c}
    if not categories:
        raise ValueError(f"{where}: a COCO file needs 'categories' with an id and a name each")
    named = [cid for cid, name in categories.items() if name == label]
    if named:
        return named[0], label
    if len(categories) == 1:
        ((cid, name),) = categories.items()
        return cid, name
    raise ValueError(
        f"{where} holds {len(categories)} categories ({', '.join(sorted(categories.values()))}): load one "
        "with load_dataset(path, label='<category name>')"
    )


def coco_entries(data: Mapping[str, Any], where: str, label: str) -> tuple[list[dict[str, Any]], str]:
    """The dataset list entries of a COCO instances file, and their label (the category read).

    One entry per image: ``file`` (COCO's ``file_name``, relative to the file's folder), the count
    and the ``points``, each with its object's ``mask`` (the annotation's segmentation) and its
    annotation ``id``.
    """
    category, name = _category(data, where, label)
    boxes_only = crowds = 0
    by_image: dict[Any, list[Mapping[str, Any]]] = {}
    for annotation in data["annotations"]:
        if annotation.get("category_id") != category:
            continue
        if annotation.get("iscrowd"):
            crowds += 1
            continue
        by_image.setdefault(annotation.get("image_id"), []).append(annotation)
    entries = []
    for image in data["images"]:
        if not isinstance(image, Mapping) or not image.get("file_name"):
            raise ValueError(f"{where}: every COCO image needs a 'file_name', got {image!r}")
        size = (image.get("width"), image.get("height"))
        if not all(isinstance(v, numbers.Integral) and v > 0 for v in size):
            raise ValueError(f"{where}: image {image['file_name']} needs its 'width' and 'height' in pixels")
        points = []
        for n, annotation in enumerate(by_image.get(image.get("id"), []), start=1):
            segmentation = annotation.get("segmentation")
            what = f"{where}, annotation {annotation.get('id', n)} ({image['file_name']})"
            if not segmentation:
                box = annotation.get("bbox")
                if not (
                    isinstance(box, list) and len(box) == 4 and all(isinstance(v, numbers.Real) for v in box)
                ):
                    raise ValueError(
                        f"{what}: it has neither a 'segmentation' nor a 'bbox' [x, y, width, height]"
                    )
                boxes_only += 1
                x, y, w, h = box
                segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            try:
                cx, cy = mask_from_coco(segmentation, what).inner_point(size)
            except ValueError as err:
                raise ValueError(f"{what}: {err}") from None
            points.append({"id": n, "x": cx, "y": cy, "mask": segmentation})
        entries.append(
            {"file": str(image["file_name"]), "label": name, "count": len(points), "points": points}
        )
    if boxes_only:
        warnings.warn(
            f"{where}: {boxes_only} '{name}' annotation(s) have no segmentation; their boxes are used as masks",
            stacklevel=4,
        )
    if crowds:
        warnings.warn(
            f"{where}: {crowds} crowd annotation(s) (iscrowd) of '{name}' left out: they are many objects in one mask",
            stacklevel=4,
        )
    return entries, name
