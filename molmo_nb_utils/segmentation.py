"""From Molmo2's points to masks and boxes: SAM 2 prompted with the points of an answer.

Why: Molmo2 answers with points; most pipelines want a mask or a box next. SAM 2 turns one positive
click into a mask, and on a video follows that mask over the frames. ``segment`` takes an ``Answer``,
which knows the pictures and frames Molmo2 saw, so every point reaches SAM 2 on the very picture
(and frame) it was given on, and the masks come back at the size that picture is shown, upright::

    sam, sam_processor = load_segmenter()              # $MOLMO_SEGMENTER_ID, or SAM 2.1 small
    masks = segment(sam, sam_processor, answer)        # one PictureMasks per image or frame shown
    masks[0].boxes()                                   # (N, 4) x0, y0, x1, y1 around each mask

One model does both jobs: the released SAM 2.1 checkpoints are ``Sam2VideoModel``s with a
``Sam2VideoProcessor``, and an image is a video of one frame (the same image encoder, prompt encoder
and mask decoder run on it; the memory of earlier frames is simply empty).

The model comes from one place, ``$MOLMO_SEGMENTER_ID``; ``tiny`` is a tiny random SAM 2 built offline
(``molmo_nb_utils.tiny``), and when Molmo2 itself is the tiny test model the segmenter is tiny too,
so the lessons run offline top to bottom. Its masks are noise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor

from molmo_nb_utils.asking import Answer
from molmo_nb_utils.drawing.masks import mask_box
from molmo_nb_utils.drawing.style import to_pil
from molmo_nb_utils.grounding import Point, nearest_index
from molmo_nb_utils.loading import detect_hardware, model_id
from molmo_nb_utils.media import VideoFrames
from molmo_nb_utils.memory import GIB, OVERHEAD_GB
from molmo_nb_utils.tiny import TINY_NAME, TinyModelError, build_tiny_sam2, is_tiny_molmo2, tiny_segmenter_dir

SEGMENTER_ENV = "MOLMO_SEGMENTER_ID"
# SAM 2.1 small: 46.1M parameters against tiny's 39.0M (184 MB against 156 MB in float32), a negligible
# difference beside Molmo2-4B's 4.85 billion, for the better masks of a deeper image encoder (11 blocks
# in its third Hiera stage against 7). base-plus and large cost 2 and 5 times more for a few points more.
DEFAULT_SEGMENTER_ID = "facebook/sam2.1-hiera-small"


class SegmenterLoadError(OSError):
    """SAM 2 could not be loaded; the message says what to do (an OSError, as transformers' own)."""


def segmenter_id() -> str:
    """The segmenter the notebooks use: ``$MOLMO_SEGMENTER_ID``; else ``tiny`` when Molmo2 is the tiny
    test model (so an offline run stays offline); else ``facebook/sam2.1-hiera-small``."""
    chosen = os.environ.get(SEGMENTER_ENV, "").strip()
    if chosen:
        return chosen
    molmo = model_id()
    if molmo == TINY_NAME or (Path(molmo).is_dir() and is_tiny_molmo2(molmo)):
        return TINY_NAME
    return DEFAULT_SEGMENTER_ID


_segmenter_id = segmenter_id  # load_segmenter's argument has the same name


def _source(name: str) -> str:
    """What to pass to from_pretrained for ``name``: the tiny SAM 2 (built on first use), a folder, a Hub id."""
    if name == TINY_NAME and not Path(name).is_dir():
        folder = tiny_segmenter_dir()
        if not (folder / "config.json").is_file():
            print(f"Building the tiny random SAM 2 in {folder} (once, offline; its masks are noise).")
        try:
            return str(build_tiny_sam2(folder))
        except (TinyModelError, OSError) as err:
            raise SegmenterLoadError(
                f"'tiny' means the tiny random SAM 2 in {folder}, which could not be built there: {err} Build it "
                f"elsewhere with python -m molmo_nb_utils.tiny FOLDER --segmenter and set {SEGMENTER_ENV}=FOLDER."
            ) from None
    return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name


def load_segmenter(
    segmenter_id: str | os.PathLike | None = None, *, device: str | None = None, dtype: str | None = None
) -> tuple[Sam2VideoModel, Sam2VideoProcessor]:
    """``(model, processor)`` of SAM 2 for a Hub id, a folder or ``"tiny"`` (default: ``segmenter_id()``).

    bfloat16 on GPUs that have it; float32 elsewhere, the T4 included: SAM 2 was not trained for float16,
    and in float32 even SAM 2.1 large is 0.84 GiB of weights.
    """
    name = str(segmenter_id) if segmenter_id is not None else _segmenter_id()
    hw = detect_hardware()
    dtype = dtype or ("bfloat16" if hw.bf16 else "float32")
    if dtype not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"dtype must be 'bfloat16', 'float16' or 'float32', got {dtype!r}")
    source = _source(name)
    local = Path(source).is_dir()
    try:
        processor = Sam2VideoProcessor.from_pretrained(source, local_files_only=local)
        model = Sam2VideoModel.from_pretrained(source, dtype=getattr(torch, dtype), local_files_only=local)
    except (OSError, ValueError, KeyError) as err:
        raise SegmenterLoadError(
            f"Could not load the segmenter {name!r}: {str(err).splitlines()[0]} Check {SEGMENTER_ENV} (a Hub id "
            f"such as {DEFAULT_SEGMENTER_ID}, a folder with config.json, or 'tiny': a tiny random SAM 2 built "
            "offline, whose masks are noise); SAM 2 needs transformers>=5.0."
        ) from None
    return model.to(device or hw.device).eval(), processor


