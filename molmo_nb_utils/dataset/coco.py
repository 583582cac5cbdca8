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

Why so strict: a truth file that scores the wrong thing does so silently. Two images with one id, an
annotation whose ``image_id`` or ``category_id`` matches nothing (``"1"`` in one list, ``1`` in the
other), are refused; categories of one name are read together. Masks are laid on the photo as the model
sees it (upright, at its full size, as points and pixels are): a file that gives the photo's stored
size of a sideways phone photo (EXIF orientation 5-8) had its masks drawn on the stored pixels, which
are turned as ``load_image`` turns them; masks drawn on a smaller or larger copy of the same shape are
scaled, with a warning; any other size is refused. Where the orientation only flips or turns the photo
by 180 degrees (2-4) its size cannot tell which way the masks were drawn: they are read as drawn on the
photo as shown (as browsers, and so web labelling tools, show it), with a warning.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from molmo_nb_utils.masks.geometry import Mask, fit_mask, mask_from_coco
from molmo_nb_utils.media import image_orientation

__all__ = ["coco_entries", "is_coco"]

TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def is_coco(data: Any) -> bool:
    """Does this parsed JSON look like a COCO instances file (``images`` and ``annotations`` lists)?"""
    return (
        isinstance(data, Mapping)
        and isinstance(data.get("images"), list)
        and isinstance(data.get("annotations"), list)
    )


def _categories(data: Mapping[str, Any], where: str, label: str) -> tuple[set[Any], str, set[Any]]:
    """The ids of the category to read (every category named ``label``, or of the file's only name), its
    name, and every category id of the file."""
    categories = [
        (c["id"], str(c["name"])) for c in data.get("categories") or [] if "id" in c and "name" in c
    ]
    if not categories:
        raise ValueError(f"{where}: a COCO file needs 'categories' with an id and a name each")
    names = sorted({name for _, name in categories})
    name = label if label in names else names[0] if len(names) == 1 else None
    if name is None:
        raise ValueError(
            f"{where} holds {len(names)} categories ({', '.join(names)}): load one "
            "with load_dataset(path, label='<category name>')"
        )
    return {cid for cid, n in categories if n == name}, name, {cid for cid, _ in categories}


def _images(data: Mapping[str, Any], where: str) -> dict[Any, Mapping[str, Any]]:
    """The images by id; an id given twice is refused (its annotations would go to both images)."""
    by_id: dict[Any, Mapping[str, Any]] = {}
    for image in data["images"]:
        if not isinstance(image, Mapping) or not image.get("file_name"):
            raise ValueError(f"{where}: every COCO image needs a 'file_name', got {image!r}")
        size = (image.get("width"), image.get("height"))
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in size):
            raise ValueError(f"{where}: image {image['file_name']} needs its 'width' and 'height' in pixels")
        key = image.get("id")
        if key in by_id:
            raise ValueError(
                f"{where}: images {by_id[key]['file_name']} and {image['file_name']} have the same id {key!r}, "
                "so each would get the other's annotations: give every image its own id"
            )
        by_id[key] = image
    return by_id


def _unmatched(found: list[Any], known: set[Any], what: str, where: str) -> None:
    """Refuse annotations whose ``what`` id matches no image or category, naming them and a likely cause."""
    if not found:
        return
    shown = ", ".join(repr(v) for v in sorted(set(found), key=repr)[:5])
    kinds = {type(v).__name__ for v in found} | {type(v).__name__ for v in known}
    hint = (
        f" (ids are written as {' and as '.join(sorted(kinds))}: write them all as numbers, as COCO does)"
        if len(kinds) > 1
        else ""
    )
    raise ValueError(
        f"{where}: {len(found)} annotation(s) have a {what} that matches no {what.split('_')[0]}: {shown}{hint}. "
        "Their objects would be left out of the truth: fix the file (export it again)."
    )


