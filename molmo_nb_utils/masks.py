"""Object masks in ground truth: COCO polygons and RLE, decoded with pycocotools.

Why masks: Molmo2's own evaluation (allenai/molmo2, ``olmo/eval/evaluators.py``) counts a pointed
object as found only when the point lies inside the object's segmentation mask. With masks in the
truth, our scores are computed by that rule and can stand next to the paper's.

A mask is written as COCO writes ``segmentation`` (CVAT, Label Studio and Roboflow export it):

* polygons: ``[[x1, y1, x2, y2, ...], ...]`` in pixels, one list per part of the object;
* RLE, uncompressed: ``{"size": [height, width], "counts": [0, 5, 3, ...]}``;
* RLE, compressed: ``{"size": [height, width], "counts": "<pycocotools string>"}``;
* a list of RLE parts of one object, merged.

``Mask`` keeps the mask as given (small, hashable) and decodes it on demand; all three forms of one
region decode to the same pixels. ``contains`` is AllenAI's test: the point rounded to the nearest
pixel (Python's ``round``), outside the picture is outside the mask.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask
from scipy import ndimage

__all__ = ["Mask", "check_mask_sizes", "inside", "mask_from_coco", "masks_of_points"]


@dataclass(frozen=True)
class Mask:
    """One object's region: COCO polygons (pixels) or a compressed RLE of a ``size`` picture.

    ``size`` is (width, height), as everywhere in this package (COCO's own "size" is [height,
    width]); polygons carry no size and take the picture's when decoded.
    """

    polygons: tuple[tuple[float, ...], ...] = ()
    rle: bytes | None = None  # compressed COCO RLE counts
    size: tuple[int, int] | None = None  # (width, height) of an RLE mask; None for polygons

    def decode(self, size: tuple[int, int]) -> np.ndarray:
        """The mask as a (height, width) bool array for a picture of ``size`` = (width, height)."""
        width, height = int(size[0]), int(size[1])
        if self.rle is not None:
            if self.size != (width, height):
                raise ValueError(
                    f"the mask is for a {self.size[0]}x{self.size[1]} picture, not {width}x{height}: "
                    "is it the right mask, or was the picture resized?"
                )
            rle = {"size": [height, width], "counts": self.rle}
        else:
            rle = coco_mask.merge(coco_mask.frPyObjects([list(p) for p in self.polygons], height, width))
        return coco_mask.decode(rle).astype(bool)

    def contains(self, x: float, y: float, size: tuple[int, int]) -> bool:
        """Whether the point (x, y), rounded to the nearest pixel, lies inside (Molmo2's rule)."""
        return inside(self.decode(size), x, y)

    def inner_point(self, size: tuple[int, int]) -> tuple[float, float]:
        """A point well inside the region: the pixel farthest from its edge (the centroid of a ring
        or a crescent lies outside it). Where COCO gives masks but no points, this is the true point."""
        pixels = self.decode(size)
        if not pixels.any():
            raise ValueError("the mask covers no pixel: it has no point inside")
        depth = ndimage.distance_transform_edt(np.pad(pixels, 1))[1:-1, 1:-1]
        row, column = np.unravel_index(int(np.argmax(depth)), depth.shape)
        return float(column), float(row)


def inside(pixels: np.ndarray, x: float, y: float) -> bool:
    """Molmo2's test on a decoded (height, width) mask: the point rounded to the nearest pixel
    (Python's ``round``) is inside; a point outside the picture is not."""
    height, width = pixels.shape
    column, row = int(round(x)), int(round(y))
    return 0 <= column < width and 0 <= row < height and bool(pixels[row, column])


def _size(value: Any, what: str) -> tuple[int, int]:
    """COCO's [height, width] as our (width, height)."""
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"{what}: an RLE mask's 'size' must be [height, width] in pixels, got {value!r}")
    return int(value[1]), int(value[0])