# ---------------------------------------------------------------------------------------------
# Masks


@dataclass(frozen=True, eq=False)
class PictureMasks:
    """The masks on one picture (an image, or one frame shown): ``masks[k]`` is the mask of ``ids[k]``.

    ``masks`` is (N, H, W) bool at the size the picture is shown (upright); ``scores[k]`` is SAM 2's
    confidence that object ``ids[k]`` is there at all (the sigmoid of its object score).
    """

    masks: np.ndarray
    ids: tuple[int, ...]
    scores: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or self.masks.dtype != bool:
            raise ValueError(
                f"masks must be an (N, H, W) bool array, got {self.masks.dtype} {self.masks.shape}"
            )
        if not len(self.masks) == len(self.ids) == len(self.scores):
            raise ValueError(
                f"got {len(self.masks)} masks, {len(self.ids)} ids and {len(self.scores)} scores: give one of each"
            )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture."""
        return self.masks.shape[2], self.masks.shape[1]

    def boxes(self) -> np.ndarray:
        """(N, 4) float boxes x0, y0, x1, y1 (x1, y1 exclusive) around each mask; zeros for an empty mask."""
        return np.array([mask_box(m) for m in self.masks], dtype=np.float64).reshape(-1, 4)

    def mask(self, id: int) -> np.ndarray:
        """The mask of object ``id`` (all False where the picture has no such object)."""
        if id in self.ids:
            return self.masks[self.ids.index(id)]
        return np.zeros(self.masks.shape[1:], bool)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        n = len(self.ids)
        return f"PictureMasks({n} mask{'' if n == 1 else 's'} of {self.size[0]}x{self.size[1]}, ids {list(self.ids)})"


def empty_masks(width: int, height: int) -> PictureMasks:
    """No masks on a ``width`` x ``height`` picture."""
    return PictureMasks(np.zeros((0, height, width), bool), (), ())


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The masks of one answer: one ``PictureMasks`` per image, or per frame shown of the video.

    ``answer`` is the answer segmented, so the pictures are never re-derived: ``pictures()`` gives the
    images or frames the masks are on, in order; ``prompts`` the (picture index, id, x, y) clicks SAM 2
    was given, in the pixels of those pictures.
    """

    masks: tuple[PictureMasks, ...]
    answer: Answer
    prompts: tuple[tuple[int, int, float, float], ...]

    @property
    def video(self) -> VideoFrames | None:
        return self.answer.video

    @property
    def ids(self) -> list[int]:
        """Every object id, in increasing order."""
        return sorted({i for m in self.masks for i in m.ids})

    def pictures(self) -> list[Any]:
        """The images (PIL) or frames shown (RGB arrays) the masks belong to, in order."""
        return list(self.video.frames) if self.video is not None else list(self.answer.images)

    def boxes(self) -> list[np.ndarray]:
        """Each picture's (N, 4) boxes, as ``PictureMasks.boxes``."""
        return [m.boxes() for m in self.masks]

    def track(self, id: int) -> np.ndarray:
        """(frames, H, W) bool: object ``id``'s mask on every picture (all False where it has none)."""
        return np.stack([m.mask(id) for m in self.masks])

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> PictureMasks:
        return self.masks[index]

    def __iter__(self) -> Iterator[PictureMasks]:
        return iter(self.masks)

    def __repr__(self) -> str:
        n, s = len(self.masks), "" if len(self.masks) == 1 else "s"
        kind = f"{n} frame{s} shown" if self.video is not None else f"{n} image{s}"
        return f"Segmentation({kind}, ids {self.ids})"


