"""Mask geometry: a region as COCO writes it, a picture's masks, their boxes, RLE and polygons, the disc rule.

Why one module: every other mask module (SAM 2, scores, exports, truth reading, drawing) takes its
boxes, run-length encoding and pixel rules from here, as supervision keeps all box and mask geometry in
one low module under both its ``Detections`` and its annotators. Nothing here draws or runs a model.

A region is written as COCO writes ``segmentation`` (CVAT, Label Studio and Roboflow export it):

* polygons: ``[[x1, y1, x2, y2, ...], ...]`` in pixels, one list per part of the object;
* RLE, uncompressed: ``{"size": [height, width], "counts": [0, 5, 3, ...]}``;
* RLE, compressed: ``{"size": [height, width], "counts": "<pycocotools string>"}``;
* a list of RLE parts of one object, merged.

``Mask`` keeps a region as given (small, hashable) and decodes it on demand with pycocotools; the
forms of one region decode to the same pixels, and RLE whose runs do not cover its size exactly is
refused in either form. ``PictureMasks`` holds the decoded masks of one picture (an (N, H, W) bool
array with ids and scores): what SAM 2 gives, what the scores compare and what the exports write.

Pixel rules, each stated once:

* ``inside``: AllenAI's in-mask test, the point rounded to the nearest pixel (Python's ``round``);
* ``mask_box``: pycocotools' box, (x0, y0, x1, y1) with x1, y1 exclusive;
* ``disc_mask``: a coin of diameter d at (x, y) covers the pixels whose centres lie within d / 2;
  ``disc_polygon`` is the outline of exactly those pixels, along their edges;
* ``upright_mask``: a mask drawn on a photo as stored is turned upright by its EXIF orientation with
  Pillow's ``exif_transpose``, as ``media.load_image`` turns the photo's pixels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps
from pycocotools import mask as coco_mask
from scipy import ndimage

# ---------------------------------------------------------------------------------------------
# Pixels and boxes


def inside(pixels: np.ndarray, x: float, y: float) -> bool:
    """Molmo2's test on a decoded (height, width) mask: the point rounded to the nearest pixel
    (Python's ``round``) is inside; a point outside the picture is not."""
    height, width = pixels.shape
    column, row = int(round(x)), int(round(y))
    return 0 <= column < width and 0 <= row < height and bool(pixels[row, column])


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in pixels around the mask's pixels, x1 and y1 exclusive (pycocotools' rule:
    a one-pixel mask at (3, 4) has the box (3, 4, 4, 5)); (0, 0, 0, 0) for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed run-length encoding of one (H, W) bool mask (``counts`` as text, JSON-ready)."""
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def rle_runs(counts: bytes) -> list[int]:
    """The run lengths a compressed COCO RLE string holds (pycocotools' ``rleFrString``, which its Python
    API does not expose): 6-bit characters from "0", 5 bits of value each, the sign in the last one,
    each run after the third written as the difference from the run two before."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        value = shift = 0
        more = True
        while more:
            if p == len(counts):
                raise ValueError("its RLE string ends inside a run")
            c = counts[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"{chr(counts[p])!r} is not a character of COCO's RLE strings")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p, shift = p + 1, shift + 5
            if not more and c & 0x10:
                value -= 1 << shift  # the last character's 0x10 bit is the sign
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


# ---------------------------------------------------------------------------------------------
# One region, as COCO gives it


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

    def coco(self) -> list[list[float]] | dict[str, Any]:
        """The region as COCO's ``segmentation``: polygons, or compressed RLE with its size."""
        if self.rle is None:
            return [list(p) for p in self.polygons]
        return {"size": [self.size[1], self.size[0]], "counts": self.rle.decode("ascii")}


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _size(value: Any, what: str) -> tuple[int, int]:
    """COCO's [height, width] as our (width, height)."""
    if not isinstance(value, Sequence) or len(value) != 2 or not all(_whole(v) and v > 0 for v in value):
        raise ValueError(f"{what}: an RLE mask's 'size' must be [height, width] in pixels, got {value!r}")
    return int(value[1]), int(value[0])


