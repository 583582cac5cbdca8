"""Tests for the masks package (segmenting, SAM 2, scores, exports) on the tiny random SAM 2.

The tiny SAM 2's masks are noise, so these tests check what does not depend on its weights: where
the prompts go, the sizes, ids and frames of the masks, the exports, and scores on hand-made masks.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace

import numpy as np
import pytest
import supervision as sv
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from molmo_nb_utils import loading
from molmo_nb_utils.asking import Answer
from molmo_nb_utils.dataset import export_coco, load_dataset, results_from_answers, true_masks, worked_answer
from molmo_nb_utils.grounding import Point, format_points
from molmo_nb_utils.masks import (
    PictureMasks,
    SegmenterLoadError,
    disc_mask,
    encode_rle,
    exports,
    load_segmenter,
    mask_iou,
    mask_scores,
    prompt_frames,
    sam2,
    sam2_id,
    save_coco,
    segment,
    segmenter_id,
    segmenting,
    to_coco,
    to_detections,
    video_mask_scores,
)
from molmo_nb_utils.media import FramePlan, frames_of, sample_frames, video_info
from molmo_nb_utils.memory import SAM2_SIZES, segmenter_memory
from molmo_nb_utils.paths import INPUT_DIR
from molmo_nb_utils.tiny import TINY_SAM_IMAGE_SIZE, build_tiny_sam2


@pytest.fixture(scope="module")
def sam(tmp_path_factory):
    folder = build_tiny_sam2(tmp_path_factory.mktemp("tiny-sam2") / "model")
    return load_segmenter(folder)


@pytest.fixture
def calls(sam, monkeypatch):
    """What SAM 2's processor is asked: (frame index, object ids, input points) of every prompt."""
    _, processor = sam
    seen = []
    original = type(processor).add_inputs_to_inference_session

    def spy(self, inference_session, frame_idx, obj_ids, input_points=None, input_labels=None, **kw):
        seen.append((frame_idx, list(obj_ids), input_points, input_labels, inference_session))
        return original(self, inference_session, frame_idx, obj_ids, input_points, input_labels, **kw)

    monkeypatch.setattr(type(processor), "add_inputs_to_inference_session", spy)
    return seen


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


# --- images ------------------------------------------------------------------------------------


def test_image_masks_are_at_each_images_size_one_per_point_id(sam, calls):
    images = [picture(200, 120), picture(90, 160, 1)]
    answer = Answer('<points coords="1 1 250 500 2 750 250;2 3 500 500">coins</points>', images=images)
    result = segment(*sam, answer)
    assert len(result) == 2
    assert result[0].masks.shape == (2, 120, 200) and result[0].ids == (1, 2)
    assert result[1].masks.shape == (1, 160, 90) and result[1].ids == (3,)
    assert result[0].masks.dtype == bool and len(result[0].scores) == 2
    assert [b.shape for b in result.boxes()] == [(2, 4), (1, 4)]
    # the prompts are the answer's points, in pixels of the picture they were given on ...
    points = answer.points()
    assert [(f, ids) for f, ids, *_ in calls] == [(0, [1, 2]), (0, [3])]
    assert calls[0][2] == [[[[points[0].x, points[0].y]], [[points[1].x, points[1].y]]]]
    assert calls[0][3] == [[[1], [1]]]  # positive clicks
    assert result.prompts == ((0, 1, 50.0, 60.0), (0, 2, 150.0, 30.0), (1, 3, 45.0, 80.0))
    # ... and SAM 2 gets them in the pixels of the picture it sees: the image resized to its square input
    session = calls[1][4]
    assert tuple(session.get_frame(0).shape[-2:]) == (TINY_SAM_IMAGE_SIZE, TINY_SAM_IMAGE_SIZE)
    coords = session.point_inputs_per_obj[session.obj_id_to_idx(3)][0]["point_coords"].flatten().tolist()
    assert coords == pytest.approx([45 * TINY_SAM_IMAGE_SIZE / 90, 80 * TINY_SAM_IMAGE_SIZE / 160])