def _first_points(points: Sequence[Point]) -> dict[int, Point]:
    """One point per id, the first given: SAM 2 gets one positive click per object."""
    first: dict[int, Point] = {}
    for p in points:
        first.setdefault(p.id, p)
    return first


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
        video=frames,
        inference_device=model.device,
        video_storage_device="cpu",
        dtype=model.dtype,
    )


def _prompt(processor, session, frame_index: int, clicks: list[tuple[int, float, float]]) -> None:
    """One positive click per object on frame ``frame_index``; the processor scales them to SAM 2's input."""
    processor.add_inputs_to_inference_session(
        inference_session=session,
        frame_idx=frame_index,
        obj_ids=[pid for pid, _, _ in clicks],
        input_points=[[[[x, y]] for _, x, y in clicks]],
        input_labels=[[[1] for _ in clicks]],
    )


def _segment_images(model, processor, answer: Answer, points: list[Point]) -> Segmentation:
    pictures, prompts = [], []
    for k, shown in enumerate(answer.images, start=1):
        image = to_pil(shown)  # RGB, whatever the answer was given (an RGBA or grey picture, an array)
        clicks = [(p.id, p.x, p.y) for p in _first_points([p for p in points if p.image == k]).values()]
        if not clicks:
            pictures.append(empty_masks(*image.size))
            continue
        session = _session(model, processor, [np.asarray(image)])
        _prompt(processor, session, 0, clicks)
        output = model(inference_session=session, frame_idx=0)
        pictures.append(_masks_of(processor, output, image.size, [pid for pid, _, _ in clicks]))
        prompts.extend((k - 1, pid, x, y) for pid, x, y in clicks)
    return Segmentation(tuple(pictures), answer, tuple(prompts))


def prompt_frames(
    points: Sequence[Point], times: Sequence[float], *, reprompt: bool = True
) -> dict[int, list[Point]]:
    """Which points SAM 2 is prompted with, by frame index (into ``times``): each id where it first
    appears, and (``reprompt``) again on the first frame it is back after frames without it (an
    occlusion), so SAM 2 picks it up where Molmo2 found it again."""
    seen: dict[int, dict[int, Point]] = {}
    for p in points:
        seen.setdefault(p.id, {}).setdefault(nearest_index(p.time, times), p)
    chosen: dict[int, list[Point]] = {}
    for at in seen.values():
        frames = sorted(at)
        starts = [f for n, f in enumerate(frames) if n == 0 or (reprompt and frames[n - 1] != f - 1)]
        for f in starts:
            chosen.setdefault(f, []).append(at[f])
    return dict(sorted(chosen.items()))


