"""Masks: from Molmo2's points to object masks, their scores, and files other tools read.

Why: Molmo2 answers with points; a mask says which pixels the object covers, which is what most
pipelines want next and what Molmo2's own evaluation scores points against. One concern a module,
each fact in one place, the arrows pointing down to ``geometry``:

* ``geometry``: a region as COCO writes it (``Mask``, ``mask_from_coco``: polygons or RLE, damaged RLE
  refused), the masks of one picture (``PictureMasks``), boxes (``mask_box``), RLE (``encode_rle``),
  the in-mask test (``inside``), masks drawn on a resized or sideways copy (``fit_mask``), and the
  sample coins' disc rule (``disc_mask``, ``disc_polygon``: the same pixels);
* ``segmenting``: Molmo2's side of segmenting (``segment``, ``Segmentation``, ``prompt_frames``,
  ``load_segmenter``, ``segmenter_id``); ``backend`` is what it asks of a kind of segmenter, and
  ``sam2`` is SAM 2 (transformers' ``Sam2VideoModel``), the one kind so far;
* ``scores``: mask IoU on a picture (``mask_scores``) and J&F on a video (``video_mask_scores``,
  TrackEval's DAVIS code);
* ``exports``: COCO instance segmentation (``to_coco``, ``save_coco``; frames named as the point export
  names them, ``coco_images``) and ``supervision.Detections`` (``to_detections``).

What SAM 2 costs in GPU memory is the memory planner's (``memory.segmenter_memory``); true masks of a
truth file, and the sample coins' masks, are the dataset's (``dataset.true_masks``,
``dataset.with_coin_masks``); drawing masks is ``drawing.masks``, which imports from here, never the
other way round. The lesson is ``10_points_to_masks.ipynb``.
"""

from molmo_nb_utils.masks.backend import SEGMENTER_ENV, Backend, SegmenterLoadError
from molmo_nb_utils.masks.exports import save_coco, to_coco, to_detections
from molmo_nb_utils.masks.geometry import (
    Mask,
    PictureMasks,
    check_mask_sizes,
    disc_mask,
    disc_polygon,
    empty_masks,
    encode_rle,
    fit_mask,
    inside,
    mask_box,
    mask_from_coco,
    masks_of_points,
)
from molmo_nb_utils.masks.scores import MaskScore, VideoMaskScore, mask_iou, mask_scores, video_mask_scores
from molmo_nb_utils.masks.segmenting import (
    Segmentation,
    load_segmenter,
    prompt_frames,
    segment,
    segmenter_id,
)

__all__ = [
    "Backend",
    "Mask",
    "MaskScore",
    "PictureMasks",
    "SEGMENTER_ENV",
    "Segmentation",
    "SegmenterLoadError",
    "VideoMaskScore",
    "check_mask_sizes",
    "disc_mask",
    "disc_polygon",
    "empty_masks",
    "encode_rle",
    "fit_mask",
    "inside",
    "load_segmenter",
    "mask_box",
    "mask_from_coco",
    "mask_iou",
    "mask_scores",
    "masks_of_points",
    "prompt_frames",
    "save_coco",
    "segment",
    "segmenter_id",
    "to_coco",
    "to_detections",
    "video_mask_scores",
]