def _fit(mask: Mask, image: Mapping[str, Any], root: Path | None, what: str) -> tuple[Mask, str | None]:
    """The mask on the photo as shown (see the module's docstring), and a warning to give, if any."""
    given = (int(image["width"]), int(image["height"]))
    if mask.size is not None and mask.size != given:
        raise ValueError(
            f"{what}: its RLE is for a {mask.size[0]}x{mask.size[1]} picture, but its image says "
            f"{given[0]}x{given[1]}: fix the file (export it again)"
        )
    path = root / str(image["file_name"]) if root is not None else None
    if path is None or not path.is_file():
        return mask, None  # a missing photo is reported by load_dataset, naming every missing file
    stored, orientation = image_orientation(path)
    upright = stored[::-1] if orientation in TURNED else stored
    if given == upright:
        note = (
            f"its EXIF orientation {orientation} turns or flips the photo without changing its size, so the "
            "file cannot tell how the masks were drawn: read as drawn on the photo as shown"
            if orientation in (2, 3, 4)
            else None
        )
        return mask, note
    if orientation in TURNED and given == stored:
        return fit_mask(mask, given, stored, orientation), None  # drawn on the stored, sideways pixels
    for drawn_on, turn in ((upright, 1), (stored, orientation)):
        if _same_shape(given, drawn_on):
            note = (
                f"its masks were drawn on a {given[0]}x{given[1]} copy of the {upright[0]}x{upright[1]} photo: "
                "scaled to the photo"
            )
            return fit_mask(mask, given, drawn_on, turn), note
    raise ValueError(
        f"{what}: the file says the image is {given[0]}x{given[1]}, but {path.name} is {upright[0]}x{upright[1]} "
        "(as shown, upright): not a copy of the same shape, so its masks cannot be laid on it. Is file_name "
        "the right photo, or are width and height swapped?"
    )


def _same_shape(given: tuple[int, int], size: tuple[int, int]) -> bool:
    """Is ``given`` a resized copy of ``size``: scaled to its width, the height within one pixel of the copy's?"""
    scale = size[0] / given[0]
    return abs(given[1] * scale - size[1]) <= max(1.0, scale)


def coco_entries(
    data: Mapping[str, Any], where: str, label: str, root: Path | None = None
) -> tuple[list[dict[str, Any]], str]:
    """The dataset list entries of a COCO instances file, and their label (the category read).

    One entry per image: ``file`` (COCO's ``file_name``, relative to ``root``, the file's folder), the
    count and the ``points``, each with its object's ``mask`` (the annotation's segmentation, laid on the
    photo as shown) and its annotation ``id``.
    """
    wanted, name, category_ids = _categories(data, where, label)
    images = _images(data, where)
    boxes_only = crowds = 0
    no_image, no_category = [], []
    by_image: dict[Any, list[Mapping[str, Any]]] = {}
    for annotation in data["annotations"]:
        if annotation.get("image_id") not in images:
            no_image.append(annotation.get("image_id"))
        if annotation.get("category_id") not in category_ids:
            no_category.append(annotation.get("category_id"))
        if annotation.get("category_id") not in wanted:
            continue
        if annotation.get("iscrowd"):
            crowds += 1
            continue
        by_image.setdefault(annotation.get("image_id"), []).append(annotation)
    _unmatched(no_image, set(images), "image_id", where)
    _unmatched(no_category, category_ids, "category_id", where)
    entries, notes = [], {}
    for key, image in images.items():
        size = (image["width"], image["height"])
        points = []
        for n, annotation in enumerate(by_image.get(key, []), start=1):
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
                mask, note = _fit(mask_from_coco(segmentation, what), image, root, what)
                cx, cy = mask.inner_point(mask.size or size)
            except ValueError as err:
                raise ValueError(str(err) if str(err).startswith(what) else f"{what}: {err}") from None
            if note:
                notes[str(image["file_name"])] = note
            points.append({"id": n, "x": cx, "y": cy, "mask": mask.coco()})
        entries.append(
            {"file": str(image["file_name"]), "label": name, "count": len(points), "points": points}
        )
    for file_name, note in notes.items():
        warnings.warn(f"{where}, {file_name}: {note}", stacklevel=4)
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
