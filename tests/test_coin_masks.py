"""The sample coins' exact masks: discs where the truth puts each coin, written without touching the truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from molmo_nb_utils import (
    COIN_DIAMETERS,
    disc_polygon,
    load_dataset,
    load_ground_truth,
    mask_from_coco,
    paths,
    sample_frames,
    true_masks,
    with_coin_masks,
)
from molmo_nb_utils.dataset import coin_mask
from molmo_nb_utils.masks import disc_mask
from molmo_nb_utils.paths import INPUT_DIR


@pytest.fixture(autouse=True)
def outputs(monkeypatch, tmp_path):
    """Masked truth files go to a temporary folder, never into the reader's downloaded_data/."""
    monkeypatch.setattr(paths, "OUTPUT_DIR", tmp_path / "outputs")


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


# --- one rule for a coin (issue 29) ------------------------------------------------------------


def test_a_disc_polygon_covers_exactly_the_pixels_of_the_disc_rule():
    for x, y, d in [(100, 50, 40), (80.3, 100.7, 72), (3.2, 4.9, 17), (639.4, 200.0, 60)]:
        polygon = disc_polygon(x, y, d)
        assert np.array_equal(mask_from_coco(polygon).decode((640, 360)), disc_mask(640, 360, x, y, d))


def test_a_photo_s_coins_and_a_video_s_coins_follow_one_rule():
    """with_coin_masks (08's in-mask scores) and true_masks (10's IoU and J&F) give a coin the same pixels:
    its disc less what the pillar hides, on photos and on every frame of the video."""
    items = load_dataset(INPUT_DIR / "coin_table.json")
    masked = with_coin_masks(items, folder="test_coin_masks")
    photo = next(i for i in masked if i.key == "coin_table/table_04.jpg")
    for point, mask, d in zip(photo.points, photo.masks, COIN_DIAMETERS[photo.key], strict=True):
        assert np.array_equal(mask.decode((640, 360)), coin_mask(640, 360, point.x, point.y, d))
    video = next(i for i in masked if i.key == "moving_objects.mp4")
    original = next(i for i in items if i.key == "moving_objects.mp4")
    plan = sample_frames(video.path, fps=8).plan
    written, exact = true_masks(video.truth, plan), true_masks(original.truth, plan)
    pillar = json.loads(original.truth.read_text())["occluders"][0]
    for a, b in zip(written, exact, strict=True):
        assert a.ids == b.ids and np.array_equal(a.masks, b.masks)
        assert not a.masks[:, pillar["y0"] :, pillar["x0"] : pillar["x1"]].any()
    # a coin's true centre lies in its visible part wherever the truth lists it (at least half visible)
    truth = load_ground_truth(video.truth)
    assert all(truth.mask_of(i, p.id).contains(p.x, p.y, (640, 360)) for i, p in _on_frames(truth))


def _on_frames(truth):
    for index in range(truth.num_frames):
        t = index / truth.fps
        for p in truth.points:
            if abs(p.time - t) < 1e-9:
                yield index, p


def test_two_truth_files_of_one_name_get_copies_of_their_own_issue_30(tmp_path):
    """a/truth.json and b/truth.json (one name, other coins) must not share one masked copy."""
    raw = json.loads((INPUT_DIR / "ground_truth" / "moving_objects.json").read_text())
    for folder, shift in (("a", 0), ("b", 30)):
        (tmp_path / folder).mkdir()
        moved = json.loads(json.dumps(raw))
        for frame in moved["frames"]:
            for o in frame["objects"]:
                o["y"] = min(o["y"] + shift, 359)
        (tmp_path / folder / "truth.json").write_text(json.dumps(moved))
    video = str(INPUT_DIR / "moving_objects.mp4")
    items = [
        load_dataset([{"file": video, "truth": str(tmp_path / f / "truth.json")}])[0] for f in ("a", "b")
    ]
    assert items[0].key == items[1].key  # one video, two truth files of one name
    a, b = with_coin_masks(items, folder="test_coin_masks_same_name")
    assert a.truth != b.truth
    first = json.loads(a.truth.read_text())["frames"][0]["objects"][0]
    other = json.loads(b.truth.read_text())["frames"][0]["objects"][0]
    assert first["mask"] != other["mask"]
    assert mask_from_coco(first["mask"]).contains(first["x"], first["y"], (640, 360))
    assert mask_from_coco(other["mask"]).contains(other["x"], other["y"], (640, 360))