def test_an_image_without_points_gets_no_masks(sam, calls):
    answer = Answer('<points coords="2 1 500 500">x</points>', images=[picture(64, 48), picture(32, 32)])
    result = segment(*sam, answer)
    assert result[0].masks.shape == (0, 48, 64) and result[0].ids == ()
    assert result[0].boxes().shape == (0, 4)
    assert result[1].ids == (1,)
    assert len(calls) == 1


def test_segment_refuses_what_is_not_an_answer(sam):
    with pytest.raises(TypeError, match="Answer"):
        segment(*sam, "<points coords='1 1 5 5'>x</points>")
    with pytest.raises(ValueError, match="text only"):
        segment(*sam, Answer("hello"))


# --- video -------------------------------------------------------------------------------------


def test_prompt_frames_are_first_appearances_and_returns_after_a_gap():
    times = [0.0, 0.5, 1.0, 1.5]
    points = [
        Point(1, 1, 1, time=0.0),
        Point(1, 2, 2, time=0.5),
        Point(2, 3, 3, time=0.0),
        Point(2, 4, 4, time=1.0),  # back after 0.5 s unseen
        Point(2, 5, 5, time=1.5),
        Point(3, 6, 6, time=0.5),
    ]
    chosen = prompt_frames(points, times)
    assert {f: [p.id for p in on] for f, on in chosen.items()} == {0: [1, 2], 1: [3], 2: [2]}
    assert chosen[2][0].x == 4
    assert {f: [p.id for p in on] for f, on in prompt_frames(points, times, reprompt=False).items()} == {
        0: [1, 2],
        1: [3],
    }


def test_video_masks_are_upright_on_every_frame_shown_for_every_id(sam, calls):
    video = INPUT_DIR / "bunny_phone.mp4"
    assert video_info(video).rotation in (90, 270)  # stored sideways, shown upright
    seen = sample_frames(video, fps=1)
    width, height = seen.size
    assert height > width
    times = seen.timestamps
    tracks = [
        Point(1, 100, 200, time=times[0]),
        Point(1, 110, 210, time=times[1]),
        Point(2, 50, 400, time=times[1]),
        Point(1, 115, 215, time=times[2]),
        Point(2, 60, 380, time=times[3]),  # occluded at times[2]
        Point(1, 120, 220, time=times[3]),
    ]
    answer = Answer(format_points(tracks, seen.size, tag="tracks"), videos=[seen])
    result = segment(*sam, answer)
    assert len(result) == len(times)
    for masks in result:
        assert masks.masks.shape == (2, height, width) and masks.ids == (1, 2)
    assert result.track(2).shape == (len(times), height, width)
    # each id prompted on the frame it first appears on, and id 2 again where it comes back, at the point
    # Molmo2 gave there, in pixels of the frame shown; SAM 2 sees that frame at its square input size
    assert [(f, ids) for f, ids, *_ in calls] == [(0, [1]), (1, [2]), (3, [2])]
    at = {(p.id, p.time): p for p in answer.tracks()}
    for (frame, _, points, _, session), pid in zip(calls, (1, 2, 2), strict=True):
        p = at[(pid, times[frame])]
        assert points == [[[[p.x, p.y]]]]
        coords = (
            session.point_inputs_per_obj[session.obj_id_to_idx(pid)][frame]["point_coords"].flatten().tolist()
        )
        assert coords == pytest.approx(
            [p.x * TINY_SAM_IMAGE_SIZE / width, p.y * TINY_SAM_IMAGE_SIZE / height]
        )


def test_a_video_answer_without_points_gives_empty_masks_on_every_frame(sam):
    seen = sample_frames(INPUT_DIR / "moving_objects.mp4", fps=1)
    result = segment(*sam, Answer("There are none.", videos=[seen]))
    assert len(result) == len(seen.timestamps)
    assert all(m.masks.shape == (0, 360, 640) for m in result)


