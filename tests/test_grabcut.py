"""GrabCut, the segmenter with no weights (issue 35, item 6): loaded by name offline, real masks of objects
of any size from one click, one click per frame along a track, and the lesson's worked coins masked well
above the tiny random SAM 2 (which stays for testing SAM 2's plumbing, in test_segmentation.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from molmo_nb_utils.asking import Answer
from molmo_nb_utils.dataset import load_dataset, true_masks, with_coin_masks
from molmo_nb_utils.evaluation import load_ground_truth
from molmo_nb_utils.grounding import Point, format_points
from molmo_nb_utils.masks import (
    GrabCut,
    disc_mask,
    grabcut,
    load_segmenter,
    mask_iou,
    mask_scores,
    segment,
    to_coco,
    to_detections,
    video_mask_scores,
)
from molmo_nb_utils.media import sample_frames
from molmo_nb_utils.paths import INPUT_DIR
from molmo_nb_utils.tiny import build_tiny_sam2

TRUTH = INPUT_DIR / "ground_truth" / "moving_objects.json"


def table(width: int, height: int, discs: list[tuple[float, float, float]], seed: int = 0) -> np.ndarray:
    """A brown, grainy table with grey, textured coins: (x, y, radius) each."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height)[:, None, None]
    picture = np.array([150, 80, 40]) + 40 * rows + rng.normal(0, 10, (height, width, 3))
    for x, y, r in discs:
        inside = disc_mask(width, height, x, y, 2 * r)
        picture[inside] = np.array([185, 185, 190]) + rng.normal(0, 12, (int(inside.sum()), 3))
    return np.clip(picture, 0, 255).astype(np.uint8)


def test_grabcut_is_loaded_by_name_with_nothing_to_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_segmenter("grabcut") == (GrabCut(), None)
    assert load_segmenter(" GrabCut ")[0] == GrabCut()
    monkeypatch.setenv("MOLMO_SEGMENTER_ID", "grabcut")
    assert load_segmenter() == (GrabCut(), None)
    with pytest.raises(ValueError, match="growth > 1"):
        GrabCut(growth=1.0)


@pytest.mark.parametrize("radius", [9, 30, 80])
def test_one_click_gives_the_object_whatever_its_size(radius):
    """The window grows until the mask stops changing: no size is assumed."""
    discs = [(200, 240, radius), (520, 150, 25)]
    rgb = table(640, 480, discs)
    answer = Answer(
        format_points([Point(1, 200 + radius / 3, 240 - radius / 4, image=1), Point(2, 520, 150, image=1)],
                      [(640, 480)]),
        images=[Image.fromarray(rgb)],
    )  # fmt: skip
    found = segment(GrabCut(), None, answer)
    assert found[0].ids == (1, 2) and found[0].masks.shape == (2, 480, 640)
    for mask, (x, y, r) in zip(found[0].masks, discs, strict=True):
        assert mask_iou(mask, disc_mask(640, 480, x, y, 2 * r)) > 0.9
    assert all(0.9 <= s <= 1 for s in found[0].scores)  # two windows agreed this well


def test_a_click_on_the_picture_s_edge_is_a_mask_of_the_picture(monkeypatch):
    rgb = table(320, 200, [(0, 0, 30), (319, 199, 30)])
    answer = Answer('<points coords="1 1 000 000 2 1000 1000">coins</points>', images=[Image.fromarray(rgb)])
    found = segment(GrabCut(), None, answer)
    assert found[0].masks.shape == (2, 200, 320)
    assert mask_iou(found[0].masks[0], disc_mask(320, 200, 0, 0, 60)) > 0.8
    assert mask_iou(found[0].masks[1], disc_mask(320, 200, 319, 199, 60)) > 0.8


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (5, 3)])
def test_a_picture_of_a_few_pixels_gives_a_mask_not_an_opencv_error(size):
    """Too small for any background around the click: the click's own pixels are the mask."""
    answer = Answer('<points coords="1 1 500 500">dot</points>', images=[Image.new("RGB", size, "gray")])
    found = segment(GrabCut(), None, answer)[0]
    assert found.masks.shape == (1, size[1], size[0]) and found.masks.any()