def _segment_video(model, processor, answer: Answer, points: list[Point], reprompt: bool, progress: bool):
    video = answer.video
    width, height = video.size
    n = len(video.timestamps)
    chosen = prompt_frames(points, video.timestamps, reprompt=reprompt)
    if not chosen:
        return Segmentation(tuple(empty_masks(width, height) for _ in range(n)), answer, ())
    session = _session(model, processor, video.frames)
    for f, on_frame in chosen.items():  # in frame order: each prompt is run at once, as SAM 2 expects
        _prompt(processor, session, f, [(p.id, p.x, p.y) for p in on_frame])
        model(inference_session=session, frame_idx=f)
    ids = sorted({p.id for on_frame in chosen.values() for p in on_frame})
    start = min(chosen)
    pictures = [empty_masks(width, height)] * start  # before Molmo2 saw anything
    for output in model.propagate_in_video_iterator(
        session, start_frame_idx=start, show_progress_bar=progress
    ):
        pictures.append(_masks_of(processor, output, (width, height), ids))
    prompts = tuple((f, p.id, p.x, p.y) for f, on_frame in chosen.items() for p in on_frame)
    return Segmentation(tuple(pictures), answer, prompts)


def segment(
    model: Sam2VideoModel,
    processor: Sam2VideoProcessor,
    answer: Answer,
    *,
    reprompt: bool = True,
    progress: bool = False,
) -> Segmentation:
    """Masks for the points of ``answer``: one mask per point id, on the picture it was given on.

    Images: each id's first point is a positive click on its image; the masks are at the image's size.
    Video: the answer's ``<tracks>`` (or, without them, its video ``<points>``) prompt SAM 2 on the frame
    each id first appears on, and again where it comes back after an occlusion (``prompt_frames``);
    SAM 2 follows every id over all the frames shown, so every frame has a mask for every id (empty
    before the first prompt, and where SAM 2 finds the object gone). Masks are at the size of the
    frames shown, upright for phone videos.
    """
    if not isinstance(answer, Answer):
        raise TypeError(
            f"segment takes the Answer of chat(...) (it knows the pictures Molmo2 saw), got {type(answer).__name__}"
        )
    if answer.video is not None:
        points = answer.tracks() or answer.points()
        return _segment_video(model, processor, answer, points, reprompt, progress)
    if not answer.images:
        raise ValueError("This answer was about text only: there is no image or video to segment.")
    return _segment_images(model, processor, answer, answer.points())


# ---------------------------------------------------------------------------------------------
# What SAM 2 costs: estimates, not measurements


@dataclass(frozen=True)
class SamSize:
    """One released SAM 2.1 size: its Hub id and the Hiera image encoder that sets its size."""

    hub_id: str
    embed_dim: int  # width of the first Hiera stage (doubling at each of the 4 stages)
    heads: int  # attention heads of the first stage (doubling too)
    blocks: tuple[int, int, int, int]
    global_blocks: tuple[int, ...]
    window_background: tuple[int, int]
    windows: tuple[int, int, int, int] = (8, 4, 14, 7)

    def config(self) -> Sam2VideoConfig:
        """The checkpoint's architecture (from the SAM 2.1 configs), to count its parameters offline."""
        dims = [self.embed_dim * 2**i for i in range(4)]
        backbone = dict(
            model_type="sam2_hiera_det_model",
            hidden_size=self.embed_dim,
            num_attention_heads=self.heads,
            blocks_per_stage=list(self.blocks),
            embed_dim_per_stage=dims,
            num_attention_heads_per_stage=[self.heads * 2**i for i in range(4)],
            global_attention_blocks=list(self.global_blocks),
            window_positional_embedding_background_size=list(self.window_background),
            window_size_per_stage=list(self.windows),
        )
        vision = dict(
            model_type="sam2_vision_model", backbone_config=backbone, backbone_channel_list=dims[::-1]
        )
        return Sam2VideoConfig(vision_config=vision)