def test_an_object_has_no_mask_before_its_first_prompt_issue_30(sam, calls):
    """SAM 2 propagates backwards too: an object first found on frame 2 must not get masks on frames 0-1."""
    seen = sample_frames(INPUT_DIR / "moving_objects.mp4", fps=2)
    times = seen.timestamps
    tracks = [Point(1, 80, 100, time=t) for t in times] + [Point(2, 500, 260, time=t) for t in times[2:]]
    result = segment(*sam, Answer(format_points(tracks, seen.size, tag="tracks"), videos=[seen]))
    assert [(f, ids) for f, ids, *_ in calls] == [(0, [1]), (2, [2])]
    for frame in (0, 1):
        assert result[frame].ids == (1, 2)
        assert not result[frame].mask(2).any() and result[frame].scores[1] == 0.0
    early = {image["id"] for image in to_coco(result)["images"][:2]}
    assert not [a for a in to_coco(result)["annotations"] if a["track_id"] == 2 and a["image_id"] in early]


def test_a_16_bit_picture_reaches_the_segmenter_scaled_not_clipped_issue_30(sam, monkeypatch):
    seen = []
    spy = replace(
        sam2.SAM2, on_picture=lambda m, p, rgb, clicks: seen.append(rgb) or sam2.on_picture(m, p, rgb, clicks)
    )
    monkeypatch.setattr(segmenting, "BACKENDS", (spy,))
    grey = Image.fromarray(np.full((40, 60), 30_000, np.uint16))  # mode I;16: a 16-bit scan or depth map
    segment(*sam, Answer('<points coords="1 1 500 500">x</points>', images=[grey]))
    assert seen[0].shape == (40, 60, 3) and seen[0].dtype == np.uint8
    assert int(seen[0][0, 0, 0]) == round(30_000 / 257)  # load_image's rule; clipped, it would be 255


def test_segment_says_how_to_wrap_points_of_your_own_issue_31(sam):
    with pytest.raises(
        TypeError, match=r"Answer\(format_points\(points, \[image.size\]\), images=\[image\]\)"
    ):
        segment(*sam, [Point(1, 10, 10, image=1)])
    with pytest.raises(TypeError, match="load_segmenter"):
        segment("a model", None, Answer("x", images=[picture(8, 8)]))


# --- loading -----------------------------------------------------------------------------------


def test_the_segmenter_comes_from_one_place(monkeypatch, tmp_path):
    monkeypatch.setenv("MOLMO_SEGMENTER_ID", "some/sam")
    assert segmenter_id() == sam2_id() == "some/sam"
    monkeypatch.delenv("MOLMO_SEGMENTER_ID")
    monkeypatch.setenv("MOLMO_MODEL_ID", "tiny")
    # the tiny Molmo2 goes with GrabCut (offline, and masks that mean something); its SAM 2 is the tiny one
    assert segmenter_id() == "grabcut" and sam2_id() == "tiny"
    monkeypatch.setenv("MOLMO_MODEL_ID", "allenai/Molmo2-4B")
    assert segmenter_id() == sam2_id() == sam2.DEFAULT_SEGMENTER_ID == "facebook/sam2.1-hiera-small"
    monkeypatch.setenv("MOLMO_SEGMENTER_ID", "grabcut")  # GrabCut chosen: SAM 2 beside it is the default
    assert segmenter_id() == "grabcut" and sam2_id() == "facebook/sam2.1-hiera-small"


def test_load_segmenter_tiny_builds_it_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(sam2, "tiny_segmenter_dir", lambda: tmp_path / "tiny-sam2")
    model, processor = load_segmenter("tiny")
    assert (tmp_path / "tiny-sam2" / "config.json").is_file()
    assert type(model).__name__ == "Sam2VideoModel" and processor.target_size == TINY_SAM_IMAGE_SIZE


