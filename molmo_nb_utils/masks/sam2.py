"""SAM 2, the segmenter behind ``segment``: loaded with transformers' native ``Sam2VideoModel``.

One model does both jobs: the released SAM 2.1 checkpoints are ``Sam2VideoModel``s with a
``Sam2VideoProcessor``, and an image is a video of one frame (the same image encoder, prompt encoder and
mask decoder run on it; the memory of earlier frames is simply empty). The processor scales each click
from the pixels of the picture shown to SAM 2's square input, and the masks back to that picture's size.

``tiny`` is a tiny random SAM 2 built offline (``molmo_nb_utils.tiny``): its masks are noise, and it is kept
to test SAM 2's plumbing offline; the lessons' offline segmenter is GrabCut (``masks.grabcut``). What SAM 2 costs in GPU memory is estimated by ``memory.segmenter_memory``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PretrainedConfig, Sam2VideoModel, Sam2VideoProcessor

from molmo_nb_utils.loading import ModelSource, detect_hardware, resolve_source
from molmo_nb_utils.masks.backend import SEGMENTER_ENV, Backend, Click, SegmenterLoadError
from molmo_nb_utils.masks.geometry import PictureMasks
from molmo_nb_utils.tiny import TINY_NAME, TinyModelError, build_tiny_sam2, tiny_segmenter_dir

# SAM 2.1 hiera-small: 46.1M parameters against hiera-tiny's 39.0M (184 MB against 156 MB in float32), a
# negligible difference beside Molmo2-4B's 4.85 billion, for the better masks of a deeper image encoder (11
# blocks in its third Hiera stage against 7). hiera-base-plus and hiera-large cost 2 and 5 times more for a
# few points more.
DEFAULT_SEGMENTER_ID = "facebook/sam2.1-hiera-small"
SAM2_TYPES = ("sam2_video", "sam2")  # config.json's model_type of SAM 2 checkpoints (video and image)
SOURCE = ModelSource(
    variable=SEGMENTER_ENV,
    example=DEFAULT_SEGMENTER_ID,
    build_tiny="python -m molmo_nb_utils.tiny FOLDER --segmenter",
    tiny="a tiny random SAM 2 built offline, whose masks are noise; or set it to grabcut, OpenCV's GrabCut, "
    "which needs no weights and gives real masks",
)
HINT = (
    f"Check {SEGMENTER_ENV}: a SAM 2 Hub id such as {DEFAULT_SEGMENTER_ID}, a folder with SAM 2's config.json, "
    "'tiny' (a tiny random SAM 2 built offline, whose masks are noise), or 'grabcut' (OpenCV's GrabCut, no weights); "
    "SAM 2 needs transformers>=5.0."
)


def _sentence(text: str) -> str:
    """``text`` ending in a full stop, so the hint after it reads as a new sentence."""
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _source(name: str) -> tuple[str, bool]:
    """What to pass to from_pretrained for ``name`` (the tiny SAM 2, built on first use; a folder; a Hub
    id), and whether it is local; or SegmenterLoadError saying what is wrong."""
    if name.strip() == TINY_NAME and not Path(name).is_dir():
        folder = tiny_segmenter_dir()
        if not (folder / "config.json").is_file():
            print(f"Building the tiny random SAM 2 in {folder} (once, offline; its masks are noise).")
        try:
            return str(build_tiny_sam2(folder)), True
        except (TinyModelError, OSError) as err:
            raise SegmenterLoadError(
                f"'tiny' means the tiny random SAM 2 in {folder}, which could not be built there: {err} Build it "
                f"elsewhere with {SOURCE.build_tiny} and set {SEGMENTER_ENV}=FOLDER."
            ) from None
    return resolve_source(name, SOURCE, SegmenterLoadError)


def _check_kind(name: str, source: str, local: bool) -> None:
    """Refuse a checkpoint that is not SAM 2 (a Molmo2 folder given as the segmenter) before transformers does."""
    try:
        config, _ = PretrainedConfig.get_config_dict(source, local_files_only=local)
    except (OSError, ValueError) as err:
        raise SegmenterLoadError(
            f"Could not read the config of the segmenter {name!r}: {_sentence(str(err).splitlines()[0])} {HINT}"
        ) from None
    kind = config.get("model_type")
    if kind is not None and kind not in SAM2_TYPES:
        where = " (Molmo2 itself: it goes in MOLMO_MODEL_ID)" if kind == "molmo2" else ""
        raise SegmenterLoadError(f"{name!r} is a {kind!r} model{where}, not SAM 2. {HINT}")


def load(name: str, device: str | None, dtype: str | None) -> tuple[Sam2VideoModel, Sam2VideoProcessor]:
    """``(model, processor)`` of SAM 2 ``name``: bfloat16 on GPUs that have it; float32 elsewhere, the T4
    included (SAM 2 was not trained for float16, and in float32 even SAM 2.1 large is 0.84 GiB of weights)."""
    hw = detect_hardware()
    dtype = dtype or ("bfloat16" if hw.bf16 else "float32")
    if dtype not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"dtype must be 'bfloat16', 'float16' or 'float32', got {dtype!r}")
    source, local = _source(name)
    _check_kind(name, source, local)
    try:
        processor = Sam2VideoProcessor.from_pretrained(source, local_files_only=local)
        model = Sam2VideoModel.from_pretrained(source, dtype=getattr(torch, dtype), local_files_only=local)
    except (OSError, ValueError, KeyError) as err:
        raise SegmenterLoadError(
            f"Could not load the segmenter {name!r}: {_sentence(str(err).splitlines()[0])} {HINT}"
        ) from None
    return model.to(device or hw.device).eval(), processor


def _masks_of(
    processor: Sam2VideoProcessor, output: Any, size: tuple[int, int], wanted: Sequence[int]
) -> PictureMasks:
    """The model output's masks at ``size`` (width, height), in the order of ``wanted`` ids."""
    width, height = size
    found = processor.post_process_masks([output.pred_masks.float()], original_sizes=[[height, width]])[0]
    found = found[:, 0].cpu().numpy().astype(bool)
    scores = torch.sigmoid(output.object_score_logits.float().reshape(-1)).tolist()
    where = {int(i): k for k, i in enumerate(output.object_ids)}
    return PictureMasks(
        np.stack([found[where[i]] for i in wanted]) if wanted else np.zeros((0, height, width), bool),
        tuple(int(i) for i in wanted),
        tuple(float(scores[where[i]]) for i in wanted),
    )