# From the sam2.1_hiera_{t,s,b+,l}.yaml configs of facebookresearch/sam2; built on the meta device they give
# 38,962,498 / 46,060,354 / 80,850,178 / 224,446,642 parameters, the 38.9M / 46M / 80.8M / 224.4M its README lists.
SAM2_SIZES: dict[str, SamSize] = {
    "tiny": SamSize("facebook/sam2.1-hiera-tiny", 96, 1, (1, 2, 7, 2), (5, 7, 9), (7, 7)),
    "small": SamSize("facebook/sam2.1-hiera-small", 96, 1, (1, 2, 11, 2), (7, 10, 13), (7, 7)),
    "base-plus": SamSize("facebook/sam2.1-hiera-base-plus", 112, 2, (2, 3, 16, 3), (12, 16, 20), (14, 14)),
    "large": SamSize(
        "facebook/sam2.1-hiera-large", 144, 2, (2, 6, 36, 4), (23, 33, 43), (7, 7), (8, 4, 16, 8)
    ),
}
SAM_INPUT = 1024  # SAM 2 sees every picture resized to 1024 x 1024
SAM_MEMORY_CHANNELS = 64  # each remembered frame: a 64 x 64 map of 64 channels per object


@dataclass(frozen=True)
class SegmenterMemory:
    """GPU memory of one ``segment`` call, in GiB: an estimate from the architecture, not measured."""

    size: str
    parameters: int
    precision: str
    weights_gb: float
    encoder_gb: float  # the image encoder's working set on one 1024 px frame
    memory_bank_gb: float  # what a video session keeps per object and frame, for all frames shown
    overhead_gb: float
    total_gb: float

    def __str__(self) -> str:
        return (
            f"SAM 2.1 {self.size:<9} {self.parameters / 1e6:6.1f}M parameters, {self.precision}: weights "
            f"{self.weights_gb:.2f} + encoder {self.encoder_gb:.2f} + memory bank {self.memory_bank_gb:.2f} "
            f"+ overhead {self.overhead_gb:.2f} = {self.total_gb:.2f} GiB (estimate)"
        )


def _parameters(size: SamSize) -> int:
    with torch.device("meta"):  # shapes only: nothing is allocated or downloaded
        model = Sam2VideoModel(size.config())
    return sum(p.numel() for p in model.parameters())


def segmenter_memory(
    size: str = "small", *, precision: str = "fp32", frames: int = 1, objects: int = 1, overhead: bool = True
) -> SegmenterMemory:
    """Estimated peak GPU memory of SAM 2.1 ``size`` segmenting ``objects`` over ``frames`` frames.

    Weights: parameters counted on the real modules (meta device) times 4 or 2 bytes. Encoder: the
    largest live tensors of one 1024 px frame: the first Hiera stage (256 x 256 tokens) holds its input,
    residual and a 4x-wide MLP activation, plus the three 256-channel feature maps SAM 2 keeps. Memory
    bank: per object and frame, a 64 x 64 x 64 memory, its position encoding and the 256 x 256 mask
    logits (the session keeps every frame's; frames themselves stay on the CPU, see ``segment``).
    ``overhead`` adds the CUDA context as ``memory`` counts it (set False when Molmo2 already pays it).
    """
    if size not in SAM2_SIZES:
        raise ValueError(f"unknown SAM 2.1 size {size!r}: use one of {', '.join(SAM2_SIZES)}")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}")
    spec = SAM2_SIZES[size]
    params = _parameters(spec)
    a = 4 if precision == "fp32" else 2
    tokens = (SAM_INPUT // 4) ** 2  # stride-4 patches of the first stage
    encoder = tokens * spec.embed_dim * (2 + 4) * a  # input + residual + the MLP's hidden layer
    encoder += 256 * (tokens + tokens // 4 + tokens // 16) * a  # FPN features at strides 4, 8 and 16
    encoder += 3 * SAM_INPUT**2 * a  # the frame itself
    per_object_frame = (2 * SAM_MEMORY_CHANNELS * (SAM_INPUT // 16) ** 2 + (SAM_INPUT // 4) ** 2) * a
    bank = per_object_frame * frames * objects
    extra = OVERHEAD_GB if overhead else 0.0
    return SegmenterMemory(
        size=size,
        parameters=params,
        precision=precision,
        weights_gb=params * a / GIB,
        encoder_gb=encoder / GIB,
        memory_bank_gb=bank / GIB,
        overhead_gb=extra,
        total_gb=(params * a + encoder + bank) / GIB + extra,
    )
