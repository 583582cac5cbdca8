"""True masks: a truth file's own masks, else the sample coins' exact discs, on the frames shown.

Why a module: lessons 08 and 10 score by masks (Molmo2's in-mask rule, mask IoU, J&F) on the sample
data, whose coins were pasted as discs (``scripts/make_sample_media.py``), so their masks can be
written exactly instead of drawn by hand. One rule for a coin, ``coin_mask``: the pixels of its disc
(``masks.disc_mask``) less what an occluder hides, the visible part, as COCO and SAM 2 mean a mask.
A coin half behind the pillar has only its visible half; its true centre stays inside it, since the
truth lists a coin only while at least half of it is visible. Photos get a COCO polygon per true point
(``masks.disc_polygon``, the same pixels; read by ``mask_from_coco``, as ``load_dataset`` reads
masks); videos get a copy of their truth file with each coin's mask on each frame, which
``true_masks`` reads back to the very masks it gives for the original file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from molmo_nb_utils.dataset.items import DatasetItem
from molmo_nb_utils.evaluation import load_ground_truth
from molmo_nb_utils.masks.geometry import PictureMasks, disc_mask, disc_polygon, encode_rle, mask_from_coco
from molmo_nb_utils.media import FramePlan
from molmo_nb_utils.paths import atomic_path, output_path

__all__ = ["COIN_DIAMETERS", "coin_mask", "true_masks", "with_coin_masks"]

# Each sample photo's coin diameters in pixels, in the order of its true points (make_sample_media.py).
COIN_DIAMETERS = {
    "coin_table/table_01.jpg": (),
    "coin_table/table_02.jpg": (64,),
    "coin_table/table_03.jpg": (56, 64, 48),
    "coin_table/table_04.jpg": (64, 56, 72, 48),
    "coin_table/table_05.jpg": (56, 64, 48, 72, 56, 48),
    "coin_table/table_06.jpg": (64, 56, 56, 48, 56, 48, 64, 48),
}

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 and y1 exclusive


def coin_mask(
    width: int, height: int, x: float, y: float, diameter: float, occluders: Sequence[Box] = ()
) -> np.ndarray:
    """(height, width) bool: the visible pixels of a coin of ``diameter`` at (x, y), its disc less what
    the ``occluders`` (boxes in front of it) hide. THE rule for a sample coin's true mask."""
    pixels = disc_mask(width, height, x, y, diameter)
    for x0, y0, x1, y1 in occluders:
        pixels[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = False
    return pixels


def _coins(raw: Any, where: str) -> tuple[dict[int, float], list[Box]] | None:
    """The coin diameters by object id and the occluders of a truth file; None if it has no diameters."""
    try:
        objects = raw["objects"]
        if not objects or not all("diameter" in o for o in objects):
            return None
        diameters = {int(o["id"]): float(o["diameter"]) for o in objects}
        occluders = [
            (int(o["x0"]), int(o["y0"]), int(o["x1"]), int(o["y1"])) for o in raw.get("occluders", [])
        ]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: its objects or occluders cannot be read ({err})") from None
    return diameters, occluders


def _photo(item: DatasetItem) -> DatasetItem:
    outlines = (disc_polygon(p.x, p.y, d) for p, d in zip(item.points, COIN_DIAMETERS[item.key], strict=True))
    return replace(item, masks=tuple(mask_from_coco(o) for o in outlines))


def _video(item: DatasetItem, folder: str) -> DatasetItem:
    """A copy of the video's truth file with every coin's ``coin_mask`` as its mask on every frame (RLE),
    named after the item and the truth's content: two truth files never share a copy."""
    data = item.truth.read_bytes()
    raw = json.loads(data.decode("utf-8"))
    coins = _coins(raw, str(item.truth))
    if coins is None:
        return item
    diameters, occluders = coins
    width, height = int(raw["width"]), int(raw["height"])
    for frame in raw["frames"]:
        for o in frame["objects"]:
            o["mask"] = encode_rle(
                coin_mask(width, height, o["x"], o["y"], diameters[int(o["id"])], occluders)
            )
    name = f"{Path(item.key).stem}-{hashlib.sha256(data).hexdigest()[:12]}.json"
    path = output_path(f"{folder}/{name}")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(raw), encoding="utf-8")
    return replace(item, truth=path)


def with_coin_masks(items: Iterable[DatasetItem], folder: str = "coin_masks") -> list[DatasetItem]:
    """The sample items with their coins' exact masks: photos in ``COIN_DIAMETERS`` get one per true point,
    videos whose truth file gives coin diameters get a copy of it with masks (under
    ``downloaded_data/outputs/<folder>/``, named ``<video>-<hash of the truth file>.json``); any other
    item is returned as it is."""
    return [
        _video(item, folder)
        if item.kind == "video" and item.truth is not None
        else _photo(item)
        if item.key in COIN_DIAMETERS and item.points is not None
        else item
        for item in items
    ]


def true_masks(truth_path: str | os.PathLike, plan: FramePlan) -> list[PictureMasks]:
    """The true masks of a video's objects on the frames of ``plan`` (``answer.video.plan``).

    Where the ground truth gives masks (``GroundTruth.masks``), those; else the sample videos' coins by
    ``coin_mask``, from the diameters (``objects[].diameter``) and ``occluders`` of the truth file:
    exact, so the lesson's scores are too. Centres come from ``GroundTruth.at_plan``, the one place truth
    meets the frames shown.
    """
    path = Path(truth_path)
    truth = load_ground_truth(path)
    width, height = truth.width, truth.height
    if truth.masks:

        def drawn(index: int, p) -> np.ndarray:
            return truth.mask_of(index, p.id).decode((width, height))
    else:
        coins = _coins(json.loads(path.read_text(encoding="utf-8")), str(path))
        if coins is None:
            raise ValueError(f"{path} has neither masks nor coin diameters: true masks need one or the other")
        diameters, occluders = coins

        def drawn(index: int, p) -> np.ndarray:
            return coin_mask(width, height, p.x, p.y, diameters[p.id], occluders)

    at_time: dict[float, list] = {}
    for p in truth.at_plan(plan):
        at_time.setdefault(p.time, []).append(p)
    out = []
    for index, t in zip(plan.indices, plan.times, strict=True):
        here = sorted(at_time.get(float(t), []), key=lambda p: p.id)
        masks = [drawn(index, p) for p in here]
        out.append(
            PictureMasks(
                np.stack(masks) if masks else np.zeros((0, height, width), bool),
                tuple(p.id for p in here),
                tuple(1.0 for _ in here),
            )
        )
    return out