def _session(model: Sam2VideoModel, processor: Sam2VideoProcessor, frames: Any):
    """A SAM 2 session on ``frames``: they are kept on the CPU (a 1024 px frame is 12 MiB in float32),
    one at a time on the model's device."""
    return processor.init_video_session(
        video=frames, inference_device=model.device, video_storage_device="cpu", dtype=model.dtype
    )


def _prompt(processor: Sam2VideoProcessor, session: Any, frame_index: int, clicks: Sequence[Click]) -> None:
    """One positive click per object on frame ``frame_index``; the processor scales them to SAM 2's input."""
    processor.add_inputs_to_inference_session(
        inference_session=session,
        frame_idx=frame_index,
        obj_ids=[pid for pid, _, _ in clicks],
        input_points=[[[[x, y]] for _, x, y in clicks]],
        input_labels=[[[1] for _ in clicks]],
    )


def on_picture(
    model: Sam2VideoModel, processor: Sam2VideoProcessor, rgb: np.ndarray, clicks: Sequence[Click]
) -> PictureMasks:
    """One mask per click on one (H, W, 3) uint8 picture: a video of one frame."""
    session = _session(model, processor, [rgb])
    _prompt(processor, session, 0, clicks)
    output = model(inference_session=session, frame_idx=0)
    return _masks_of(processor, output, (rgb.shape[1], rgb.shape[0]), [pid for pid, _, _ in clicks])


def on_video(
    model: Sam2VideoModel,
    processor: Sam2VideoProcessor,
    frames: np.ndarray,
    prompts: dict[int, list[Click]],
    ids: Sequence[int],
    progress: bool,
) -> list[PictureMasks]:
    """The masks of ``ids`` on every frame from the first prompted one: each prompt is run at once, in
    frame order (as SAM 2 expects), then SAM 2 follows every id forward over the frames."""
    session = _session(model, processor, frames)
    for index, clicks in sorted(prompts.items()):
        _prompt(processor, session, index, clicks)
        model(inference_session=session, frame_idx=index)
    size = (frames.shape[2], frames.shape[1])
    outputs = model.propagate_in_video_iterator(
        session, start_frame_idx=min(prompts), show_progress_bar=progress
    )
    return [_masks_of(processor, output, size, ids) for output in outputs]


SAM2 = Backend(
    name="SAM 2",
    claims=lambda name: True,  # every Hub id, folder and 'tiny' names a SAM 2
    load=load,
    runs=lambda model: isinstance(model, Sam2VideoModel),
    on_picture=on_picture,
    on_video=on_video,
)