def test_grabcut_gives_the_same_masks_on_every_run():
    rgb = table(320, 200, [(100, 100, 30)])
    first, score, _ = grabcut.click_mask(rgb, 100, 100)
    again, score_again, _ = grabcut.click_mask(rgb, 100, 100)
    assert np.array_equal(first, again) and score == score_again


def test_on_a_video_every_point_of_a_track_is_a_click_and_a_frame_without_one_has_no_mask(monkeypatch):
    """GrabCut follows nothing: Molmo2's track does. Each frame an id has a point on is a click there;
    where the track has no point (an occlusion, before it starts) the id's mask is empty."""
    seen = sample_frames(INPUT_DIR / "moving_objects.mp4", fps=2)
    truth = load_ground_truth(TRUTH)
    t = seen.timestamps
    centres = {(p.id, p.time): p for p in truth.at_plan(seen.plan)}
    keep = [(1, t[0]), (1, t[1]), (1, t[3]), (2, t[1]), (2, t[2])]  # id 1 missing on frame 2
    points = [centres[k] for k in keep]
    answer = Answer(format_points(points, seen.size, label="coins", tag="tracks"), videos=[seen])
    clicked = []
    original = grabcut.click_mask

    def spy(rgb, x, y, *args, **kwargs):
        clicked.append((x, y))
        return original(rgb, x, y, *args, **kwargs)

    monkeypatch.setattr(grabcut, "click_mask", spy)
    found = segment(*load_segmenter("grabcut"), answer)
    assert len(found) == len(t) and found.ids == [1, 2]
    assert [(f, pid) for f, pid, _, _ in found.prompts] == [(0, 1), (1, 1), (1, 2), (2, 2), (3, 1)]
    assert len(clicked) == 5
    assert [p.time for p in found.clicks()] == [t[0], t[1], t[1], t[2], t[3]]
    drawn = {(k, pid) for k, m in enumerate(found) for pid in m.ids if m.mask(pid).any()}
    assert drawn == {(0, 1), (1, 1), (1, 2), (2, 2), (3, 1)}
    assert all(
        (score > 0) == mask.any() for m in found for mask, score in zip(m.masks, m.scores, strict=True)
    )
    assert len(to_detections(found)[1].tracker_id) == 2 and len(to_coco(found)["annotations"]) == 5


@pytest.fixture(scope="module")
def worked():
    """The worked examples of lesson 10: table_03's true points, and the clip's true tracks at 8 fps."""
    items = with_coin_masks(load_dataset(INPUT_DIR / "coin_table.json"))
    item = next(i for i in items if i.key == "coin_table/table_03.jpg")
    photo = Image.open(item.path).convert("RGB")
    on_photo = Answer(format_points(list(item.points), [photo.size], label="coins"), images=[photo])
    seen8 = sample_frames(INPUT_DIR / "moving_objects.mp4", fps=8)
    tracks = load_ground_truth(TRUTH).at_plan(seen8.plan)
    on_clip = Answer(format_points(tracks, seen8.size, label="coins", tag="tracks"), videos=[seen8])
    return on_photo, item.picture_masks(photo.size), on_clip, true_masks(TRUTH, seen8.plan)


def test_the_lesson_s_worked_coins_get_their_masks_well_above_the_tiny_sam2(worked, tmp_path):
    on_photo, photo_truth, on_clip, clip_truth = worked
    grab = load_segmenter("grabcut")
    photo_masks = segment(*grab, on_photo)
    assert all(iou > 0.9 for _, iou in mask_scores(photo_masks[0], photo_truth).pairs.values())
    clip = video_mask_scores(segment(*grab, on_clip), clip_truth)
    tiny = load_segmenter(build_tiny_sam2(tmp_path / "tiny-sam2"))
    noise = video_mask_scores(segment(*tiny, on_clip), clip_truth)
    print(f"J&F on the worked tracks: GrabCut {clip.j_and_f:.3f}, tiny random SAM 2 {noise.j_and_f:.3f}")
    assert clip.j_and_f > 0.9 and clip.j_and_f > noise.j_and_f + 0.4
