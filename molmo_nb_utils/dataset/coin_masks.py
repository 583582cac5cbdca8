"""Exact true masks for the sample coins: each coin is a disc of known diameter.

Why a module: lessons 08 and 10 score by masks (Molmo2's in-mask rule, mask IoU) on the sample data,
whose coins were pasted as discs (``scripts/make_sample_media.py``), so their masks can be written
exactly instead of drawn by hand. Photos get a COCO polygon per true point (read by ``mask_from_coco``,
as ``load_dataset`` reads masks); videos get a copy of their truth file with a disc per object per frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import replace

from molmo_nb_utils.dataset.items import DatasetItem
from molmo_nb_utils.masks import mask_from_coco
from molmo_nb_utils.paths import atomic_path, output_path

__all__ = ["COIN_DIAMETERS", "disc_polygon", "with_coin_masks"]

# Each sample photo's coin diameters in pixels, in the order of its true points (make_sample_media.py).
COIN_DIAMETERS = {
    "coin_table/table_01.jpg": (),
    "coin_table/table_02.jpg": (64,),
    "coin_table/table_03.jpg": (56, 64, 48),
    "coin_table/table_04.jpg": (64, 56, 72, 48),
    "coin_table/table_05.jpg": (56, 64, 48, 72, 56, 48),
    "coin_table/table_06.jpg": (64, 56, 56, 48, 56, 48, 64, 48),
}


def disc_polygon(x: float, y: float, diameter: float, corners: int = 64) -> list[list[float]]:
    """A disc's outline as a COCO polygon, ``[[x1, y1, x2, y2, ...]]`` around its centre."""
    r, turn = diameter / 2, 2 * math.pi / corners
    return [[v for k in range(corners) for v in (x + r * math.cos(k * turn), y + r * math.sin(k * turn))]]


def _photo(item: DatasetItem) -> DatasetItem:
    outlines = (disc_polygon(p.x, p.y, d) for p, d in zip(item.points, COIN_DIAMETERS[item.key], strict=True))
    return replace(item, masks=tuple(mask_from_coco(o) for o in outlines))


def _video(item: DatasetItem, folder: str) -> DatasetItem:
    """A copy of the video's truth file with every coin's disc as its mask on every frame (a coin half
    behind the pillar keeps its whole disc: the truth lists it while half of it is visible)."""
    raw = json.loads(item.truth.read_text(encoding="utf-8"))
    diameter = {o["id"]: o["diameter"] for o in raw["objects"]}
    for frame in raw["frames"]:
        for o in frame["objects"]:
            o["mask"] = disc_polygon(o["x"], o["y"], diameter[o["id"]])
    path = output_path(f"{folder}/{item.truth.name}")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(raw), encoding="utf-8")
    return replace(item, truth=path)


def with_coin_masks(items: Iterable[DatasetItem], folder: str = "coin_masks") -> list[DatasetItem]:
    """The sample items with their coins' exact masks: photos in ``COIN_DIAMETERS`` get one per true point,
    videos with a truth file get a copy of it with masks (under ``downloaded_data/outputs/<folder>/``);
    any other item is returned as it is."""
    return [
        _video(item, folder)
        if item.kind == "video" and item.truth is not None
        else _photo(item)
        if item.key in COIN_DIAMETERS and item.points is not None
        else item
        for item in items
    ]