def mask_from_coco(value: Any, what: str = "mask") -> Mask:
    """A ``Mask`` from COCO's ``segmentation``: polygons, or RLE with compressed or uncompressed counts.

    ``what`` names the mask in errors (e.g. "items.json, item 3 (a.png), point 2").
    """
    if isinstance(value, Mapping):
        if set(value) != {"size", "counts"}:
            raise ValueError(
                f"{what}: an RLE mask is {{'size': [height, width], 'counts': ...}}, got {value!r}"
            )
        width, height = _size(value["size"], what)
        counts = value["counts"]
        if isinstance(counts, list):
            if not all(
                isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 0 for c in counts
            ):
                raise ValueError(f"{what}: uncompressed RLE counts must be whole numbers >= 0")
            if sum(counts) != width * height:
                raise ValueError(
                    f"{what}: its RLE counts add up to {sum(counts)} pixels, but its size {height}x{width} "
                    f"has {width * height}: is 'size' [height, width]?"
                )
            counts = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)[
                "counts"
            ]
        elif isinstance(counts, str):
            counts = counts.encode("ascii", errors="replace")
        if not isinstance(counts, bytes) or not counts:
            raise ValueError(f"{what}: RLE counts must be a list of numbers or a COCO string, got {counts!r}")
        return Mask(rle=counts, size=(width, height))
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and value
        and all(isinstance(v, Mapping) for v in value)
    ):
        # Several RLE parts of one object (as Molmo2's own mask reader accepts): merged into one.
        parts = [mask_from_coco(v, f"{what}, part {n}") for n, v in enumerate(value, start=1)]
        if len({m.size for m in parts}) > 1:
            raise ValueError(f"{what}: its RLE parts are for pictures of different sizes")
        width, height = parts[0].size
        merged = coco_mask.merge([{"size": [height, width], "counts": m.rle} for m in parts])
        return Mask(rle=merged["counts"], size=(width, height))
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        parts = [value] if all(isinstance(v, numbers.Real) for v in value) else value  # one flat polygon
        polygons = []
        for part in parts:
            if (
                not isinstance(part, Sequence)
                or isinstance(part, str)
                or len(part) < 6
                or len(part) % 2
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in part)
            ):
                raise ValueError(
                    f"{what}: a polygon is [x1, y1, x2, y2, x3, y3, ...] in pixels (3 corners or more), "
                    f"got {part!r}"
                )
            polygons.append(tuple(float(v) for v in part))
        return Mask(polygons=tuple(polygons))
    raise ValueError(
        f"{what}: a mask is COCO polygons [[x1, y1, x2, y2, ...], ...] or RLE "
        f"{{'size': [height, width], 'counts': ...}}, got {value!r}"
    )


def masks_of_points(value: Any, where: str) -> tuple[Mask, ...] | None:
    """The masks of a list of true points (dicts with ``"mask"``), one per point; None if none has one.

    Every point or none: an object without a mask cannot be scored by the in-mask rule.
    """
    if isinstance(value, str) or not isinstance(value, Sequence):
        return None  # a CSV cell "x y; x y": points only
    given = [isinstance(p, Mapping) and p.get("mask") is not None for p in value]
    if not any(given):
        return None
    if not all(given):
        missing = [n for n, g in enumerate(given, start=1) if not g]
        raise ValueError(
            f"{where}: points {missing} have no 'mask' but others do; give every point its object's mask, "
            "or none (then points are scored by distance)"
        )
    return tuple(mask_from_coco(p["mask"], f"{where}, point {n}") for n, p in enumerate(value, start=1))


def check_mask_sizes(masks: Sequence[Mask] | None, size: tuple[int, int], where: str) -> None:
    """RLE masks must be of the picture's size (width, height); polygons take any size."""
    for n, mask in enumerate(masks or (), start=1):
        if mask.size is not None and mask.size != tuple(size):
            raise ValueError(
                f"{where}: the mask of point {n} is for a {mask.size[0]}x{mask.size[1]} picture, but the "
                f"picture is {size[0]}x{size[1]}: is it the right mask, or was the picture resized?"
            )
