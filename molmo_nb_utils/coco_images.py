"""COCO's "images" for every export: one name and one id for each picture and each video frame shown.

Why one module: a video's point export (``dataset.export_coco``) and its mask export (``masks.to_coco``)
describe the same frames, and a tool only lines them up (pycocotools' ``loadRes``, FiftyOne, CVAT) when
both give a frame the same ``file_name`` and ``id``. Both take them from here:

* a picture is ``<key>`` (its name as a dataset lists it), id ``item * ITEM_IDS``;
* each frame shown of a video is ``<video key>/<frame index, 6 digits>.jpg`` (``clip.mp4/000008.jpg``,
  as ``ffmpeg -start_number 0`` names extracted frames), with ``video``, ``frame_index`` and ``time``,
  id ``item * ITEM_IDS + its place among the frames shown``. A frame shown twice (a video sampled faster
  than it was filmed) is ``..._1.jpg`` the second time; a prompt time repeated in the plan (the last
  sample of a short video, clamped) is one image, as it is one prompt entry.

``item`` is the picture's or video's place (from 1) in a dataset list: ids depend on nothing else, so
exports of the ground truth and of the answers share them, whichever items failed.
"""

from __future__ import annotations

from typing import Any

from molmo_nb_utils.media import FramePlan

ITEM_IDS = 1_000_000  # image ids: item * this + the frame's place among those shown


def picture_image(key: str, size: tuple[int, int], item: int = 1) -> dict[str, Any]:
    """The COCO image of a picture listed as ``key``, of ``size`` (width, height), the ``item``-th of its list."""
    width, height = (int(v) for v in size)
    return {"id": item * ITEM_IDS, "file_name": str(key), "width": width, "height": height}


def frame_images(key: str, plan: FramePlan, item: int = 1) -> dict[int, dict[str, Any]]:
    """The COCO images of a video's frames shown, by their place in ``plan``; a repeated prompt time is left out.

    ``key`` names the video (as a dataset lists it), ``item`` its place in the list.
    """
    width, height = (int(v) for v in plan.size)
    images: dict[int, dict[str, Any]] = {}
    seen_times: set[float] = set()
    shown: dict[int, int] = {}  # frame index -> times shown so far
    for place, (t, index) in enumerate(zip(plan.times, plan.indices, strict=True)):
        if float(t) in seen_times:
            continue
        seen_times.add(float(t))
        repeat = shown.get(int(index), 0)
        shown[int(index)] = repeat + 1
        images[place] = {
            "id": item * ITEM_IDS + len(images),
            "file_name": f"{key}/{int(index):06d}" + (f"_{repeat}" if repeat else "") + ".jpg",
            "width": width,
            "height": height,
            "video": str(key),
            "frame_index": int(index),
            "time": float(t),
        }
    return images
