"""A tiny random SAM 2 (transformers' ``Sam2VideoModel``), for the segmentation lesson and its tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Sam2ImageProcessor,
    Sam2VideoConfig,
    Sam2VideoModel,
    Sam2VideoProcessor,
    Sam2VideoVideoProcessor,
)

from molmo_nb_utils.tiny.folders import reusable, save_built

__all__ = ["SAM_MARKER", "SAM_WEIGHTS_VERSION", "TINY_SAM_IMAGE_SIZE", "build_tiny_sam2"]

SAM_MARKER = "tiny_sam2.json"
SAM_WEIGHTS_VERSION = 1
# Pictures are resized to this square, as the released SAM 2 resizes them to 1024x1024 (a 64x64 grid of
# 16 px patches there, 8x8 here).
TINY_SAM_IMAGE_SIZE = 128


def _sam_config() -> Sam2VideoConfig:
    """SAM 2's architecture at toy sizes: a four-stage Hiera of 5 blocks, 8..64 wide, at 128 px.

    Some sizes are not free: the memory encoder's output (64 channels) is hard-wired into the memory
    attention, and the decoder must be wider than it (128 here, 256 in the release) so object pointers
    are split into memory-sized tokens, as the released models do. A stage's first block pools with the
    previous stage's window, so no global-attention block may start a stage.
    """
    size = TINY_SAM_IMAGE_SIZE
    hidden = 128
    return Sam2VideoConfig(
        vision_config=dict(
            model_type="sam2_vision_model",
            backbone_config=dict(
                model_type="sam2_hiera_det_model",
                hidden_size=8,
                num_attention_heads=1,
                image_size=[size, size],
                blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[8, 16, 32, 64],
                num_attention_heads_per_stage=[1, 1, 2, 2],
                window_size_per_stage=[4, 4, 4, 2],
                global_attention_blocks=[3],
                window_positional_embedding_background_size=[2, 2],
            ),
            backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
            fpn_hidden_size=hidden,
        ),
        prompt_encoder_config=dict(hidden_size=hidden, image_size=size, patch_size=16),
        mask_decoder_config=dict(
            hidden_size=hidden, mlp_dim=128, num_attention_heads=2, iou_head_hidden_dim=64
        ),
        image_size=size,
        num_maskmem=3,
        max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=128,
        memory_attention_rope_feat_sizes=[size // 16, size // 16],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=128,
    )


def _sam_processor() -> Sam2VideoProcessor:
    """The released processor's settings at the tiny size: pictures and prompt points scaled to 128 px."""
    size = {"height": TINY_SAM_IMAGE_SIZE, "width": TINY_SAM_IMAGE_SIZE}
    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size),
        video_processor=Sam2VideoVideoProcessor(size=size),
        target_size=TINY_SAM_IMAGE_SIZE,
        point_pad_value=-10,
    )


def build_tiny_sam2(path: str | Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Build and save a tiny random SAM 2 (``Sam2VideoModel`` and ``Sam2VideoProcessor``) to ``path``.

    Why: the segmentation lesson and its tests run offline through the same ``from_pretrained`` calls as
    ``facebook/sam2.1-hiera-tiny``, in well under a second per video; its masks are noise. The rules of
    ``build_tiny_molmo2`` hold: reused when current, nothing it did not write is deleted, moved in last.
    """
    path = Path(path).expanduser().absolute()
    if reusable(path, seed, overwrite, SAM_MARKER, SAM_WEIGHTS_VERSION, "downloaded_data/tiny-sam2"):
        return path
    torch.manual_seed(seed)
    model = Sam2VideoModel(_sam_config()).eval()
    processor = _sam_processor()

    return save_built(path, model, processor, SAM_MARKER, SAM_WEIGHTS_VERSION, seed)
