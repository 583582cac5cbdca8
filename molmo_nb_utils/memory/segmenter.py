"""What SAM 2, the segmenter of ``molmo_nb_utils.masks``, costs in GPU memory: estimates, not measurements.

Why here: the planner answers "does it fit?" for everything a lesson loads; lesson 10 adds SAM 2 beside
Molmo2. Parameters are counted on the real modules built on the meta device (nothing downloaded), from
the architecture of each released SAM 2.1 size; activations from the tensor sizes at 1024 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Sam2VideoConfig, Sam2VideoModel

from molmo_nb_utils.memory.configs import GIB
from molmo_nb_utils.memory.inference import OVERHEAD_GB


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
# Keyed by the released names (the Hub ids' last part less "sam2.1-"), never "tiny" alone: in this collection
# that is the tiny random SAM 2 built offline for the tests.
SAM2_SIZES: dict[str, SamSize] = {
    "hiera-tiny": SamSize("facebook/sam2.1-hiera-tiny", 96, 1, (1, 2, 7, 2), (5, 7, 9), (7, 7)),
    "hiera-small": SamSize("facebook/sam2.1-hiera-small", 96, 1, (1, 2, 11, 2), (7, 10, 13), (7, 7)),
    "hiera-base-plus": SamSize(
        "facebook/sam2.1-hiera-base-plus", 112, 2, (2, 3, 16, 3), (12, 16, 20), (14, 14)
    ),
    "hiera-large": SamSize(
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
            f"SAM 2.1 {self.size:<15} {self.parameters / 1e6:6.1f}M parameters, {self.precision}: weights "
            f"{self.weights_gb:.2f} + encoder {self.encoder_gb:.2f} + memory bank {self.memory_bank_gb:.2f} "
            f"+ overhead {self.overhead_gb:.2f} = {self.total_gb:.2f} GiB (estimate)"
        )


def _sam_parameters(size: SamSize) -> int:
    with torch.device("meta"):  # shapes only: nothing is allocated or downloaded
        model = Sam2VideoModel(size.config())
    return sum(p.numel() for p in model.parameters())


def _size_name(size: str) -> str:
    """The ``SAM2_SIZES`` key of ``size``: a key, a Hub id ("facebook/sam2.1-hiera-small"), or the short
    name earlier versions took ("small")."""
    name = str(size).strip()
    for key, spec in SAM2_SIZES.items():
        if name in (key, spec.hub_id, spec.hub_id.split("/")[-1], key.removeprefix("hiera-")):
            return key
    raise ValueError(
        f"unknown SAM 2.1 size {size!r}: use one of {', '.join(SAM2_SIZES)} (or a Hub id such as "
        f"{SAM2_SIZES['hiera-small'].hub_id})"
    )


def segmenter_memory(
    size: str = "hiera-small",
    *,
    precision: str = "fp32",
    frames: int = 1,
    objects: int = 1,
    overhead: bool = True,
) -> SegmenterMemory:
    """Estimated peak GPU memory of SAM 2.1 ``size`` (``SAM2_SIZES``' released names, or a Hub id)
    segmenting ``objects`` over ``frames`` frames.

    Weights: parameters counted on the real modules (meta device) times 4 or 2 bytes. Encoder: the
    largest live tensors of one 1024 px frame: the first Hiera stage (256 x 256 tokens) holds its input,
    residual and a 4x-wide MLP activation, plus the three 256-channel feature maps SAM 2 keeps. Memory
    bank: per object and frame, a 64 x 64 x 64 memory, its position encoding and the 256 x 256 mask
    logits (the session keeps every frame's; frames themselves stay on the CPU, see ``masks.sam2``).
    ``overhead`` adds the CUDA context as ``memory`` counts it (set False when Molmo2 already pays it).
    """
    size = _size_name(size)
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}")
    spec = SAM2_SIZES[size]
    params = _sam_parameters(spec)
    width = 4 if precision == "fp32" else 2  # bytes per value
    tokens = (SAM_INPUT // 4) ** 2  # stride-4 patches of the first stage
    encoder = tokens * spec.embed_dim * (2 + 4) * width  # input + residual + the MLP's hidden layer
    encoder += 256 * (tokens + tokens // 4 + tokens // 16) * width  # FPN features at strides 4, 8 and 16
    encoder += 3 * SAM_INPUT**2 * width  # the frame itself
    per_object_frame = (2 * SAM_MEMORY_CHANNELS * (SAM_INPUT // 16) ** 2 + (SAM_INPUT // 4) ** 2) * width
    bank = per_object_frame * frames * objects
    extra = OVERHEAD_GB if overhead else 0.0
    return SegmenterMemory(
        size=size,
        parameters=params,
        precision=precision,
        weights_gb=params * width / GIB,
        encoder_gb=encoder / GIB,
        memory_bank_gb=bank / GIB,
        overhead_gb=extra,
        total_gb=(params * width + encoder + bank) / GIB + extra,
    )
