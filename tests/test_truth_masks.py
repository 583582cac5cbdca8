"""Truth files with masks that would score the wrong thing silently (issue 30, items 1-6).

Each case is a file a labelling tool or a hand could write: damaged RLE, COCO ids that do not line up,
masks drawn on a resized or sideways copy of the photo, one category name twice. Each is refused with
what to fix, or read the one way that puts every mask on the photo as the model sees it.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from molmo_nb_utils import load_dataset, load_image, mask_from_coco, results_from_answers, score_results
from molmo_nb_utils.grounding import Point, format_points

WIDTH, HEIGHT = 200, 120
BOX = (20, 10, 60, 40)  # x0, y0, x1, y1 of the object, in pixels of the photo as stored


def _photo(folder, name="a.png", orientation=1):
    """A grey WIDTH x HEIGHT photo (as stored) with a red object at BOX, and its EXIF orientation."""
    pixels = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    x0, y0, x1, y1 = BOX
    pixels[y0:y1, x0:x1] = (230, 20, 20)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(folder / name, exif=exif.tobytes())
    return name


def _red_centre(path):
    """Where the object is on the photo as the model sees it (load_image: upright)."""
    pixels = np.asarray(load_image(path)).astype(int)
    rows, cols = np.nonzero((pixels[..., 0] > 150) & (pixels[..., 1] < 100))
    return (cols.min() + cols.max() + 1) / 2, (rows.min() + rows.max() + 1) / 2


def _coco(name, width, height, polygon, **extra):
    data = {
        "images": [{"id": 1, "file_name": name, "width": width, "height": height}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [polygon], "iscrowd": 0}],
    }
    return data | extra


def _box_polygon(scale=1.0):
    x0, y0, x1, y1 = (v * scale for v in BOX)
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _scores_of(folder, data, point):
    (folder / "instances.json").write_text(json.dumps(data))
    items = load_dataset(folder / "instances.json")
    item = items[0]
    size = load_image(item.path).size
    answer = format_points([Point(1, point[0], point[1], image=1)], [size])
    return score_results(items, results_from_answers(items, {item.key: answer})).items[0].points


# --- 1. RLE that does not cover its size -----------------------------------------------------


def test_rle_whose_runs_do_not_add_up_to_its_size_is_refused_compressed_or_not():
    pixels = np.zeros((10, 10), np.uint8)
    pixels[2:5, 3:7] = 1  # 12 pixels
    counts = coco_mask.encode(np.asfortranarray(pixels))["counts"].decode()
    assert mask_from_coco({"size": [10, 10], "counts": counts}).decode((10, 10)).sum() == 12
    with pytest.raises(ValueError, match="runs add up to 100 pixels, but its size 20x20 has 400"):
        mask_from_coco({"size": [20, 20], "counts": counts})
    runs = [23, 3, 7, 3, 7, 3, 7, 3, 44]
    assert sum(runs) == 100
    with pytest.raises(ValueError, match="runs add up to 100 pixels"):
        mask_from_coco({"size": [20, 20], "counts": runs})
    with pytest.raises(ValueError, match="not a character of COCO's RLE"):
        mask_from_coco({"size": [10, 10], "counts": "0 5 3"})


# --- 2, 3. COCO ids that do not line up --------------------------------------------------------


def test_two_coco_images_with_one_id_are_refused(tmp_path):
    a, b = _photo(tmp_path, "a.png"), _photo(tmp_path, "b.png")
    data = _coco(a, WIDTH, HEIGHT, _box_polygon())
    data["images"].append({"id": 1, "file_name": b, "width": WIDTH, "height": HEIGHT})
    (tmp_path / "instances.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="a.png and b.png have the same id 1"):
        load_dataset(tmp_path / "instances.json")


def test_annotations_of_no_image_are_refused_and_text_ids_are_named(tmp_path):
    name = _photo(tmp_path)
    data = _coco(name, WIDTH, HEIGHT, _box_polygon())
    data["annotations"][0]["image_id"] = 7
    (tmp_path / "instances.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="1 annotation.* image_id that matches no image: 7"):
        load_dataset(tmp_path / "instances.json")
    data = _coco(name, WIDTH, HEIGHT, _box_polygon())
    data["images"][0]["id"] = "1"  # a hand-written or converted file: "1" in images, 1 in annotations
    (tmp_path / "instances.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="written as int and as str"):
        load_dataset(tmp_path / "instances.json")
    data = _coco(name, WIDTH, HEIGHT, _box_polygon())
    data["categories"][0]["id"] = "1"
    (tmp_path / "instances.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="category_id that matches no category"):
        load_dataset(tmp_path / "instances.json")


# --- 4, 5. Masks on the photo as the model sees it ------------------------------------------


def test_masks_drawn_on_a_half_size_copy_are_scaled_and_it_is_said(tmp_path):
    name = _photo(tmp_path)
    data = _coco(name, WIDTH // 2, HEIGHT // 2, _box_polygon(0.5))
    with pytest.warns(UserWarning, match="drawn on a 100x60 copy of the 200x120 photo: scaled"):
        score = _scores_of(tmp_path, data, _red_centre(tmp_path / name))
    assert (score.tp, score.fp, score.fn) == (1, 0, 0)


def test_masks_of_another_shape_than_the_photo_are_refused(tmp_path):
    name = _photo(tmp_path)
    (tmp_path / "instances.json").write_text(json.dumps(_coco(name, 100, 100, _box_polygon(0.5))))
    with pytest.raises(ValueError, match="says the image is 100x100, but a.png is 200x120"):
        load_dataset(tmp_path / "instances.json")


@pytest.mark.parametrize("orientation", [6, 8, 5])
def test_masks_of_a_sideways_phone_photo_are_turned_as_its_pixels(tmp_path, orientation):
    """The COCO file gives the stored size (200x120) of a photo shown 120x200: the masks were drawn on the
    stored pixels, and a point on the object as the model sees it lies inside its mask."""
    name = _photo(tmp_path, "phone.jpg", orientation)
    assert load_image(tmp_path / name).size == (HEIGHT, WIDTH)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "error", UserWarning
        )  # the stored size says how the masks were drawn: nothing to warn of
        score = _scores_of(tmp_path, _coco(name, WIDTH, HEIGHT, _box_polygon()), _red_centre(tmp_path / name))
    assert (score.tp, score.fp, score.fn) == (1, 0, 0)
    items = load_dataset(tmp_path / "instances.json")
    pixels = items[0].masks[0].decode((HEIGHT, WIDTH))
    upright = np.asarray(load_image(tmp_path / name)).astype(int)
    red = (upright[..., 0] > 150) & (upright[..., 1] < 100)
    assert (pixels & red).sum() / red.sum() > 0.9  # the mask covers the object where it is shown


def test_a_photo_turned_by_180_degrees_is_read_as_shown_with_a_warning(tmp_path):
    name = _photo(tmp_path, "turned.jpg", 3)
    centre = _red_centre(tmp_path / name)
    flipped = [WIDTH - v if k % 2 == 0 else HEIGHT - v for k, v in enumerate(_box_polygon())]  # as shown
    with pytest.warns(UserWarning, match="EXIF orientation 3 .* read as drawn on the photo as shown"):
        score = _scores_of(tmp_path, _coco(name, WIDTH, HEIGHT, flipped), centre)
    assert score.tp == 1


# --- 6. One category name twice ----------------------------------------------------------------


def test_categories_of_one_name_are_read_together(tmp_path):
    name = _photo(tmp_path)
    data = _coco(name, WIDTH, HEIGHT, _box_polygon())
    data["categories"] = [{"id": 1, "name": "coin"}, {"id": 2, "name": "coin"}, {"id": 3, "name": "cup"}]
    other = [100, 60, 140, 60, 140, 100, 100, 100]
    data["annotations"].append(
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [other], "iscrowd": 0}
    )
    (tmp_path / "instances.json").write_text(json.dumps(data))
    items = load_dataset(tmp_path / "instances.json", label="coin")
    assert items[0].count == 2 and len(items[0].masks) == 2
