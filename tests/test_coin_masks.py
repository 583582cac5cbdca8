"""The sample coins' exact masks: discs where the truth puts each coin, written without touching the truth."""

from __future__ import annotations

import json
import math

from molmo_nb_utils import COIN_DIAMETERS, disc_polygon, load_dataset, mask_from_coco, with_coin_masks
from molmo_nb_utils.paths import INPUT_DIR


def test_a_disc_polygon_covers_its_disc():
    mask = mask_from_coco(disc_polygon(100, 50, 40)).decode((200, 100))
    assert mask[50, 100] and not mask[50, 125] and not mask[5, 100]
    assert abs(mask.sum() - math.pi * 20**2) < 0.03 * math.pi * 20**2


def test_sample_items_get_one_mask_per_coin_and_videos_a_masked_copy_of_their_truth():
    items = load_dataset(INPUT_DIR / "coin_table.json")
    before = {i.truth: i.truth.read_bytes() for i in items if i.truth is not None}
    masked = with_coin_masks(items, folder="test_coin_masks")
    for item, new in zip(items, masked, strict=True):
        if item.key in COIN_DIAMETERS:
            assert len(new.masks) == len(item.points) == len(COIN_DIAMETERS[item.key])
            for point, mask in zip(item.points, new.masks, strict=True):
                assert mask.decode((640, 360))[round(point.y), round(point.x)]
        elif item.kind == "video":
            frames = json.loads(new.truth.read_text())["frames"]
            assert all("mask" in o for f in frames for o in f["objects"]) and new.truth != item.truth
        else:
            assert new == item  # the coins photo has a count only
    assert {t: t.read_bytes() for t in before} == before  # the sample truth files are untouched