def _check_runs(runs: list[int], width: int, height: int, what: str) -> None:
    """The runs of an RLE must cover its picture exactly, or it decodes to another mask."""
    if any(r < 0 for r in runs):
        raise ValueError(f"{what}: its RLE has a negative run: it is damaged, export the mask again")
    if sum(runs) != width * height:
        raise ValueError(
            f"{what}: its RLE runs add up to {sum(runs)} pixels, but its size {height}x{width} has "
            f"{width * height}: is 'size' [height, width], and is it this mask's size?"
        )


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
            if not all(_whole(c) for c in counts):
                raise ValueError(f"{what}: uncompressed RLE counts must be whole numbers >= 0")
            _check_runs(counts, width, height, what)
            counts = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)[
                "counts"
            ]
        elif isinstance(counts, str):
            counts = counts.encode("ascii", errors="replace")
        if not isinstance(counts, bytes) or not counts:
            raise ValueError(f"{what}: RLE counts must be a list of numbers or a COCO string, got {counts!r}")
        try:
            runs = rle_runs(counts)
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None
        _check_runs(runs, width, height, what)
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


# ---------------------------------------------------------------------------------------------
# Masks drawn on another copy of the picture


def upright_mask(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """A (H, W) mask drawn on a photo as stored, turned as its EXIF ``orientation`` turns the photo
    (Pillow's ``exif_transpose``, the rule ``media.load_image`` applies to the pixels)."""
    if orientation in (None, 1):
        return pixels
    image = Image.fromarray(pixels.astype(np.uint8) * 255)
    image.getexif()[ExifTags.Base.Orientation] = int(orientation)
    return np.asarray(ImageOps.exif_transpose(image)) > 127


def fit_mask(mask: Mask, drawn_on: tuple[int, int], size: tuple[int, int], orientation: int = 1) -> Mask:
    """A region drawn on a ``drawn_on`` (width, height) copy of a picture, on the picture itself: scaled to
    ``size`` (the picture as stored), then turned upright by its EXIF ``orientation``.

    Polygons are scaled as numbers (no pixels lost); an RLE is resized to the nearest pixel. The result
    is an RLE of the upright picture; a region that needs neither is returned as it is.
    """
    drawn_on, size = (int(drawn_on[0]), int(drawn_on[1])), (int(size[0]), int(size[1]))
    if drawn_on == size and orientation in (None, 1):
        return mask
    width, height = size
    if mask.rle is None:
        sx, sy = width / drawn_on[0], height / drawn_on[1]
        scaled = tuple(tuple(v * (sx if k % 2 == 0 else sy) for k, v in enumerate(p)) for p in mask.polygons)
        pixels = Mask(polygons=scaled).decode(size)
    else:
        pixels = mask.decode(drawn_on)
        if drawn_on != size:
            resized = Image.fromarray(pixels.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
            pixels = np.asarray(resized) > 127
    encoded = coco_mask.encode(np.asfortranarray(upright_mask(pixels, orientation).astype(np.uint8)))
    height, width = (int(v) for v in encoded["size"])
    return Mask(rle=encoded["counts"], size=(width, height))


# ---------------------------------------------------------------------------------------------
# The disc rule (the sample coins)


def disc_mask(width: int, height: int, x: float, y: float, diameter: float) -> np.ndarray:
    """(height, width) bool: the pixels whose centres lie within ``diameter / 2`` of (x, y).

    Coordinates are continuous, (0, 0) the top-left corner of the picture, as in the ground truth; a
    coin pasted by ``scripts/make_sample_media.py`` covers at least half of exactly these pixels.
    """
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    return (cols - x) ** 2 + (rows - y) ** 2 <= (diameter / 2) ** 2


def _disc_rows(x: float, y: float, diameter: float) -> list[tuple[int, int, int]]:
    """(row, first column, last column + 1) of each pixel row of the disc: ``disc_mask``'s pixels."""
    r = diameter / 2
    rows = []
    for row in range(math.floor(y - r) - 1, math.ceil(y + r) + 1):
        dy = row + 0.5 - y
        if dy * dy > r * r:
            continue
        half = math.sqrt(r * r - dy * dy)
        first, end = math.ceil(x - half - 0.5), math.floor(x + half - 0.5) + 1
        if end > first:
            rows.append((row, first, end))
    return rows


def _without_straight_runs(corners: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The corners of a closed outline less repeats and the middle points of straight runs."""
    out = [c for k, c in enumerate(corners) if c != corners[k - 1]]
    keep = []
    for k, (x, y) in enumerate(out):
        (ax, ay), (bx, by) = out[k - 1], out[(k + 1) % len(out)]
        if (x - ax) * (by - y) != (y - ay) * (bx - x):  # a turn: a corner
            keep.append((x, y))
    return keep


def disc_polygon(x: float, y: float, diameter: float) -> list[list[float]]:
    """A disc as a COCO polygon ``[[x1, y1, x2, y2, ...]]``: the outline, along pixel edges, of exactly the
    pixels ``disc_mask`` gives (pycocotools decodes it to them), so a coin has one mask in either form."""
    rows = _disc_rows(x, y, diameter)
    if not rows:
        raise ValueError(f"a disc {diameter:g} px across at ({x:g}, {y:g}) covers no pixel centre")
    right = [corner for row, _, end in rows for corner in ((end, row), (end, row + 1))]
    left = [corner for row, first, _ in reversed(rows) for corner in ((first, row + 1), (first, row))]
    corners = _without_straight_runs([(float(cx), float(cy)) for cx, cy in right + left])
    return [[v for corner in corners for v in corner]]


# ---------------------------------------------------------------------------------------------
# The masks of one picture


@dataclass(frozen=True, eq=False)
class PictureMasks:
    """The masks on one picture (an image, or one frame shown): ``masks[k]`` is the mask of ``ids[k]``.

    ``masks`` is (N, H, W) bool at the size the picture is shown (upright); ``scores[k]`` is the
    segmenter's confidence that object ``ids[k]`` is there at all (SAM 2: the sigmoid of its object
    score; 1.0 for true masks).
    """

    masks: np.ndarray
    ids: tuple[int, ...]
    scores: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or self.masks.dtype != bool:
            raise ValueError(
                f"masks must be an (N, H, W) bool array, got {self.masks.dtype} {self.masks.shape}"
            )
        if not len(self.masks) == len(self.ids) == len(self.scores):
            raise ValueError(
                f"got {len(self.masks)} masks, {len(self.ids)} ids and {len(self.scores)} scores: give one of each"
            )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture."""
        return self.masks.shape[2], self.masks.shape[1]

    def boxes(self) -> np.ndarray:
        """(N, 4) float boxes x0, y0, x1, y1 (x1, y1 exclusive) around each mask; zeros for an empty mask."""
        return np.array([mask_box(m) for m in self.masks], dtype=np.float64).reshape(-1, 4)

    def mask(self, id: int) -> np.ndarray:
        """The mask of object ``id`` (all False where the picture has no such object)."""
        if id in self.ids:
            return self.masks[self.ids.index(id)]
        return np.zeros(self.masks.shape[1:], bool)

    def present(self) -> PictureMasks:
        """Only the masks that cover a pixel: an empty mask is no object (COCO has no empty instances,
        and a detection with the box (0, 0, 0, 0) would be counted by supervision's zones)."""
        keep = [k for k, m in enumerate(self.masks) if m.any()]
        if len(keep) == len(self.ids):
            return self
        return PictureMasks(
            self.masks[keep], tuple(self.ids[k] for k in keep), tuple(self.scores[k] for k in keep)
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        n = len(self.ids)
        return f"PictureMasks({n} mask{'' if n == 1 else 's'} of {self.size[0]}x{self.size[1]}, ids {list(self.ids)})"


def empty_masks(width: int, height: int) -> PictureMasks:
    """No masks on a ``width`` x ``height`` picture."""
    return PictureMasks(np.zeros((0, height, width), bool), (), ())