def test_a_segmenter_that_cannot_be_loaded_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SegmenterLoadError, match="Hub is not reachable.*set MOLMO_SEGMENTER_ID=tiny"):
        load_segmenter("nobody/no-such-sam")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(loading, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(SegmenterLoadError, match=r"Hub is not reachable from this machine \(no network\)"):
        load_segmenter("nobody/no-such-sam")


def test_a_segmenter_folder_that_does_not_exist_says_so_issue_30(monkeypatch, tmp_path):
    monkeypatch.setenv("MOLMO_SEGMENTER_ID", str(tmp_path / "no-such-folder"))
    with pytest.raises(SegmenterLoadError, match="there is no folder .*no-such-folder") as caught:
        load_segmenter()
    assert "Repo id" not in str(caught.value)


def test_molmo2_given_as_the_segmenter_is_named_issue_30(tiny_model_path):
    with pytest.raises(SegmenterLoadError, match="'molmo2' model .*MOLMO_MODEL_ID.*not SAM 2"):
        load_segmenter(tiny_model_path)


def test_memory_estimates_grow_with_the_size():
    sizes = [segmenter_memory(s) for s in ("hiera-tiny", "hiera-small", "hiera-base-plus", "hiera-large")]
    assert [round(m.parameters / 1e5) for m in sizes] == [
        390,
        461,
        809,
        2244,
    ]  # the README's 38.9M ... 224.4M
    assert all(a.total_gb < b.total_gb for a, b in zip(sizes, sizes[1:], strict=False))
    long = segmenter_memory("hiera-small", frames=100, objects=4)
    assert long.memory_bank_gb > sizes[1].memory_bank_gb and "estimate" in str(long)
    with pytest.raises(ValueError, match="use one of"):
        segmenter_memory("huge")


def test_sizes_go_by_their_released_names_issue_31():
    """hiera-tiny is a released SAM 2.1, never "tiny" (the word for the random test SAM 2); the Hub id and
    the short names of earlier versions still work."""
    assert list(SAM2_SIZES) == ["hiera-tiny", "hiera-small", "hiera-base-plus", "hiera-large"]
    assert all(spec.hub_id == f"facebook/sam2.1-{name}" for name, spec in SAM2_SIZES.items())
    assert segmenter_memory().size == "hiera-small"
    for same in ("small", "facebook/sam2.1-hiera-small", "sam2.1-hiera-small"):
        assert segmenter_memory(same) == segmenter_memory("hiera-small")
    assert "hiera-tiny" in str(segmenter_memory("tiny"))


# --- scores ------------------------------------------------------------------------------------


def square(x: int, y: int, side: int = 4, size: int = 10) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[y : y + side, x : x + side] = True
    return mask


def masks(*pairs) -> PictureMasks:
    ids = tuple(i for i, _ in pairs)
    array = np.stack([m for _, m in pairs]) if pairs else np.zeros((0, 10, 10), bool)
    return PictureMasks(array, ids, tuple(1.0 for _ in ids))


def test_mask_iou_and_pairing_on_hand_made_masks():
    assert mask_iou(square(2, 2), square(2, 2)) == 1.0
    assert mask_iou(square(2, 2), square(3, 2)) == pytest.approx(12 / 20)
    assert mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
    # ids need not agree: predicted 7 pairs with true 1, predicted 9 with true 2; a third mask is extra
    score = mask_scores(
        masks((7, square(3, 2)), (9, square(6, 6)), (8, square(0, 8, 2))),
        masks((1, square(2, 2)), (2, square(6, 6))),
    )
    assert score.pairs == {1: (7, pytest.approx(0.6)), 2: (9, 1.0)}
    assert score.mean_iou == pytest.approx(0.8) and score.extra_masks == 1
    # an empty mask (an object not yet in the picture) is no mask: not extra, and no object to find
    empty = np.zeros((10, 10), bool)
    score = mask_scores(masks((7, square(2, 2)), (3, empty)), masks((1, square(2, 2)), (2, empty)))
    assert score.pairs == {1: (7, 1.0)} and score.extra_masks == 0 and score.true_objects == 1
    assert score.mean_iou == 1.0


def test_j_and_f_on_hand_made_masks_equals_the_hand_computed_values():
    """Three 10x10 frames; F's tolerance is ceil(0.008 * diagonal) = 1 px.

    Object 1: found exactly (J = F = 1), then 1 px to the right (J = 12/20; every contour pixel is within
    1 px of the true contour, so F = 1), then not at all (J = F = 0). Object 2 is never found (0, 0).
    """
    truth = [masks((1, square(2, 2)), (2, square(6, 6)))] * 3
    predicted = [masks((5, square(2, 2))), masks((5, square(3, 2))), masks()]
    score = video_mask_scores(predicted, truth)
    j1, f1 = (1 + 0.6 + 0) / 3, (1 + 1 + 0) / 3
    assert score.j == pytest.approx(j1 / 2) and score.f == pytest.approx(f1 / 2)
    assert score.j_and_f == pytest.approx((j1 + f1) / 4)
    assert score.true_objects == 2 and score.frames == 3
    perfect = video_mask_scores(truth, truth)
    assert perfect.j == perfect.f == perfect.j_and_f == 1.0
    with pytest.raises(ValueError, match="same frames"):
        video_mask_scores(predicted[:2], truth)


def test_true_coin_masks_are_discs_less_the_pillar():
    seen = sample_frames(INPUT_DIR / "moving_objects.mp4", fps=8)
    truth_path = INPUT_DIR / "ground_truth" / "moving_objects.json"
    found = true_masks(truth_path, seen.plan)
    assert len(found) == len(seen.timestamps)
    first = found[0]
    assert first.ids == (1, 2) and first.size == (640, 360)
    disc = disc_mask(640, 360, 80.0, 100.0, 72)
    assert np.array_equal(first.mask(1), disc) and disc.sum() == pytest.approx(np.pi * 36**2, rel=0.01)
    pillar = json.loads(truth_path.read_text())["occluders"][0]
    for frame in found:
        assert not frame.masks[:, pillar["y0"] :, pillar["x0"] : pillar["x1"]].any()


# --- exports -----------------------------------------------------------------------------------


def test_coco_export_round_trips_through_cocoeval_for_segm_and_bbox(tmp_path, capsys):
    pictures = [masks((1, square(2, 2)), (3, square(6, 5))), masks((2, square(0, 0, 3))), masks()]
    coco = to_coco(pictures, names=["a.jpg", "b.jpg", "c.jpg"], category="coin")
    path = save_coco(coco, tmp_path / "masks.json")
    truth = COCO(str(path))
    first, second, _ = (image["id"] for image in coco["images"])
    assert [a["bbox"] for a in truth.loadAnns(truth.getAnnIds(imgIds=[first]))] == [
        [2, 2, 4, 4],
        [6, 5, 4, 4],
    ]
    assert truth.loadAnns(truth.getAnnIds(imgIds=[second]))[0]["track_id"] == 2
    results = truth.loadRes(coco["annotations"])
    for kind in ("segm", "bbox"):
        evaluation = COCOeval(truth, results, iouType=kind)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0)  # the masks against themselves: AP 1
    with pytest.raises(ValueError, match="one name per picture"):
        to_coco(pictures, names=["a.jpg"])
    with pytest.raises(ValueError, match="json"):
        save_coco(coco, tmp_path / "masks.txt")


def test_one_picture_s_masks_export_alone_issue_31():
    """to_coco(masks[0]): one PictureMasks is one picture, not 'not iterable'."""
    one = masks((4, square(2, 2)), (5, np.zeros((10, 10), bool)))
    coco = to_coco(one, names=["photo.jpg"])
    assert [i["file_name"] for i in coco["images"]] == ["photo.jpg"]
    assert [a["track_id"] for a in coco["annotations"]] == [4]  # the empty mask is no object
    assert to_coco(one)["images"][0]["file_name"] == "image_1"


def test_a_segmentation_exports_its_frames(sam):
    seen = sample_frames(INPUT_DIR / "moving_objects.mp4", fps=1)
    answer = Answer(format_points([Point(1, 80, 100, time=0.0)], seen.size, tag="tracks"), videos=[seen])
    found = segment(*sam, answer)
    coco = to_coco(found)
    assert [i["frame_index"] for i in coco["images"]] == seen.indices
    assert coco["images"][0]["file_name"] == "moving_objects.mp4/000000.jpg"
    assert all(a["track_id"] == 1 for a in coco["annotations"])
    per_frame = to_detections(found)
    assert len(per_frame) == len(seen.timestamps)
    for detections, picture in zip(per_frame, found, strict=True):
        assert detections.tracker_id.tolist() == [1] * bool(picture.mask(1).any())


def test_a_video_s_point_and_mask_exports_name_its_frames_alike_issue_29(sam, tmp_path):
    """The point export (export_coco of a run) and the mask export (to_coco of segment) of one video give
    its frames the same file names and ids, so pycocotools loads the masks against the points' images."""
    item = load_dataset(
        [
            {
                "file": str(INPUT_DIR / "moving_objects.mp4"),
                "truth": str(INPUT_DIR / "ground_truth" / "moving_objects.json"),
            }
        ]
    )[0]
    result = results_from_answers([item], {item.key: worked_answer(item, tag="tracks")})[0]
    points_path = export_coco([item], [result], tmp_path / "points.json")
    frames = frames_of(item.path, result.plan)
    answer = Answer(result.answer, videos=[frames])
    mask_coco = to_coco(segment(*sam, answer), key=item.key)
    point_coco = json.loads(points_path.read_text())
    assert [(i["id"], i["file_name"], i["frame_index"]) for i in mask_coco["images"]] == [
        (i["id"], i["file_name"], i["frame_index"]) for i in point_coco["images"]
    ]
    assert mask_coco["images"][0]["file_name"].endswith("moving_objects.mp4/000000.jpg")
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO(str(points_path))
        ground.loadRes(mask_coco["annotations"])  # image ids agree, or pycocotools refuses


# --- supervision -------------------------------------------------------------------------------


def test_supervision_accepts_the_detections():
    found = masks((4, square(2, 2)), (6, square(5, 5)))
    dets = to_detections(found, class_name="coin")
    assert isinstance(dets, sv.Detections) and len(dets) == 2
    assert dets.tracker_id.tolist() == [4, 6] and dets.data["class_name"].tolist() == ["coin", "coin"]
    assert dets.xyxy.tolist() == [[2, 2, 6, 6], [5, 5, 9, 9]]
    assert np.array_equal(dets.area, [16, 16])
    scene = np.zeros((10, 10, 3), np.uint8)
    painted = sv.MaskAnnotator().annotate(scene.copy(), dets)
    assert painted[3, 3].any() and not painted[0, 9].any()


def test_empty_masks_are_no_detections_as_they_are_no_coco_objects_issue_30():
    found = masks((4, square(2, 2)), (6, np.zeros((10, 10), bool)))
    dets = to_detections(found)
    assert len(dets) == 1 and dets.tracker_id.tolist() == [4] and dets.xyxy.tolist() == [[2, 2, 6, 6]]
    assert len(dets) == len(to_coco(found)["annotations"])


def test_without_supervision_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(exports, "sv", None)
    with pytest.raises(ImportError, match="pip install supervision"):
        to_detections(masks())


def test_true_masks_are_the_truths_own_masks_where_it_gives_them(tmp_path):
    """A truth file whose objects carry COCO masks (here a polygon and an RLE) is read with masks.Mask."""
    box = [[2, 2, 6, 2, 6, 6, 2, 6]]  # a 4x4 square, as a COCO polygon
    encoded = encode_rle(square(5, 5, 3))
    frames = [
        {"frame": 0, "time": 0.0, "objects": [{"id": 1, "x": 4, "y": 4, "mask": box}]},
        {"frame": 1, "time": 0.5, "objects": [{"id": 1, "x": 4, "y": 4, "mask": box}, {"id": 2, "x": 6, "y": 6, "mask": encoded}]},
    ]  # fmt: skip
    truth = {"fps": 2, "width": 10, "height": 10, "num_frames": 2, "frames": frames}
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(truth))
    found = true_masks(path, FramePlan((0.0, 0.5), (0, 1), (10, 10)))
    assert [m.ids for m in found] == [(1,), (1, 2)]
    assert np.array_equal(found[1].mask(2), square(5, 5, 3))
    assert found[0].mask(1).sum() == 16 and found[0].mask(1)[3, 3]
